"""The zoo: model specs (``models/``) and inference recipes (``inference/``) that ship with ppgen.

In a checkout they are the ``models/`` and ``inference/`` folders beside the package; an installed ppgen carries
the same files as package data under ``ppgen/zoo/``. A spec or recipe may be named instead of given as a path:
``ppgen fit vae`` is ``ppgen fit <zoo>/models/vae.yaml`` and ``--inference pcd`` is ``<zoo>/inference/pcd.yaml``.
A path that exists always wins over a name, and ``ppgen init NAME`` copies a zoo file into the working folder
to be edited.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

Kind = Literal["models", "inference"]
KINDS: tuple[Kind, ...] = ("models", "inference")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]*")


def folder(kind: Kind) -> Path | None:
    """Where the zoo's ``kind`` files are: beside the package in a checkout, else inside the installed package."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    here = Path(__file__).resolve().parent
    for candidate in (here.parent.parent / kind, here / kind):
        if candidate.is_dir() and any(candidate.glob("*.yaml")):
            return candidate
    return None


def names(kind: Kind) -> list[str]:
    """The zoo's spec (``models``) or recipe (``inference``) names, sorted."""
    where = folder(kind)
    return sorted(p.stem for p in where.glob("*.yaml")) if where else []


def path(kind: Kind, name: str) -> Path | None:
    """The zoo file called ``name`` (with or without ``.yaml``), or None when the zoo has none."""
    stem = name[:-5] if name.endswith(".yaml") else name
    if not _NAME.fullmatch(stem):
        return None
    where = folder(kind)
    found = where / f"{stem}.yaml" if where else None
    return found if found is not None and found.is_file() else None


def resolve(source: object, kind: Kind) -> object:
    """``source`` unchanged unless it is a bare name (no folder part) of a zoo file and no such file (other
    than a folder) exists here: then the zoo file's path. Everything else (paths, dicts, specs) passes through untouched, so a
    missing file is still reported as missing by the reader."""
    if not isinstance(source, (str, Path)):
        return source
    text = str(source)
    here = Path(text)
    if not text or "/" in text or "\\" in text or (here.exists() and not here.is_dir()):
        return source  # a folder is never a spec: a run folder called "vae" does not hide the zoo's vae
    found = path(kind, text)
    return found if found is not None else source


#: Words whose final period does not end a sentence (compared in lower case): references to sections,
#: figures, equations, pages and chapters, Latin abbreviations, "et al.".
_ABBREVIATIONS = frozenset((
    "al.", "e.g.", "i.e.", "cf.", "vs.", "etc.", "approx.", "resp.", "no.", "nos.", "sec.", "secs.", "sect.",
    "fig.", "figs.", "eq.", "eqs.", "eqn.", "pp.", "ch.", "chap.", "app.", "alg.", "thm.", "def.", "prop.",
    "ref.", "refs.", "vol.",
))


def sentence_end(text: str) -> int | None:
    """The index just past the first full stop of ``text`` that ends a sentence, or None. A period does not
    end one after an abbreviation (:data:`_ABBREVIATIONS`, "sec. 3", "Fig. 2", "Smith et al. 2017") or an
    initial ("D. P. Kingma")."""
    for match in re.finditer(r"[.!?](?=\s|$)", text):
        word = text[: match.end()].rsplit(None, 1)[-1].lstrip("([{\"'`")
        if match.group() == "." and (word.lower() in _ABBREVIATIONS or re.fullmatch(r"[A-Z]\.", word)):
            continue
        return match.end()
    return None


def describe(file: Path) -> str:
    """A zoo file's description: its leading comment up to the end of the first sentence, on one line."""
    words: list[str] = []
    for line in file.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        text = line[1:].strip()
        if not text:
            if words:
                break
            continue
        words.append(text)
        if sentence_end(" ".join(words)) is not None:
            break
    joined = " ".join(words)
    end = sentence_end(joined)
    return joined[:end] if end is not None else joined
