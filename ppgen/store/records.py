"""The small files of a run folder: the copies of its spec and recipe (written whole, and checked against
what the checkpoint records), ``metrics.jsonl`` and ``history.jsonl`` (a JSON record a line),
``evaluation.json`` and ``env.json``, and the differences between two specs or recipes, named key by key."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from ppgen.store.atomic import atomic_write_text
from ppgen.spec import SpecError

HISTORY = "history.jsonl"


def write_yaml(obj: Any, path: Path) -> None:
    """A spec or recipe (or a plain mapping) as YAML, written whole."""
    import yaml
    from pydantic import BaseModel

    data = obj.model_dump(mode="json") if isinstance(obj, BaseModel) else obj
    atomic_write_text(yaml.safe_dump(data, sort_keys=False), path)


def append_jsonl(record: dict[str, Any], path: Path) -> None:
    """Add one record to a small JSON-lines file (``history.jsonl``), rewriting it whole."""
    old = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
    if old and not old.endswith(b"\n"):
        old += b"\n"
    atomic_write_text(old.decode("utf-8", errors="replace") + json.dumps(record) + "\n", path)


def open_append(path: Path) -> Any:
    """``metrics.jsonl`` opened for appending; a link there is refused rather than written through."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise SpecError(f"{path}: cannot be opened for appending ({exc.strerror}); a run folder's files "
                        "must be plain files, not links") from None
    return os.fdopen(fd, "a", encoding="utf-8")


def environment(seed: int, data_checksum: str, devices: int, accelerator: str) -> dict[str, Any]:
    from importlib.metadata import version

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyro": version("pyro-ppl"),
        "arviz": version("arviz"),
        "platform": platform.platform(),
        "seed": seed,
        "git_commit": commit,
        "data_checksum": data_checksum,
        "devices": devices,
        "accelerator": accelerator,
    }


def flat_diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """The dotted keys where two nested mappings differ, with the value in each."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += flat_diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append((f"{prefix}{k}", va, vb))
    return out


def describe_diff(diff: list[tuple[str, Any, Any]], then: str = "then", now: str = "now") -> str:
    return "; ".join(f"{k} ({cap(repr(a), 120)} {then}, {cap(repr(b), 120)} {now})" for k, a, b in diff)


def load_copy(path: Path, loader: Any, checkpoint: Path) -> Any:
    """A run folder's ``spec.yaml`` or ``inference.yaml`` (``loader`` is ``load_spec`` or ``load_recipe``);
    one that cannot be read says that it is a copy of what the checkpoint records."""
    again = f"it is a copy of what {checkpoint} records: delete it and ppgen writes it again from the checkpoint"
    if path.is_file() and path.stat().st_size == 0:
        raise SpecError(f"{path}: empty (a write was cut short, or it was emptied); {again}")
    try:
        return loader(path)
    except SpecError as exc:
        raise SpecError(f"{exc}\n({again})") from None


def check_record(path: Path, loaded: Any, recorded: Any, checkpoint: Path) -> None:
    """A run folder's ``spec.yaml`` or ``inference.yaml`` must say what its checkpoint records."""
    then, now = recorded.model_dump(mode="json"), loaded.model_dump(mode="json")
    if "family" in then and then["family"] != now.get("family"):
        raise SpecError(f"{checkpoint}: a checkpoint of the {then['family']!r} family, but {path} is a "
                        f"{now.get('family')!r} spec; the checkpoint belongs to another run")
    diff = flat_diff(then, now)
    if diff:
        raise SpecError(f"{path} and {checkpoint} disagree on what this run is, in "
                        f"{describe_diff(diff, 'in the checkpoint', 'in the file')}: one of them was edited, damaged or "
                        "copied from another run. If the file is the wrong one, delete it and ppgen writes it again from "
                        "the checkpoint (on --resume, change a setting with --set inference.KEY=VALUE)")


# --------------------------------------------------------------------------- the run


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl``; a last line cut short (the process was killed mid-write) is
    skipped, a bad line elsewhere (not UTF-8, not JSON, not a record) is an error naming it."""
    if not path.exists():
        return []
    lines = [line for line in path.read_bytes().splitlines() if line.strip()]
    records = []
    for i, raw in enumerate(lines):
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            if i == len(lines) - 1:
                break
            raise SpecError(f"{path}: line {i + 1} is not a JSON record") from None
        problem = _record_problem(record)
        if problem:
            raise SpecError(f"{path}: line {i + 1} {problem}")
        records.append(record)
    return records


def _record_problem(record: Any) -> str | None:
    if not isinstance(record, dict):
        return f"is a JSON {type(record).__name__}, not a record ({{...}})"
    kind = record.get("kind")
    if kind is not None and not isinstance(kind, str):
        return f"has a kind that is not a name ({cap(repr(kind), 80)})"
    for key in ("epoch", "step"):
        if key in record and not whole_number(record[key]):
            return f"has {key} {cap(repr(record[key]), 80)}, not a whole number"
    if kind in ("epoch", "train") and "step" not in record:
        return f"is a {kind} record without a step"
    if kind == "epoch" and "epoch" not in record:
        return "is an epoch record without its epoch"
    for key in ("loss", "val_loss"):
        if key in record and record[key] is not None and (isinstance(record[key], bool)
                                                          or not isinstance(record[key], (int, float))):
            return f"has {key} {cap(repr(record[key]), 80)}, not a number"
    return None


def read_json_object(path: Path) -> dict[str, Any] | None:
    """A JSON file holding one object (``evaluation.json``, ``env.json``), or None when there is none."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpecError(f"{path}: not a readable JSON file ({type(exc).__name__}: {cap(str(exc), 200)}); "
                        "delete it and run the command that writes it again") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: holds a JSON {type(data).__name__}, not an object ({{...}}); delete it and "
                        "run the command that writes it again")
    return data


def cap(text: str, limit: int = 600) -> str:
    """``text`` cut to ``limit`` characters for a message, saying how much was left out."""
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more characters)"


def whole_number(v: Any, low: int = 0) -> bool:
    """An ``int`` (not a ``bool``) of at least ``low``."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= low
