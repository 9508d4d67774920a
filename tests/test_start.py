"""ppgen.training.start: where a training process starts -- from the seed (env.json written, the
noise of each rank seeded) or from the run's checkpoint (weights, routine state, RNG and position in
the epoch restored, the resume recorded, metrics cut back) -- and what is dropped either way."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from ppgen import registry
from ppgen.inference.base import Plan
from ppgen.registry import build, load_recipe, load_spec
from ppgen.spec import SpecError
from ppgen.store.checkpoint import CHECKPOINT, load_checkpoint, seal
from ppgen.training.checkpointer import Checkpointer
from ppgen.training.distributed import FabricRuntime
from ppgen.training.plan import Job
from ppgen.training.rng import rng_state, set_rng_state
from ppgen.training.start import Position, begin, restore

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPEC = {"family": "vae", "data": {"name": "toy2d", "distribution": "ring8", "n": 40, "batch_size": 8},
        "latent": {"dim": 1}, "likelihood": {"kind": "gaussian"}, "encoder": {"hidden": [4]},
        "decoder": {"hidden": [4]}}
ONE_PROCESS = SimpleNamespace(global_rank=0, world_size=1, device=torch.device("cpu"))


@pytest.fixture(autouse=True)
def keep_global_rng() -> Any:
    """begin and restore set the process's RNG, as a training process does; the tests put it back."""
    before = rng_state()
    yield
    set_rng_state(before)


def _setup(out: Path, lr: float = 0.01, epochs: int = 3, changes: dict | None = None, resume: bool = False) -> SimpleNamespace:
    spec = load_spec(SPEC)
    rec = load_recipe({"routine": "svi", "epochs": epochs, "optimizer": {"name": "adam", "lr": lr}})
    data = registry.load_data(spec)
    model = build(spec, data.info)
    routine = registry.routine(rec.routine)(rec, FabricRuntime(ONE_PROCESS))
    plan = Plan.of(data, spec.data.batch_size, rec.epochs, 1)
    state = routine.init(model, plan)
    job = Job(spec=spec.model_dump(mode="json"), recipe=rec.model_dump(mode="json"), out=str(out), seed=3,
              epochs=epochs, resume=resume, progress=False, changes=changes or {})
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    return SimpleNamespace(spec=spec, recipe=rec, data=data, model=model, routine=routine, state=state, job=job,
                           steps=plan.steps_per_epoch)


def _restore(run: SimpleNamespace) -> tuple[Any, Position]:
    return restore(ONE_PROCESS, run.job, run.spec, run.recipe, run.model, run.routine, run.state, run.steps)


def _train_a_step(run: SimpleNamespace) -> None:
    run.model.fused_loss(run.data.train_x[:8], "meanfield").backward()
    for opt in run.state.optimizers.values():
        opt.step()
        opt.zero_grad()
    run.state.step += 1


# --------------------------------------------------------------------------- a new run


def test_a_new_run_writes_its_environment_and_seeds_its_noise(tmp_path: Path) -> None:
    run = _setup(tmp_path)
    (tmp_path / "evaluation.json").write_text("{}")
    (tmp_path / "idata.nc").write_bytes(b"old")
    at = begin(ONE_PROCESS, run.job, run.model, run.data)
    assert at == Position(0, 0, 0.0, 0)
    drawn = torch.rand(3)
    torch.manual_seed(3 * 1000 + 0 + 1)
    assert torch.equal(drawn, torch.rand(3))
    env = json.loads((tmp_path / "env.json").read_text())
    assert (env["seed"], env["data_checksum"], env["devices"], env["accelerator"]) == (3, "", 1, "cpu")
    assert "labelled_examples" not in env
    assert not (tmp_path / "evaluation.json").exists() and not (tmp_path / "idata.nc").exists()


def test_a_new_run_records_the_data_checksum_and_which_labels_were_kept(tmp_path: Path) -> None:
    run = _setup(tmp_path)
    run.job.extra_env["data_checksum"] = "abc123"
    begin(ONE_PROCESS, run.job, run.model, SimpleNamespace(kept=np.array([4, 0, 9])))
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["data_checksum"] == "abc123" and env["labelled_examples"] == [4, 0, 9]


def test_each_rank_draws_its_own_noise(tmp_path: Path) -> None:
    run = _setup(tmp_path)
    draws = []
    for rank in (0, 1):
        fabric = SimpleNamespace(global_rank=rank, world_size=1, device=torch.device("cpu"))
        begin(fabric, run.job, run.model, run.data)
        draws.append(torch.rand(4))
    assert not torch.equal(draws[0], draws[1])


# --------------------------------------------------------------------------- a resume


