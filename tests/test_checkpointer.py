"""ppgen.training.checkpointer: what a checkpoint of one training process holds, how ``last.pt`` is
replaced and the epoch snapshots kept, that a tensor that is not finite is never written, and the
message that stops a fit naming the last good checkpoint."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import yaml

from ppgen import registry
from ppgen.inference.base import Plan
from ppgen.registry import build, load_recipe, load_spec
from ppgen.store.checkpoint import CHECKPOINT, load_checkpoint
from ppgen.training.checkpointer import Checkpointer
from ppgen.training.distributed import FabricRuntime
from ppgen.training.errors import TrainingError
from ppgen.training.plan import Job
from ppgen.training.rng import rng_state

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPEC = {"family": "vae", "data": {"name": "toy2d", "distribution": "ring8", "n": 40, "batch_size": 8},
        "latent": {"dim": 1}, "likelihood": {"kind": "gaussian"}, "encoder": {"hidden": [4]},
        "decoder": {"hidden": [4]}}
ONE_PROCESS = SimpleNamespace(global_rank=0, world_size=1, device=torch.device("cpu"))


def _setup(out: Path, changes: dict | None = None, **recipe: Any) -> tuple[Checkpointer, Any, Any]:
    """A tiny VAE, its svi state and a checkpointer writing into ``out``."""
    spec = load_spec(SPEC)
    rec = load_recipe({"routine": "svi", "epochs": 3, "optimizer": {"name": "adam", "lr": 0.01}, **recipe})
    data = registry.load_data(spec)
    model = build(spec, data.info)
    routine = registry.routine(rec.routine)(rec, FabricRuntime(ONE_PROCESS))
    state = routine.init(model, Plan.of(data, spec.data.batch_size, rec.epochs, 1))
    job = Job(spec=spec.model_dump(mode="json"), recipe=rec.model_dump(mode="json"), out=str(out), seed=5,
              epochs=rec.epochs, resume=False, progress=False, changes=changes or {})
    (out / "checkpoints").mkdir(parents=True)
    return Checkpointer(ONE_PROCESS, job, spec, rec, model, routine), model, state


def test_a_checkpoint_holds_what_a_resume_needs(tmp_path: Path) -> None:
    ckpt, model, state = _setup(tmp_path)
    state.step = 7
    rng = rng_state()
    path = ckpt.save(state, epoch=1, batches_done=2, loss_sum=3.5, loss_count=2)
    assert path == tmp_path / CHECKPOINT
    got = load_checkpoint(path, "vae")  # sealed: passes every check of a resume
    assert {k: got[k] for k in ("epoch", "batches_done", "epoch_loss_sum", "epoch_loss_count", "world_size", "seed",
                                "family")} == {"epoch": 1, "batches_done": 2, "epoch_loss_sum": 3.5,
                                               "epoch_loss_count": 2, "world_size": 1, "seed": 5, "family": "vae"}
    assert got["spec"] == ckpt.job.spec and got["recipe"] == ckpt.job.recipe and got["routine"]["step"] == 7
    assert got["model"].keys() == model.state_dict().keys()
    assert all(torch.equal(got["model"][k], v) for k, v in model.state_dict().items())
    assert len(got["rng"]) == 1 and all(torch.equal(got["rng"][0][k], rng[k]) for k in ("torch", "numpy", "python"))


def test_last_pt_is_replaced_whole_and_no_temporary_file_is_left(tmp_path: Path) -> None:
    ckpt, model, state = _setup(tmp_path)
    ckpt.save(state, epoch=1, batches_done=0)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    state.step = 9
    ckpt.save(state, epoch=2, batches_done=0)
    got = load_checkpoint(tmp_path / CHECKPOINT, "vae")
    assert (got["epoch"], got["routine"]["step"]) == (2, 9)
    name, param = next(model.named_parameters())
    assert torch.equal(got["model"][name], param.detach())
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.pt"]


def test_a_snapshot_is_kept_only_at_the_end_of_an_epoch_the_recipe_lists(tmp_path: Path) -> None:
    ckpt, model, state = _setup(tmp_path, snapshots=[2])
    folder = tmp_path / "checkpoints"
    ckpt.save(state, epoch=1, batches_done=0)
    ckpt.save(state, epoch=2, batches_done=3)  # mid-way through epoch 3: epoch 2 was not just finished
    assert sorted(p.name for p in folder.iterdir()) == ["last.pt"]
    ckpt.save(state, epoch=2, batches_done=0)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    ckpt.save(state, epoch=3, batches_done=0)
    assert sorted(p.name for p in folder.iterdir()) == ["epoch-0002.pt", "last.pt"]
    snap = load_checkpoint(folder / "epoch-0002.pt", "vae", snapshot=True)
    assert snap.keys() == {"model", "epoch", "family", "format", "digest"} and snap["epoch"] == 2
    name = next(n for n, _ in model.named_parameters())
    last = load_checkpoint(folder / "last.pt", "vae")
    assert not torch.equal(snap["model"][name], last["model"][name])  # the snapshot kept epoch 2's weights


def test_a_tensor_that_is_not_finite_is_never_written(tmp_path: Path) -> None:
    ckpt, model, state = _setup(tmp_path)
    state.step = 4
    ckpt.save(state, epoch=1, batches_done=0)
    before = (tmp_path / CHECKPOINT).read_bytes()
    name, param = next(model.named_parameters())
    with torch.no_grad():
        param.view(-1)[0] = float("nan")
    state.step = 6
    with pytest.raises(TrainingError) as err:
        ckpt.save(state, epoch=1, batches_done=2)
    assert str(err.value).startswith(f"the tensor model.{name} is not finite at epoch 2, batch 2 (step 6); "
                                     "training stopped and the last good checkpoint")
    assert (tmp_path / CHECKPOINT).read_bytes() == before
    with pytest.raises(TrainingError, match=f"model.{name} is not finite at epoch 1, batch 0"):
        ckpt.save(state, epoch=1, batches_done=0)


def test_a_non_finite_optimizer_moment_is_caught_too(tmp_path: Path) -> None:
    ckpt, model, state = _setup(tmp_path)
    x = torch.randn(8, 2)
    model.fused_loss(x, "meanfield").backward()
    opt = next(iter(state.optimizers.values()))
    opt.step()
    moment = next(iter(opt.state.values()))["exp_avg"]
    moment.view(-1)[0] = float("inf")
    with pytest.raises(TrainingError, match=r"the tensor routine\.optimizers\..*exp_avg is not finite"):
        ckpt.save(state, epoch=0, batches_done=1)
    assert not (tmp_path / CHECKPOINT).exists()


def test_the_recipe_is_written_with_the_first_checkpoint_only_when_a_resume_changed_it(tmp_path: Path) -> None:
    ckpt, _, state = _setup(tmp_path / "same")
    ckpt.save(state, epoch=1, batches_done=0)
    assert not (tmp_path / "same" / "inference.yaml").exists()

    ckpt, _, state = _setup(tmp_path / "changed", changes={"optimizer.lr": [0.1, 0.01]})
    recipe_file = tmp_path / "changed" / "inference.yaml"
    ckpt.save(state, epoch=1, batches_done=0)
    assert yaml.safe_load(recipe_file.read_text())["optimizer"]["lr"] == 0.01
    recipe_file.write_text("# written once\n")
    ckpt.save(state, epoch=2, batches_done=0)
    assert recipe_file.read_text() == "# written once\n"


def test_the_failure_message_says_how_to_go_on(tmp_path: Path) -> None:
    ckpt, _, state = _setup(tmp_path)
    lower = "--set inference.optimizer.lr=0.001 (now 0.01) or --set inference.optimizer.clip_norm=1.0"
    assert str(ckpt.failure("loss is NaN")) == (
        f"loss is NaN; training stopped and no checkpoint was written. Start again with a lower learning rate or "
        f"gradient clipping: {lower}")
    state.step = 12
    ckpt.save(state, epoch=2, batches_done=1)
    assert str(ckpt.failure("loss is NaN")) == (
        f"loss is NaN; training stopped and the last good checkpoint ({tmp_path / CHECKPOINT}: epoch 2, batch 1, "
        f"step 12) is kept. Continue from it with a lower learning rate or gradient clipping: "
        f"ppgen fit {tmp_path} --resume --epochs 3 {lower}")
    (tmp_path / CHECKPOINT).write_bytes(b"damaged")
    message = str(ckpt.failure("loss is NaN"))
    assert message.startswith("loss is NaN; training stopped, and the checkpoint on disk does not pass its checks "
                              f"either ({tmp_path / CHECKPOINT}: not a readable ppgen checkpoint")
    assert message.endswith(f"fit the run again with {lower}")
