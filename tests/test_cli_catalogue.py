"""``ppgen list``, ``ppgen init`` and ``ppgen data fetch`` as functions: what they print, the file init
writes, and the bad names they refuse with a SpecError naming the choices."""

from __future__ import annotations

import argparse

import pytest

from ppgen import registry, zoo
from ppgen.cli.catalogue import cmd_data_fetch, cmd_init, cmd_list
from ppgen.data import SOURCES
from ppgen.spec import SpecError


def test_list_prints_every_family_routine_zoo_entry_and_data_set(capsys):
    assert cmd_list(argparse.Namespace()) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    sections = ["families:", "routines:", "data sets:"]
    assert all(s in lines for s in sections)
    first = {line.split()[0] for line in lines if line.startswith(" ") and line.split()}
    assert set(registry.family_names()) <= first and set(registry.routine_names()) <= first
    assert set(zoo.names("models")) <= first and set(zoo.names("inference")) <= first
    assert set(SOURCES) <= first
    assert lines.index("families:") < lines.index("routines:") < lines.index("data sets:")
    assert lines[-1] == "ppgen init NAME copies a zoo spec or recipe here to edit."


def test_init_copies_a_zoo_spec_byte_for_byte(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cmd_init(argparse.Namespace(name="vae", output=None)) == 0
    assert (tmp_path / "vae.yaml").read_bytes() == zoo.path("models", "vae").read_bytes()
    assert "ppgen fit vae.yaml" in capsys.readouterr().out
    assert not list(tmp_path.glob(".*.tmp"))
    recipe = zoo.names("inference")[0]
    assert cmd_init(argparse.Namespace(name=recipe, output="sub/r.yml")) == 0
    assert (tmp_path / "sub/r.yml").read_bytes() == zoo.path("inference", recipe).read_bytes()
    assert "ppgen fit SPEC --inference sub/r.yml" in capsys.readouterr().out


def test_init_refuses_unknown_names_existing_files_and_other_suffixes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError, match=r"init 'nope': no zoo spec or recipe of that name; zoo specs: .*vae"):
        cmd_init(argparse.Namespace(name="nope", output=None))
    (tmp_path / "mine.yaml").write_text("keep")
    with pytest.raises(SpecError, match="init: mine.yaml already exists"):
        cmd_init(argparse.Namespace(name="vae", output="mine.yaml"))
    assert (tmp_path / "mine.yaml").read_text() == "keep"
    with pytest.raises(SpecError, match=r"-o vae\.txt: expected a file ending in \.yaml, \.yml"):
        cmd_init(argparse.Namespace(name="vae", output="vae.txt"))


def test_data_fetch_of_a_local_data_set_and_an_unknown_one(capsys):
    name = next(n for n in SOURCES if n != "mnist")
    assert cmd_data_fetch(argparse.Namespace(name=name)) == 0
    assert capsys.readouterr().out.startswith(f"{name}: nothing to fetch")
    with pytest.raises(SpecError, match=r"data fetch: unknown data set 'imagenet'; accepted: .*mnist"):
        cmd_data_fetch(argparse.Namespace(name="imagenet"))


def listed(out: str) -> dict[str, dict[str, str]]:
    """``ppgen list``'s output as {section: {name: description}}, each wrapped description on one line."""
    sections: dict[str, dict[str, str]] = {}
    section = name = ""
    for line in out.splitlines():
        if not line.startswith(" "):
            section = line.split(",")[0].rstrip(":")
            sections.setdefault(section, {})
        elif line.startswith(" " * 21):
            sections[section][name] += " " + line.strip()
        else:
            name, _, text = line.strip().partition(" ")
            sections[section][name] = text.strip()
    return sections


def test_list_gives_each_entry_of_a_section_its_own_description(capsys):
    """cd and pcd are two routines of one module: each is described by its own class, not the module. Every
    description, of every section, is one whole sentence: a capital letter first, a full stop last."""
    assert cmd_list(argparse.Namespace()) == 0
    sections = listed(capsys.readouterr().out)
    assert set(sections["families"]) == set(registry.family_names())
    assert set(sections["routines"]) == set(registry.routine_names())
    assert set(sections["zoo specs (ppgen fit NAME)"]) == set(zoo.names("models"))
    assert set(sections["inference recipes (--inference NAME)"]) == set(zoo.names("inference"))
    assert set(sections["data sets"]) == set(SOURCES)
    for section, rows in sections.items():
        seen: dict[str, str] = {}
        for name, text in rows.items():
            assert text, (section, name)
            assert text not in seen, f"{section}: {seen.get(text)} and {name} share the description {text!r}"
            seen[text] = name
            assert text[0].isupper() and text.endswith("."), f"{section}: {name}: not a whole sentence: {text!r}"
            if section == "routines":
                assert not text.startswith(f"The {name} routine"), f"routine {name}: {text!r} repeats its name"
    assert sections["routines"]["pcd"] == "Persistent CD: negative chains carry over between updates (Tieleman 2008)."
    assert sections["routines"]["cd"] == "CD-k: negative chains start at the data batch (Hinton 2002)."
    assert sections["routines"]["svi"].startswith("Stochastic variational inference")  # the module's, wanting a class's
    assert sections["routines"]["em"].startswith("Expectation-maximization to the posterior mode (MAP-EM)")
    assert not any("``" in text for rows in sections.values() for text in rows.values())


def test_a_routine_is_described_by_its_own_docstring_or_else_its_module():
    from ppgen.cli.catalogue import routine_description
    from ppgen.inference.base import Routine

    class Documented(Routine):
        """One sentence. Another."""

    class Bare(Routine):
        pass

    assert routine_description(Documented) == "One sentence."
    assert routine_description(Bare) == "ppgen list, ppgen init and ppgen data fetch as functions: what " \
        "they print, the file init writes, and the bad names they refuse with a SpecError naming the choices."
