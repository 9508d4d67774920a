"""Damaged, foreign and edited run folders, and run folder paths that cannot be used: every case exits 2
with a message that names the file and what is wrong, prints no traceback, and writes nothing."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import yaml

import ppgen
from ppgen.cli import main
from ppgen.store.checkpoint import CHECKPOINT, seal

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPEC = {
    "family": "vae",
    "data": {"name": "digits", "batch_size": 64},
    "latent": {"dim": 3},
    "encoder": {"hidden": [32]},
    "decoder": {"hidden": [32]},
}
RECIPE = {"routine": "svi", "elbo": "meanfield", "optimizer": {"lr": 0.003}}
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A 2-epoch VAE run, a VAE run with another latent size, and a GMM run (another family)."""
    base = tmp_path_factory.mktemp("probe")
    ppgen.fit(SPEC, RECIPE, epochs=2, out=base / "vae", progress=False)
    ppgen.fit({**SPEC, "latent": {"dim": 4}}, RECIPE, epochs=1, out=base / "vae4", progress=False)
    ppgen.fit(ROOT / "models/gmm.yaml", ROOT / "inference/map_enum.yaml", epochs=1, out=base / "gmm", progress=False)
    return {"vae": base / "vae", "vae4": base / "vae4", "gmm": base / "gmm"}


# --------------------------------------------------------------------------- ways to damage a run


def _ckpt(run: Path) -> dict[str, Any]:
    return torch.load(run / CHECKPOINT, weights_only=True)


def _resave(run: Path, ckpt: dict[str, Any], reseal: bool) -> None:
    """Write an edited checkpoint: as an editor would (the old digest stays), or sealed again (as if ppgen
    itself had written it), so that the checks behind the digest are reached too."""
    torch.save(seal(ckpt) if reseal else ckpt, run / CHECKPOINT)


def random_bytes_in_a_weight(run: Path, others: dict) -> None:
    ckpt = _ckpt(run)
    weight = ckpt["model"]["decoder.0.0.weight"].contiguous()
    raw = (run / CHECKPOINT).read_bytes()
    at = raw.find(weight.numpy().tobytes())
    assert at > 0
    noise = torch.Generator().manual_seed(0)
    junk = torch.randint(0, 256, (64,), dtype=torch.uint8, generator=noise).numpy().tobytes()
    (run / CHECKPOINT).write_bytes(raw[:at] + junk + raw[at + 64 :])


def edited_weight(run: Path, others: dict) -> None:
    ckpt = _ckpt(run)
    ckpt["model"]["decoder.0.0.weight"] += 0.5
    _resave(run, ckpt, reseal=False)


def nan_in_a_decoder_weight(run: Path, others: dict, reseal: bool = False) -> None:
    ckpt = _ckpt(run)
    ckpt["model"]["decoder.0.0.weight"][0, 0] = float("nan")
    _resave(run, ckpt, reseal)


def nan_in_a_decoder_weight_resealed(run: Path, others: dict) -> None:
    nan_in_a_decoder_weight(run, others, reseal=True)


def inf_in_the_optimizer_state_resealed(run: Path, others: dict) -> None:
    ckpt = _ckpt(run)
    state = ckpt["routine"]["optimizers"]["main"]["state"]
    next(iter(state.values()))["exp_avg_sq"][0] = float("inf")
    _resave(run, ckpt, reseal=True)


def another_familys_checkpoint(run: Path, others: dict) -> None:
    shutil.copy(others["gmm"] / CHECKPOINT, run / CHECKPOINT)


def checkpoint_of_other_shapes(run: Path, others: dict) -> None:
    shutil.copy(others["vae4"] / CHECKPOINT, run / CHECKPOINT)


def other_shapes_resealed(run: Path, others: dict) -> None:
    ckpt = _ckpt(run)
    ckpt["model"]["decoder.0.0.weight"] = torch.zeros(32, 5)
    _resave(run, ckpt, reseal=True)


def _without(key: str) -> Callable[[Path, dict], None]:
    def damage(run: Path, others: dict) -> None:
        ckpt = _ckpt(run)
        del ckpt[key]
        _resave(run, ckpt, reseal=True)

    damage.__name__ = f"checkpoint_without_{key}"
    return damage


def _epoch(value: int, reseal: bool) -> Callable[[Path, dict], None]:
    def damage(run: Path, others: dict) -> None:
        ckpt = _ckpt(run)
        ckpt["epoch"] = value
        _resave(run, ckpt, reseal)

    damage.__name__ = f"epoch_edited_to_{value}" + ("_resealed" if reseal else "")
    return damage


