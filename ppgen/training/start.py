"""Where a training process starts, once the model and the routine's state are built: from the run's
checkpoint on resume (weights, routine state, RNG, position in the epoch), or from the seed, with the
run's environment recorded. Either way what was measured on older weights is dropped."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ppgen.inference.base import Routine, State
from ppgen.models.base import Family
from ppgen.store.atomic import atomic_write_text
from ppgen.store.checkpoint import CHECKPOINT, load_checkpoint, load_model_state
from ppgen.store.records import HISTORY, append_jsonl, environment
from ppgen.spec import InferenceSpec, ModelSpec, SpecError
from ppgen.training.distributed import broadcast_parameters
from ppgen.training.metrics_log import truncate_metrics
from ppgen.training.plan import Job
from ppgen.training.rng import set_rng_state


@dataclass
class Position:
    """Where an epoch stands: its index, the batches of it done, and the sum and count of the losses
    those batches measured (the epoch's mean loss spans an interruption)."""

    epoch: int = 0
    batches_done: int = 0
    loss_sum: float = 0.0
    loss_count: int = 0


def restore(fabric: Any, job: Job, spec: ModelSpec, recipe: InferenceSpec, model: Family, routine: Routine,
            state: State, steps: int) -> tuple[State, Position]:
    """Load the run's checkpoint into ``model`` and ``state`` and return where it stopped; a learning
    rate the resume changes is set in the loaded optimizers. Rank 0 records the resume in
    ``history.jsonl`` and cuts ``metrics.jsonl`` back to the checkpoint."""
    out = Path(job.out)
    rank, world = fabric.global_rank, fabric.world_size
    path = out / CHECKPOINT
    ckpt = load_checkpoint(path, spec.family)
    load_model_state(model, ckpt["model"], path)
    new_lrs = [[group["lr"] for group in opt.param_groups] for opt in state.optimizers.values()]
    try:
        state = routine.load_state_dict(state, ckpt["routine"])
    except (KeyError, IndexError, ValueError, TypeError, RuntimeError) as exc:
        raise SpecError(f"{path}: its state does not fit the {recipe.routine} routine ({exc})") from None
    if any(key.endswith(".lr") for key in job.changes):
        # The optimizers were built with the new rates; their loaded state brought back the old ones.
        for opt, lrs in zip(state.optimizers.values(), new_lrs):
            for group, lr in zip(opt.param_groups, lrs):
                group["lr"] = lr
    at = Position(int(ckpt["epoch"]), int(ckpt["batches_done"]), float(ckpt["epoch_loss_sum"]),
                  int(ckpt["epoch_loss_count"]))
    set_rng_state(ckpt["rng"][rank])
    if at.epoch >= job.epochs:  # fit() refuses this before anything is written
        raise SpecError(f"--epochs {job.epochs}: {out} already has {at.epoch} epochs")
    if at.batches_done > steps:
        raise SpecError(f"{path}: records {at.batches_done} batches of epoch {at.epoch + 1} done, but an epoch of "
                        f"this run has {steps}")
    if rank == 0:
        pid = os.getppid() if world > 1 else os.getpid()  # the process the user started
        append_jsonl({"event": "resume", "time": time.strftime("%Y-%m-%d %H:%M:%S"), "pid": pid,
                      "from_epoch": at.epoch, "from_batches_done": at.batches_done, "from_step": state.step,
                      "epochs": job.epochs, "devices": world, "changes": job.changes}, out / HISTORY)
        truncate_metrics(out / "metrics.jsonl", state.step, at.epoch)
        _drop_stale_results(out)
    return state, at


def begin(fabric: Any, job: Job, model: Family, dataset: Any) -> Position:
    """A new run: the same starting weights on every rank, ``env.json`` written, and each rank's own
    Monte Carlo noise seeded."""
    out = Path(job.out)
    rank, world = fabric.global_rank, fabric.world_size
    if world > 1:
        broadcast_parameters(fabric, model)
    if rank == 0:
        env = environment(job.seed, job.extra_env.get("data_checksum", ""), world, job.accelerator)
        if getattr(dataset, "kept", None) is not None:  # data.labels: which training labels were kept
            env["labelled_examples"] = dataset.kept.tolist()
        atomic_write_text(json.dumps(env, indent=2) + "\n", out / "env.json")
        _drop_stale_results(out)
    torch.manual_seed(job.seed * 1000 + rank + 1)  # each rank draws its own Monte Carlo noise
    return Position()


def _drop_stale_results(out: Path) -> None:
    """A run about to change its weights: what was measured on the old ones no longer holds."""
    for name in ("evaluation.json", "idata.nc"):
        (out / name).unlink(missing_ok=True)
