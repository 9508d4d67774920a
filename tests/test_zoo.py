"""The zoo: specs and recipes found by name, shipped inside the package, copied out by ``ppgen init``,
described whole by ``ppgen list``."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import ppgen
from ppgen import zoo
from ppgen.cli import main
from ppgen.registry import load_recipe
from ppgen.spec import SpecError

ROOT = Path(__file__).resolve().parent.parent


def test_the_checkout_zoo_is_the_repository_folders() -> None:
    assert zoo.folder("models") == ROOT / "models"
    assert zoo.folder("inference") == ROOT / "inference"
    assert zoo.names("models") == sorted(p.stem for p in (ROOT / "models").glob("*.yaml"))
    assert "vae" in zoo.names("models") and "pcd" in zoo.names("inference")


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "models").glob("*.yaml")))
def test_every_zoo_spec_loads_by_name_as_from_its_file(name: str) -> None:
    by_name = ppgen.load_spec(name)
    assert by_name == ppgen.load_spec(ROOT / "models" / f"{name}.yaml")
    assert ppgen.load_spec(f"{name}.yaml") == by_name


def test_recipes_load_by_name_and_overrides_apply() -> None:
    assert load_recipe("pcd") == load_recipe(ROOT / "inference" / "pcd.yaml")
    assert load_recipe("svi", ["optimizer.lr=0.01"]).optimizer.lr == 0.01
    assert ppgen.load_spec("vae", ["latent.dim=2"]).latent.dim == 2


def test_a_file_here_wins_over_a_zoo_name(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("vae").write_text("family: vae\nname: mine\ndata: {name: digits}\nlatent: {dim: 3}\n")
    spec = ppgen.load_spec("vae")
    assert spec.name == "mine" and spec.latent.dim == 3
    Path("rbm").mkdir()  # a folder (a run folder, say) is never a spec, so it does not hide the zoo's
    assert ppgen.load_spec("rbm") == ppgen.load_spec(ROOT / "models" / "rbm.yaml")


def test_an_unknown_name_lists_the_zoo_and_a_missing_path_stays_missing(tmp_path) -> None:
    with pytest.raises(SpecError, match="vea: no such file, and no zoo spec of that name; zoo specs: .*vae"):
        ppgen.load_spec("vea")
    with pytest.raises(SpecError, match="no inference recipe of that name; inference recipes: .*pcd"):
        load_recipe("pdc")
    with pytest.raises(SpecError, match="nope.yaml: no such file"):
        ppgen.load_spec(tmp_path / "nope.yaml")
    with pytest.raises(SpecError, match="no such file"):
        ppgen.load_spec("../vae")  # a path, never a name
    assert zoo.resolve("..", "models") == ".." and zoo.path("models", "../models/vae") is None


def test_fit_takes_zoo_names_from_the_command_line(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    code = main(["fit", "vae", "--inference", "svi", "--epochs", "1", "--out", str(run), "--no-figures",
                 "--set", "data.name=digits", "--set", "latent.dim=2", "--set", "encoder.hidden=[8]",
                 "--set", "decoder.hidden=[8]", "--set", "data.limit=128"])
    assert code == 0, capsys.readouterr().err
    assert ppgen.open_run(run).recipe.routine == "svi"
    assert main(["fit", "vea", "--out", str(tmp_path / "r2")]) == 2
    assert "no zoo spec of that name" in capsys.readouterr().err


def test_init_copies_a_zoo_file_and_never_overwrites(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["init", "vae"]) == 0
    assert Path("vae.yaml").read_bytes() == (ROOT / "models" / "vae.yaml").read_bytes()
    assert "ppgen fit vae.yaml" in capsys.readouterr().out
    Path("vae.yaml").write_text("family: vae\n# mine\n")
    assert main(["init", "vae"]) == 2
    assert "already exists" in capsys.readouterr().err and Path("vae.yaml").read_text() == "family: vae\n# mine\n"
    assert main(["init", "pcd", "-o", "recipes/mine.yaml"]) == 0
    assert load_recipe("recipes/mine.yaml") == load_recipe("pcd")
    assert main(["init", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no zoo spec or recipe of that name" in err and "Traceback" not in err
    assert main(["init", "svi", "-o", "x.txt"]) == 2
    assert "expected a file ending in .yaml" in capsys.readouterr().err


def test_list_describes_every_zoo_file_in_whole_sentences(capsys) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for kind in zoo.KINDS:
        for name in zoo.names(kind):
            text = zoo.describe(zoo.folder(kind) / f"{name}.yaml")
            assert text and text[-1] in ".!?)", (name, text)
            assert f"  {name} " in out
    assert "Burda et al. 2015" in out  # "et al." does not end a sentence


def test_describe_stops_at_the_first_sentence(tmp_path) -> None:
    f = tmp_path / "m.yaml"
    f.write_text("# A model (Smith et al.\n# 2020, e.g. eq. 3). More text.\n# And more.\nfamily: vae\n")
    assert zoo.describe(f) == "A model (Smith et al. 2020, e.g. eq. 3)."
    f.write_text("family: vae\n")
    assert zoo.describe(f) == ""


def test_the_wheel_carries_the_zoo_and_finds_it_without_a_checkout(tmp_path) -> None:
    """Build the wheel (no network: the installed setuptools), unpack it away from the checkout and list
    the zoo from there."""
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "dist"), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("ppgen-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for kind in zoo.KINDS:
        for path in (ROOT / kind).glob("*.yaml"):
            assert f"ppgen/zoo/{kind}/{path.name}" in names, path
    assert not any(n.startswith(("models/", "inference/", "tests/", "benchmarks/")) for n in names)
    for path in (ROOT / "ppgen").rglob("*.py"):  # every module, subpackages included
        assert path.relative_to(ROOT).as_posix() in names, path
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(site)}
    probe = subprocess.run([sys.executable, "-c", "import ppgen, ppgen.zoo as z; print(ppgen.__file__); "
                            "print(z.folder('models')); print(ppgen.load_spec('vae').name)"],
                           capture_output=True, text=True, cwd=empty, env=env, timeout=300)
    assert probe.returncode == 0, probe.stderr[-2000:]
    file, folder, name = probe.stdout.split()
    assert file.startswith(str(site)) and folder == str(site / "ppgen" / "zoo" / "models") and name == "vae"