def batches_beyond_an_epoch_resealed(run: Path, others: dict) -> None:
    ckpt = _ckpt(run)
    ckpt["batches_done"] = 999
    _resave(run, ckpt, reseal=True)


def rng_state_missing_a_generator_resealed(run: Path, others: dict) -> None:
    ckpt = _ckpt(run)
    del ckpt["rng"][0]["python"]
    _resave(run, ckpt, reseal=True)


def checkpoint_without_digest(run: Path, others: dict) -> None:
    ckpt = _ckpt(run)
    del ckpt["digest"], ckpt["format"]
    _resave(run, ckpt, reseal=False)


def checkpoint_is_text(run: Path, others: dict) -> None:
    (run / CHECKPOINT).write_text("not a checkpoint\n")


def checkpoint_cut_in_half(run: Path, others: dict) -> None:
    raw = (run / CHECKPOINT).read_bytes()
    (run / CHECKPOINT).write_bytes(raw[: len(raw) // 2])


def checkpoint_is_a_list(run: Path, others: dict) -> None:
    torch.save([1, 2, 3], run / CHECKPOINT)


def spec_cut_in_half(run: Path, others: dict) -> None:
    text = (run / "spec.yaml").read_text()
    (run / "spec.yaml").write_text(text[: len(text) // 2])


def spec_cut_before_the_decoder(run: Path, others: dict) -> None:
    """Whole lines cut off the end: valid YAML, and a spec that validates with the decoder's defaults."""
    lines = (run / "spec.yaml").read_text().splitlines(keepends=True)
    cut = next(i for i, line in enumerate(lines) if line.startswith("decoder:"))
    (run / "spec.yaml").write_text("".join(lines[:cut]))


def spec_empty(run: Path, others: dict) -> None:
    (run / "spec.yaml").write_text("")


def inference_lr_edited(run: Path, others: dict) -> None:
    recipe = yaml.safe_load((run / "inference.yaml").read_text())
    recipe["optimizer"]["lr"] = 0.5
    (run / "inference.yaml").write_text(yaml.safe_dump(recipe))


def metrics_binary_line(run: Path, others: dict) -> None:
    lines = (run / "metrics.jsonl").read_bytes().splitlines(keepends=True)
    (run / "metrics.jsonl").write_bytes(lines[0] + b"\xff\xfe\x00garbage\x80\n" + b"".join(lines[1:]))


def metrics_list_line(run: Path, others: dict) -> None:
    lines = (run / "metrics.jsonl").read_bytes().splitlines(keepends=True)
    (run / "metrics.jsonl").write_bytes(lines[0] + b"[1, 2]\n" + b"".join(lines[1:]))


def metrics_number_as_last_line(run: Path, others: dict) -> None:
    with (run / "metrics.jsonl").open("a") as f:
        f.write("5\n")


def metrics_epoch_record_without_numbers(run: Path, others: dict) -> None:
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"kind": "epoch", "epoch": "two", "step": 3}\n')


def evaluation_garbled(run: Path, others: dict) -> None:
    (run / "evaluation.json").write_bytes(b'{"test_nll_nats": 4\x00\xff')


def evaluation_a_list(run: Path, others: dict) -> None:
    (run / "evaluation.json").write_text("[1, 2]\n")


# --------------------------------------------------------------------------- the corpus

EVALUATE = ["evaluate", "{run}", "--k", "2", "--limit", "8"]
RESUME = ["fit", "{run}", "--resume", "--epochs", "3", "--no-figures"]
SAMPLE = ["sample", "{run}", "-n", "2", "-o", "{tmp}/s.npz"]
COMPARE = ["compare", "{run}", "-o", "{tmp}/c.png"]

CHECKPOINT_RE = r"checkpoints/last\.pt: "
CASES = [
    (random_bytes_in_a_weight, EVALUATE, CHECKPOINT_RE),
    (random_bytes_in_a_weight, RESUME, CHECKPOINT_RE),
    (edited_weight, EVALUATE, CHECKPOINT_RE + r".*do not match the digest"),
    (nan_in_a_decoder_weight, EVALUATE, CHECKPOINT_RE + r"the tensor model\.decoder\.0\.0\.weight holds NaN"),
    (nan_in_a_decoder_weight, RESUME, CHECKPOINT_RE + r"the tensor model\.decoder\.0\.0\.weight holds NaN"),
    (nan_in_a_decoder_weight_resealed, SAMPLE, CHECKPOINT_RE + r"the tensor model\.decoder\.0\.0\.weight holds NaN"),
    (inf_in_the_optimizer_state_resealed, RESUME, CHECKPOINT_RE + r"the tensor routine\.optimizers\.main.*infinite"),
    (another_familys_checkpoint, EVALUATE, CHECKPOINT_RE + r"a checkpoint of the 'gmm' family"),
    (another_familys_checkpoint, RESUME, CHECKPOINT_RE + r"a checkpoint of the 'gmm' family"),
    (checkpoint_of_other_shapes, EVALUATE, r"spec\.yaml and .*last\.pt disagree.*latent\.dim \(4 in the checkpoint, 3"),
    (checkpoint_of_other_shapes, RESUME, r"spec\.yaml and .*last\.pt disagree.*latent\.dim"),
    (other_shapes_resealed, SAMPLE, CHECKPOINT_RE + r"its weights do not fit.*decoder\.0\.0\.weight"),
    (other_shapes_resealed, RESUME, CHECKPOINT_RE + r"its weights do not fit.*decoder\.0\.0\.weight"),
    (_without("model"), EVALUATE, CHECKPOINT_RE + r"not a complete ppgen checkpoint: it has no 'model'"),
    (_without("rng"), RESUME, CHECKPOINT_RE + r"not a complete ppgen checkpoint: it has no 'rng'"),
    (_epoch(-5, reseal=False), RESUME, CHECKPOINT_RE + r"'epoch' must be a whole number .* got -5"),
    (_epoch(-5, reseal=True), RESUME, CHECKPOINT_RE + r"'epoch' must be a whole number .* got -5"),
    (_epoch(1, reseal=False), RESUME, CHECKPOINT_RE + r"its contents do not match the digest"),
    (batches_beyond_an_epoch_resealed, RESUME, CHECKPOINT_RE + r"records 999 batches of epoch 3 done, but an epoch"),
    (rng_state_missing_a_generator_resealed, RESUME, CHECKPOINT_RE + r"'rng' must be one random-number state"),
    (checkpoint_without_digest, EVALUATE, CHECKPOINT_RE + r"has no digest"),
    (checkpoint_is_text, EVALUATE, CHECKPOINT_RE + r"not a readable ppgen checkpoint"),
    (checkpoint_cut_in_half, RESUME, CHECKPOINT_RE + r"not a readable ppgen checkpoint"),
    (checkpoint_is_a_list, EVALUATE, CHECKPOINT_RE + r"not a ppgen checkpoint \(it holds a list"),
    (spec_cut_in_half, EVALUATE, r"spec\.yaml"),
    (spec_cut_in_half, RESUME, r"spec\.yaml"),
    (spec_cut_before_the_decoder, EVALUATE, r"spec\.yaml and .*last\.pt disagree.*decoder\.hidden \(\[32\] in the checkpoint"),
    (spec_cut_before_the_decoder, RESUME, r"spec\.yaml and .*last\.pt disagree.*decoder\.hidden"),
    (spec_empty, RESUME, r"spec\.yaml: empty .*delete it and ppgen writes it again"),
    (spec_empty, EVALUATE, r"spec\.yaml: empty"),
    (inference_lr_edited, RESUME, r"inference\.yaml and .*last\.pt disagree.*optimizer\.lr \(0\.003 in the checkpoint, 0\.5 in the file\)"),
    (metrics_binary_line, RESUME, r"metrics\.jsonl: line 2 is not a JSON record"),
    (metrics_binary_line, COMPARE, r"metrics\.jsonl: line 2 is not a JSON record"),
    (metrics_list_line, COMPARE, r"metrics\.jsonl: line 2 is a JSON list, not a record"),
    (metrics_number_as_last_line, RESUME, r"metrics\.jsonl: line \d+ is a JSON int, not a record"),
    (metrics_epoch_record_without_numbers, COMPARE, r"metrics\.jsonl: line \d+ has epoch 'two', not a whole number"),
    (evaluation_garbled, COMPARE, r"evaluation\.json: not a readable JSON file"),
    (evaluation_a_list, COMPARE, r"evaluation\.json: holds a JSON list, not an object"),
]


def _contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def _run_cli(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(argv)
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("damage, command, expect", CASES,
                         ids=[f"{d.__name__}-{c[0]}" for d, c, _ in CASES])
def test_damaged_run_folder_exits_2_naming_the_file(runs, tmp_path, capsys, damage, command, expect) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs["vae"], run)
    damage(run, runs)
    before = _contents(run)
    argv = [a.format(run=run, tmp=tmp_path) for a in command]
    rc, err = _run_cli(argv, capsys)
    assert rc == 2, err
    assert "Traceback" not in err and "unexpected error" not in err
    import re

    assert re.search(expect, err, re.S), err
    assert _contents(run) == before  # refused before anything was written
    assert not (tmp_path / "s.npz").exists() and not (tmp_path / "c.png").exists()


# --------------------------------------------------------------------------- folders that are not there


def _spec_file(tmp_path: Path, **changes: Any) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**SPEC, **changes}))
    return str(path)