def _saved(tmp_path: Path, **kw: Any) -> tuple[SimpleNamespace, dict]:
    """A run trained two steps and checkpointed at epoch 1, batch 2; then its process goes on changing."""
    run = _setup(tmp_path, **kw)
    _train_a_step(run)
    _train_a_step(run)
    Checkpointer(ONE_PROCESS, run.job, run.spec, run.recipe, run.model, run.routine).save(run.state, 1, 2, 1.5, 2)
    saved = {"model": {k: v.clone() for k, v in run.model.state_dict().items()}, "rng": rng_state(),
             "draws": (torch.rand(3), np.random.random_sample(3), random.random())}
    return run, saved


def test_a_resume_restores_weights_state_rng_and_position(tmp_path: Path) -> None:
    run, saved = _saved(tmp_path)
    fresh = _setup(tmp_path, resume=True)  # a new process: new weights, optimizers and RNG
    torch.manual_seed(99)
    state, at = _restore(fresh)
    assert at == Position(epoch=1, batches_done=2, loss_sum=1.5, loss_count=2)
    assert state.step == 2
    assert all(torch.equal(fresh.model.state_dict()[k], v) for k, v in saved["model"].items())
    opt_new, opt_old = (next(iter(s.optimizers.values())) for s in (state, run.state))
    moments = [s["exp_avg"] for s in opt_old.state.values()]
    assert all(torch.equal(a["exp_avg"], b) for a, b in zip(opt_new.state.values(), moments)) and moments
    torch_d, numpy_d, python_d = saved["draws"]
    assert torch.equal(torch.rand(3), torch_d)
    assert np.array_equal(np.random.random_sample(3), numpy_d) and random.random() == python_d
    # From the same draws, the resumed process takes the step the first one takes (Adam's moments and count).
    set_rng_state(saved["rng"])
    _train_a_step(run)
    set_rng_state(saved["rng"])
    fresh.state = state
    _train_a_step(fresh)
    assert all(torch.equal(fresh.model.state_dict()[k], v) for k, v in run.model.state_dict().items())


def test_a_resume_is_recorded_and_what_came_after_the_checkpoint_dropped(tmp_path: Path) -> None:
    _saved(tmp_path)
    (tmp_path / "metrics.jsonl").write_text(
        json.dumps({"kind": "train", "epoch": 2, "step": 2, "loss": 1.0}) + "\n"
        + json.dumps({"kind": "train", "epoch": 2, "step": 3, "loss": 0.9}) + "\n")
    (tmp_path / "evaluation.json").write_text("{}")
    (tmp_path / "idata.nc").write_bytes(b"old")
    fresh = _setup(tmp_path, epochs=5, resume=True, changes={"epochs": [3, 5]})
    _restore(fresh)
    (event,) = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert {k: event[k] for k in ("event", "from_epoch", "from_batches_done", "from_step", "epochs", "devices",
                                  "changes")} == {"event": "resume", "from_epoch": 1, "from_batches_done": 2,
                                                  "from_step": 2, "epochs": 5, "devices": 1,
                                                  "changes": {"epochs": [3, 5]}}
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [2]
    assert not (tmp_path / "evaluation.json").exists() and not (tmp_path / "idata.nc").exists()


@pytest.mark.parametrize("changed", [True, False])
def test_a_learning_rate_the_resume_changes_replaces_the_checkpoints(tmp_path: Path, changed: bool) -> None:
    _saved(tmp_path, lr=0.1)
    fresh = _setup(tmp_path, lr=0.01, resume=True, changes={"optimizer.lr": [0.1, 0.01]} if changed else None)
    state, _ = _restore(fresh)
    lrs = [g["lr"] for opt in state.optimizers.values() for g in opt.param_groups]
    assert lrs and all(lr == (0.01 if changed else 0.1) for lr in lrs)


def test_a_run_that_has_all_its_epochs_is_refused(tmp_path: Path) -> None:
    _saved(tmp_path)
    fresh = _setup(tmp_path, epochs=1, resume=True)
    with pytest.raises(SpecError) as err:
        _restore(fresh)
    assert str(err.value) == f"--epochs 1: {tmp_path} already has 1 epochs"
    assert not (tmp_path / "history.jsonl").exists()


def test_a_checkpoint_past_the_end_of_an_epoch_is_refused(tmp_path: Path) -> None:
    _saved(tmp_path)
    fresh = _setup(tmp_path, resume=True)
    with pytest.raises(SpecError) as err:
        restore(ONE_PROCESS, fresh.job, fresh.spec, fresh.recipe, fresh.model, fresh.routine, fresh.state, 1)
    assert str(err.value) == (f"{tmp_path / CHECKPOINT}: records 2 batches of epoch 2 done, but an epoch of this run "
                              "has 1")


def test_a_routine_state_that_does_not_fit_is_refused_naming_the_file(tmp_path: Path) -> None:
    _saved(tmp_path)
    path = tmp_path / CHECKPOINT
    ckpt = load_checkpoint(path, "vae")
    ckpt["routine"]["optimizers"] = {}
    torch.save(seal(ckpt), path)
    fresh = _setup(tmp_path, resume=True)
    with pytest.raises(SpecError, match=f"^{path}: its state does not fit the svi routine"):
        _restore(fresh)
