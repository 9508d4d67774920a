"""Checkpoints of a training process: ``checkpoints/last.pt`` (sealed, written atomically, never with
a tensor that is not finite), the epoch snapshots a recipe asks for, and the message that stops a fit
naming the last good checkpoint to continue from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ppgen.inference.base import Routine, State
from ppgen.models.base import Family
from ppgen.store.atomic import atomic_save
from ppgen.store.checkpoint import CHECKPOINT, first_nonfinite, load_checkpoint, seal
from ppgen.store.records import write_yaml
from ppgen.spec import InferenceSpec, ModelSpec, SpecError
from ppgen.training.distributed import gather
from ppgen.training.errors import TrainingError
from ppgen.training.plan import Job
from ppgen.training.rng import rng_state


class Checkpointer:
    """Saves what a resume needs (model, routine state, RNG of every rank, position in the epoch, spec
    and recipe) from the training process of every rank; rank 0 writes."""

    def __init__(self, fabric: Any, job: Job, spec: ModelSpec, recipe: InferenceSpec, model: Family,
                 routine: Routine) -> None:
        self.fabric, self.job, self.spec, self.recipe = fabric, job, spec, recipe
        self.model, self.routine = model, routine
        self.out = Path(job.out)
        self.recipe_written = not job.changes  # the folder's inference.yaml says what the next checkpoint records

    def save(self, state: State, epoch: int, batches_done: int, loss_sum: float = 0.0, loss_count: int = 0) -> Path:
        """Checkpoint ``state`` after ``batches_done`` batches of epoch ``epoch + 1`` (0: the end of epoch
        ``epoch``), with the epoch's losses so far; returns the checkpoint's path."""
        fabric, job, spec, model, out = self.fabric, self.job, self.spec, self.model, self.out
        rank, world = fabric.global_rank, fabric.world_size
        rngs = [rng_state()]
        if world > 1:
            rngs = gather(fabric, rngs[0])
        routine_state = self.routine.state_dict(state)
        # Never a non-finite checkpoint: it would be resumed from, evaluated and called good.
        bad = first_nonfinite({"model": model.state_dict(), "routine": routine_state})
        if world > 1:
            bad = next((b for b in gather(fabric, bad) if b), None)
        if bad:
            raise self.failure(f"the tensor {bad} is not finite at epoch {epoch + (batches_done > 0)}, batch "
                               f"{batches_done} (step {state.step})")
        if rank == 0:
            ckpt = seal({
                "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "routine": routine_state,
                "epoch": epoch,
                "batches_done": batches_done,
                "epoch_loss_sum": float(loss_sum),
                "epoch_loss_count": loss_count,
                "rng": rngs,
                "world_size": world,
                "seed": job.seed,
                "family": spec.family,
                "spec": job.spec,
                "recipe": job.recipe,
            })
            atomic_save(ckpt, out / CHECKPOINT)
            if not self.recipe_written:
                write_yaml(job.recipe, out / "inference.yaml")
                self.recipe_written = True
            if batches_done == 0 and epoch in self.recipe.snapshots:
                atomic_save(seal({"model": ckpt["model"], "epoch": epoch, "family": spec.family}),
                            out / f"checkpoints/epoch-{epoch:04d}.pt")
        return out / CHECKPOINT

    def failure(self, why: str) -> TrainingError:
        """The error that stops the fit: ``why``, and how to go on from the last good checkpoint."""
        out, last = self.out, self.out / CHECKPOINT
        lr = self.recipe.optimizer.lr
        lower = f"--set inference.optimizer.lr={lr / 10:g} (now {lr:g}) or --set inference.optimizer.clip_norm=1.0"
        if not last.exists():
            return TrainingError(f"{why}; training stopped and no checkpoint was written. Start again with a lower "
                                 f"learning rate or gradient clipping: {lower}")
        try:
            good = load_checkpoint(last, self.spec.family)
        except SpecError as exc:
            return TrainingError(f"{why}; training stopped, and the checkpoint on disk does not pass its checks "
                                 f"either ({exc}); fit the run again with {lower}")
        where = f"epoch {good['epoch']}, batch {good['batches_done']}, step {good['routine']['step']}"
        return TrainingError(f"{why}; training stopped and the last good checkpoint ({last}: {where}) is kept. "
                             f"Continue from it with a lower learning rate or gradient clipping: "
                             f"ppgen fit {out} --resume --epochs {self.job.epochs} {lower}")