def test_resume_of_a_folder_that_is_not_there_or_not_a_run(tmp_path, capsys) -> None:
    rc, err = _run_cli(["fit", str(tmp_path / "no/such/run"), "--resume"], capsys)
    assert rc == 2 and f"{tmp_path / 'no/such/run'}: no such run folder" in err, err
    spec = _spec_file(tmp_path)
    (tmp_path / "empty").mkdir()
    rc, err = _run_cli(["fit", spec, "--resume", "--out", str(tmp_path / "empty")], capsys)
    assert rc == 2 and "is not a ppgen run folder" in err and "inference.yaml" not in err, err
    rc, err = _run_cli(["fit", spec, "--resume", "--out", str(tmp_path / "missing")], capsys)
    assert rc == 2 and "missing: no such run folder" in err, err
    rc, err = _run_cli(["evaluate", str(tmp_path / "missing")], capsys)
    assert rc == 2 and "missing: no such run folder" in err, err
    assert not (tmp_path / "missing").exists() and not any((tmp_path / "empty").iterdir())


def test_resume_below_the_epochs_done_is_refused(runs, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs["vae"], run)
    before = _contents(run)
    rc, err = _run_cli(["fit", str(run), "--resume", "--epochs", "1", "--no-figures"], capsys)
    assert rc == 2 and "--epochs 1" in err and "already has 2 epochs" in err and "--epochs 3 or more" in err, err
    assert _contents(run) == before


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/ppgen-absolute-name", "..", "a/b", ".hidden", "tab\there"])
def test_a_name_that_is_not_one_folder_name_is_refused_without_out(tmp_path, monkeypatch, capsys, name) -> None:
    work = tmp_path / "work" / "deeper"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    spec = _spec_file(tmp_path, name=name)
    before = sorted(p.name for p in tmp_path.iterdir())
    rc, err = _run_cli(["fit", spec, "--epochs", "1", "--no-figures"], capsys)
    assert rc == 2 and "name:" in err and "pass --out" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before and not any(work.iterdir())
    assert not list(Path("/tmp").glob("ppgen-absolute-name*"))


