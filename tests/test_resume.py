"""Resuming a run: what a resume may change (the learning rate after a divergence, clipping, the epochs)
and that the change is applied and recorded; what it may not; checkpoints that carry the spec and recipe
they were trained with; a divergence that never leaves a non-finite checkpoint or calls a damaged one good;
Ctrl-C before anything was saved; every run-folder file written whole."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
import torch
import yaml

import ppgen
from ppgen.cli import main
from ppgen.models.vae import VAE
from ppgen.store.checkpoint import CHECKPOINT
from ppgen.store.records import HISTORY
from ppgen.spec import SpecError
from ppgen.training.errors import Interrupted, TrainingError
from ppgen.training.plan import RESUMABLE

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPEC = {
    "family": "vae",
    "data": {"name": "digits", "batch_size": 64},
    "latent": {"dim": 3},
    "encoder": {"hidden": [32]},
    "decoder": {"hidden": [32]},
}
RECIPE = {"routine": "svi", "elbo": "meanfield", "optimizer": {"lr": 0.003}}


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def _spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    return path


def _lrs(ckpt: dict) -> list[float]:
    return [g["lr"] for g in ckpt["routine"]["optimizers"]["main"]["param_groups"]]


def test_after_a_divergence_the_advised_lower_lr_is_applied_and_recorded(tmp_path, capsys) -> None:
    spec = _spec_file(tmp_path)
    run = tmp_path / "run"
    rc, err = _cli(["fit", spec, "-i", tmp_path / "recipe.yaml", "--epochs", "1", "--out", run, "--no-figures"], capsys)
    assert rc == 0, err
    good = torch.load(run / CHECKPOINT, weights_only=True)
    # a learning rate that diverges in epoch 2: the run stops, keeping the checkpoint of epoch 1
    rc, err = _cli(["fit", run, "--resume", "--epochs", "2", "--set", "inference.optimizer.lr=1e9", "--no-figures"],
                   capsys)
    assert rc == 1 and "the last good checkpoint" in err and "epoch 1, batch 0, step 22" in err, err
    advice = re.search(r"ppgen fit (\S+) --resume --epochs 2 --set inference\.optimizer\.lr=1e\+08 \(now 1e\+09\)", err)
    assert advice and advice.group(1) == str(run), err
    after = torch.load(run / CHECKPOINT, weights_only=True)
    assert torch.equal(after["model"]["decoder.0.0.weight"], good["model"]["decoder.0.0.weight"])
    assert after["recipe"]["optimizer"]["lr"] == 0.003 == yaml.safe_load((run / "inference.yaml").read_text())["optimizer"]["lr"]
    # the advised fix can be applied: the resume takes the new rate, and the run says so
    rc, err = _cli(["fit", run, "--resume", "--epochs", "2", "--set", "inference.optimizer.lr=0.001", "--no-figures"],
                   capsys)
    assert rc == 0, err
    done = torch.load(run / CHECKPOINT, weights_only=True)
    assert done["epoch"] == 2 and _lrs(done) == [0.001] and done["recipe"]["optimizer"]["lr"] == 0.001
    assert yaml.safe_load((run / "inference.yaml").read_text())["optimizer"]["lr"] == 0.001
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    resumed = [r for r in records if r["kind"] == "resumed"]
    assert resumed[-1]["changes"] == {"epochs": [1, 2], "optimizer.lr": [0.003, 0.001]}
    assert resumed[-1]["step"] == 22 and resumed[-1]["epoch"] == 1
    history = [json.loads(line) for line in (run / HISTORY).read_text().splitlines()]
    assert [h["event"] for h in history] == ["fit", "resume", "resume"]
    assert history[1]["changes"]["optimizer.lr"] == [0.003, 1e9]
    assert history[2]["changes"]["optimizer.lr"] == [0.003, 0.001] and history[2]["from_step"] == 22
    assert [m["epoch"] for m in ppgen.open_run(run).metrics if m["kind"] == "epoch"] == [1, 2]


def test_a_changed_lr_changes_the_updates_and_an_unchanged_resume_stays_exact(tmp_path) -> None:
    straight = ppgen.fit(SPEC, RECIPE, epochs=2, out=tmp_path / "a", seed=5, progress=False)
    for name in ("b", "c"):
        ppgen.fit(SPEC, RECIPE, epochs=1, out=tmp_path / name, seed=5, progress=False)
    same = ppgen.fit(tmp_path / "b", None, epochs=2, resume=True, progress=False)
    slower = ppgen.fit(tmp_path / "c", None, epochs=2, resume=True, recipe_overrides=["optimizer.lr=0.0003"],
                       progress=False)
    w = "decoder.0.0.weight"
    assert torch.equal(same.checkpoint["model"][w], straight.checkpoint["model"][w])
    assert _lrs(same.checkpoint) == [0.003] and _lrs(slower.checkpoint) == [0.0003]
    # a tenth of the rate: epoch 2 moves the weights less than the unchanged run does
    first = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=True)
    one = ppgen.fit(SPEC, RECIPE, epochs=1, out=tmp_path / "d", seed=5, progress=False).checkpoint["model"][w]
    moved_same = (first["model"][w] - one).norm()
    moved_slower = (slower.checkpoint["model"][w] - one).norm()
    assert 0 < moved_slower < 0.5 * moved_same
    assert slower.recipe.optimizer.lr == 0.0003 and same.recipe.optimizer.lr == 0.003


def test_clip_norm_and_log_every_may_change_on_resume(tmp_path) -> None:
    ppgen.fit(SPEC, RECIPE, epochs=1, out=tmp_path / "r", progress=False)
    run = ppgen.fit(tmp_path / "r", None, epochs=2, resume=True, progress=False,
                    recipe_overrides=["optimizer.clip_norm=0.5", "log_every=5"])
    train = [m for m in run.metrics if m["kind"] == "train"]
    assert all("grad_norm" not in m for m in train if m["epoch"] == 1)
    later = [m for m in train if m["epoch"] == 2]
    assert later and all("grad_norm" in m for m in later) and all(m["step"] % 5 == 0 for m in later)
    assert run.recipe.optimizer.clip_norm == 0.5 and run.recipe.log_every == 5


@pytest.mark.parametrize("setting, key", [
    ("inference.elbo=trace", "elbo"),
    ("inference.optimizer.name=sgd", "optimizer.name"),
    ("inference.optimizer.betas=[0.5, 0.9]", "optimizer.betas"),
    ("latent.dim=4", "latent.dim"),
    ("data.batch_size=32", "data.batch_size"),
])
def test_a_resume_refuses_other_changes_naming_the_key(tmp_path, capsys, setting, key) -> None:
    ppgen.fit(SPEC, RECIPE, epochs=1, out=tmp_path / "r", progress=False)
    before = (tmp_path / "r" / CHECKPOINT).read_bytes()
    rc, err = _cli(["fit", tmp_path / "r", "--resume", "--epochs", "2", "--set", setting, "--no-figures"], capsys)
    assert rc == 2 and f"in {key} (" in err, err
    if setting.startswith("inference."):
        assert "a resume may change only " + ", ".join(RESUMABLE) in err
    assert (tmp_path / "r" / CHECKPOINT).read_bytes() == before


def test_a_finished_run_resumed_to_its_own_epochs_changes_nothing(tmp_path, capsys) -> None:
    ppgen.fit(SPEC, RECIPE, epochs=1, out=tmp_path / "r", progress=False)
    before = {p.name: p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file() and p.name != ".lock"}
    rc, err = _cli(["fit", tmp_path / "r", "--resume", "--no-figures"], capsys)
    assert rc == 0 and "already fitted for 1 epochs" in err, err
    rc, err = _cli(["fit", tmp_path / "r", "--resume", "--set", "inference.optimizer.lr=0.001", "--no-figures"], capsys)
    assert rc == 2 and "optimizer.lr would apply to nothing" in err and "--epochs 2 or more" in err, err
    after = {p.name: p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before


def test_the_checkpoint_records_the_spec_and_recipe_and_a_deleted_copy_is_written_again(tmp_path) -> None:
    run = ppgen.fit(SPEC, RECIPE, epochs=1, out=tmp_path / "r", progress=False)
    ckpt = run.checkpoint
    assert ckpt["spec"] == yaml.safe_load((run.path / "spec.yaml").read_text())
    assert ckpt["recipe"] == yaml.safe_load((run.path / "inference.yaml").read_text())
    assert ckpt["family"] == "vae" and len(ckpt["digest"]) == 64
    (run.path / "inference.yaml").unlink()
    (run.path / "spec.yaml").unlink()
    assert ppgen.open_run(run.path).recipe.optimizer.lr == 0.003  # from the record
    resumed = ppgen.fit(run.path, None, epochs=2, resume=True, progress=False)
    assert yaml.safe_load((run.path / "spec.yaml").read_text()) == ckpt["spec"]
    assert resumed.recipe.epochs == 2 and resumed.recipe.elbo == "meanfield"


def test_a_hand_edited_recipe_is_refused_and_set_is_the_way(tmp_path) -> None:
    ppgen.fit(SPEC, RECIPE, epochs=1, out=tmp_path / "r", progress=False)
    path = tmp_path / "r" / "inference.yaml"
    text = path.read_text()
    path.write_text(text.replace("lr: 0.003", "lr: 0.5"))
    with pytest.raises(SpecError, match=r"optimizer\.lr \(0\.003 in the checkpoint, 0\.5 in the file\)"):
        ppgen.fit(tmp_path / "r", None, epochs=2, resume=True, progress=False)
    path.write_text(text)
    run = ppgen.fit(tmp_path / "r", None, epochs=2, resume=True, recipe_overrides=["optimizer.lr=0.0005"],
                    progress=False)
    assert _lrs(run.checkpoint) == [0.0005]


# --------------------------------------------------------------------------- divergence


def test_a_non_finite_routine_state_is_never_saved(tmp_path, monkeypatch) -> None:
    from ppgen.inference.base import Routine

    original = Routine.state_dict

    def with_nan(self, state):
        sd = original(self, state)
        return {**sd, "extra": {**sd["extra"], "chains": torch.tensor([0.0, float("nan")])}}

    monkeypatch.setattr(Routine, "state_dict", with_nan)
    with pytest.raises(TrainingError, match=r"the tensor routine\.extra\.chains is not finite .*no checkpoint was written"):
        ppgen.fit(SPEC, RECIPE, epochs=1, out=tmp_path / "r", progress=False)
    assert not (tmp_path / "r" / CHECKPOINT).exists()


def test_a_damaged_checkpoint_is_not_called_good_after_a_divergence(tmp_path, monkeypatch) -> None:
    ppgen.fit(SPEC, RECIPE, epochs=1, out=tmp_path / "r", progress=False)
    last = tmp_path / "r" / CHECKPOINT
    calls = {"n": 0}
    original = VAE.fused_loss

    def damage_then_nan(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raw = bytearray(last.read_bytes())
            mid = len(raw) // 2  # flipped, not zeroed, and more than a record's alignment padding
            raw[mid : mid + 4096] = bytes(b ^ 0xFF for b in raw[mid : mid + 4096])
            last.write_bytes(bytes(raw))
        out = original(self, *args, **kwargs)
        return out * float("nan") if calls["n"] == 5 else out

    monkeypatch.setattr(VAE, "fused_loss", damage_then_nan)
    with pytest.raises(TrainingError) as info:
        ppgen.fit(tmp_path / "r", None, epochs=2, resume=True, progress=False)
    message = str(info.value)
    assert "nan at epoch 2, batch 5" in message and "does not pass its checks" in message
    assert "good" not in message


# --------------------------------------------------------------------------- Ctrl-C before anything was saved


def test_ctrl_c_before_the_first_checkpoint_says_nothing_was_saved(tmp_path, capsys, monkeypatch) -> None:
    import ppgen.training.loop as train

    spec = _spec_file(tmp_path)
    run = tmp_path / "run"
    argv = ["fit", spec, "--epochs", "1", "--out", run, "--no-figures"]

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr("ppgen.data.load", ctrl_c)  # while loading the data: nothing written at all
        rc, err = _cli(argv, capsys)
    assert rc == 130 and "nothing was saved" in err and "start again with the same command" in err, err
    assert not run.exists()
    with monkeypatch.context() as m:
        m.setattr(train, "_train", ctrl_c)  # while building the model, before the loop
        rc, err = _cli(argv, capsys)
    assert rc == 130 and f"nothing was saved in {run}" in err and "start again with the same command" in err, err
    assert not (run / CHECKPOINT).exists()
    rc, err = _cli(["fit", run, "--resume", "--epochs", "2", "--no-figures"], capsys)
    assert rc == 2 and "no checkpoint to resume from" in err and "drop --resume" in err, err
    rc, err = _cli(argv, capsys)  # the same command starts over
    assert rc == 0, err
    with monkeypatch.context() as m:
        m.setattr(train, "_train", ctrl_c)
        rc, err = _cli(["fit", run, "--resume", "--epochs", "2", "--no-figures"], capsys)
    assert rc == 130 and "nothing was saved by this call" in err and "(epoch 1, batch 0, step 22) is kept" in err
    assert f"ppgen fit {run} --resume" in err


def test_ctrl_c_before_the_first_checkpoint_in_the_python_api(tmp_path, monkeypatch) -> None:
    import ppgen.training.loop as train

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "_train", ctrl_c)
    with pytest.raises(Interrupted, match="nothing was saved") as info:
        ppgen.fit(SPEC, RECIPE, epochs=1, out=tmp_path / "r", progress=False)
    assert not info.value.saved


# --------------------------------------------------------------------------- whole-file writes

_WATCH: dict = {"folder": None, "events": []}


def _audit(event: str, args: tuple) -> None:
    folder = _WATCH["folder"]
    if folder is None:
        return
    if event == "open" and isinstance(args[0], (str, os.PathLike)) and str(args[0]).startswith(folder):
        flags = args[2]
        if flags & (os.O_WRONLY | os.O_RDWR):
            _WATCH["events"].append(("open", str(args[0]), flags))
    elif event == "os.rename" and str(args[1]).startswith(folder):
        _WATCH["events"].append(("rename", str(args[0]), str(args[1])))


_HOOKED = False


def test_every_run_folder_file_is_written_whole_and_renamed_into_place(tmp_path, capsys) -> None:
    """What the run's commands open for writing inside the folder is a temporary file that is then renamed
    over the real one (so a kill leaves the old file or the new one, never part of one); only the lock and
    the append-only metrics.jsonl are opened in place."""
    global _HOOKED
    if not _HOOKED:  # an audit hook cannot be removed; it stays inert outside this test
        sys.addaudithook(_audit)
        _HOOKED = True
    spec = _spec_file(tmp_path)
    run = tmp_path / "run"
    _WATCH["folder"], _WATCH["events"] = str(run), []
    try:
        commands = [
            ["fit", spec, "--epochs", "1", "--out", run, "--set", "inference.snapshots=[1]"],
            ["fit", run, "--resume", "--epochs", "2", "--set", "inference.optimizer.lr=0.001", "--no-figures"],
            ["evaluate", run, "--k", "2", "--limit", "8"],
            ["sample", run, "-n", "4"],
        ]
        for argv in commands:
            rc, err = _cli(argv, capsys)
            assert rc == 0, err
        events = list(_WATCH["events"])
    finally:
        _WATCH["folder"] = None
    renamed = {(src, dst) for kind, src, dst in events if kind == "rename"}
    written = {e[1] for e in events if e[0] == "open"}
    for path in written:
        name = Path(path).name
        if name == ".lock" or (name == "metrics.jsonl"):
            continue
        assert path.endswith(".tmp") and (path, path[: -len(".tmp")]) in renamed, f"{path} written in place"
    finals = {Path(dst).relative_to(run).as_posix() for _, dst in renamed}
    for name in ("spec.yaml", "inference.yaml", "env.json", "history.jsonl", CHECKPOINT, "checkpoints/epoch-0001.pt",
                 "evaluation.json", "figures/samples-4.png", "figures/training_curves.png"):
        assert name in finals, name
    appends = [e for e in events if e[0] == "open" and Path(e[1]).name == "metrics.jsonl" and not e[1].endswith(".tmp")]
    assert appends and all(flags & os.O_APPEND for _, _, flags in appends)