def test_a_plain_name_makes_the_folder_under_runs(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    rc, err = _run_cli(["fit", _spec_file(tmp_path, name="my vae"), "--epochs", "1", "--no-figures"], capsys)
    assert rc == 0, err
    (folder,) = (tmp_path / "runs").iterdir()
    assert folder.name.startswith("my vae-") and (folder / CHECKPOINT).exists()


# --------------------------------------------------------------------------- links in a run folder


def _link_to_outside(run: Path, name: str, tmp_path: Path) -> Path:
    """Replace ``run/name`` by a link to a file outside the run (holding what the file held)."""
    target = tmp_path / f"outside-{name.replace('/', '-')}"
    path = run / name
    target.write_bytes(path.read_bytes() if path.exists() else b"precious\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    path.symlink_to(target)
    return target


@pytest.mark.parametrize("name, command", [
    ("metrics.jsonl", RESUME),
    ("inference.yaml", RESUME),
    (CHECKPOINT, RESUME),
    ("evaluation.json", EVALUATE),
    ("figures/samples-2.png", ["sample", "{run}", "-n", "2"]),
])
def test_links_in_a_run_folder_are_replaced_not_written_through(runs, tmp_path, capsys, name, command) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs["vae"], run)
    target = _link_to_outside(run, name, tmp_path)
    before = target.read_bytes()
    rc, err = _run_cli([a.format(run=run, tmp=tmp_path) for a in command], capsys)
    assert rc == 0, err
    assert target.read_bytes() == before
    assert not (run / name).is_symlink() and (run / name).stat().st_size > 0


def test_a_new_run_replaces_a_linked_spec_yaml(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    target = tmp_path / "precious.yaml"
    target.write_text("mine: true\n")
    (run / "spec.yaml").symlink_to(target)
    (run / "inference.yaml").symlink_to(target)
    rc, err = _run_cli(["fit", _spec_file(tmp_path), "--epochs", "1", "--out", str(run), "--no-figures"], capsys)
    assert rc == 0, err
    assert target.read_text() == "mine: true\n"
    assert not (run / "spec.yaml").is_symlink() and yaml.safe_load((run / "spec.yaml").read_text())["family"] == "vae"
