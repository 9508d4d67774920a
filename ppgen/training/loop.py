"""The one training loop: epochs, progress, metrics, checkpoints, resume, data parallelism.

Every routine is driven by :func:`fit` through the two verbs of :mod:`ppgen.inference.base`; only this
package knows about epochs, progress bars, ``metrics.jsonl`` and checkpoint files. Devices and processes
come from Lightning Fabric: with ``devices > 1`` each process takes every ``world_size``-th batch and
the routine averages gradients through :class:`FabricRuntime` before each update, so every rank ends
with the same parameters.

A checkpoint (``checkpoints/last.pt``, written atomically at the end of each epoch and on Ctrl-C)
holds the model, the routine's state (optimizers, persistent chains, ...), the RNG states, the
position (epoch, batches done), and the resolved spec and recipe it was trained with, sealed by a
digest (:mod:`ppgen.store.checkpoint`). Batches are a pure function of (seed, epoch), so ``resume`` continues
exactly where the run stopped: fitting 2 epochs equals fitting 1 and resuming for 1.

A resume keeps the spec and the recipe the checkpoint records, except for the keys in
:data:`~ppgen.training.plan.RESUMABLE` (the epochs, the learning rates, gradient clipping, ``log_every``, ``snapshots``):
the way out of a divergence is to continue from the last good checkpoint with a lower learning rate.
Each change is recorded (a ``resumed`` record in ``metrics.jsonl``, a line in ``history.jsonl``); an
unchanged resume is exact. The process writing a run folder holds its lock (:func:`ppgen.store.lock.run_lock`).
While the epochs run, subnormal floats are flushed to zero in the training thread and the caller's mode is
put back after (:mod:`ppgen.training.subnormals`: on x86 CPUs they can make a step several times slower).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ppgen import registry
from ppgen.inference.base import Plan, Routine, State
from ppgen.inference.capability import check_fit
from ppgen.models.base import Family
from ppgen.paths import check_output_folder
from ppgen.progress import Phase, phase
from ppgen.registry import build, load_recipe, load_spec
from ppgen.store.folder import Run
from ppgen.store.lock import InheritedLock, run_lock
from ppgen.spec import InferenceSpec, ModelSpec, SpecError, check_seed, check_snapshots
from ppgen.training.checkpointer import Checkpointer
from ppgen.training.distributed import (FabricRuntime, any_rank, choose_accelerator, fabric_for, gather, launch,
                                        mean_across, param_digest)
from ppgen.training.errors import Interrupted, TrainingError
from ppgen.training.guard import UpdateGuard, all_finite
from ppgen.training.metrics_log import MetricsLog
from ppgen.training.plan import (FitPlan, Job, check_new_folder, default_out, interrupted_unsaved, resume_folder,
                                 resume_plan, write_folder)
from ppgen.training.rng import seed_all
from ppgen.training.subnormals import flushing_subnormals
from ppgen.training.signals import StopFlag
from ppgen.training.start import Position, begin, restore


# --------------------------------------------------------------------------- public entry point


def fit(
    spec: str | Path | dict | ModelSpec,
    recipe: str | Path | dict | InferenceSpec | None = None,
    *,
    out: str | Path | None = None,
    epochs: int | None = None,
    seed: int | None = None,
    resume: bool = False,
    overrides: list[str] | None = None,
    recipe_overrides: list[str] | None = None,
    devices: int = 1,
    accelerator: str = "auto",
    progress: bool | None = None,
) -> Run:
    """Fit a model spec with an inference recipe and return the opened run folder.

    ``spec`` and ``recipe`` are YAML paths, dicts or spec objects; ``recipe=None`` takes the family's
    default routine with its defaults. ``epochs`` overrides the recipe. ``out`` defaults to
    ``runs/<name>-<time>`` (``name`` must then be a plain folder name). With ``resume`` the run at
    ``out`` continues from its last checkpoint up to ``epochs``, with the spec and recipe its checkpoint
    records (``spec`` may then be the run folder itself, and ``recipe=None`` means the run's own); only
    the keys in :data:`~ppgen.training.plan.RESUMABLE` may change, and ``epochs`` may not fall below the epochs already done.
    ``seed`` defaults to 0 for a new run and to the run's own when resuming. ``progress`` shows on stderr a
    bar on a terminal and elsewhere (a notebook, a log file) a plain line every 10 to 30 s within an epoch
    (:mod:`ppgen.progress`), with a line at the end of each epoch; ``None`` shows them on a terminal only.
    """
    try:
        return _fit(spec, recipe, out=out, epochs=epochs, seed=seed, resume=resume, overrides=overrides,
                    recipe_overrides=recipe_overrides, devices=devices, accelerator=accelerator, progress=progress)
    except KeyboardInterrupt:  # before any run folder was touched (reading the spec, loading the data)
        raise Interrupted(Path(out) if out is not None else Path("."), "interrupted before anything was written: "
                          "nothing was saved; start again with the same command", saved=False) from None


def _fit(spec: Any, recipe: Any, *, out: str | Path | None, epochs: int | None, seed: int | None, resume: bool,
         overrides: list[str] | None, recipe_overrides: list[str] | None, devices: int, accelerator: str,
         progress: bool | None) -> Run:
    if epochs is not None and epochs < 1:
        raise SpecError(f"--epochs: must be at least 1, got {epochs}")
    if seed is not None:
        check_seed(seed)
    accel = choose_accelerator(accelerator, devices)
    if resume:
        out_path = resume_folder(spec, out)
        with run_lock(out_path, "ppgen fit --resume") as lock:
            plan = resume_plan(out_path, spec, recipe, overrides, recipe_overrides, epochs, seed, devices)
            if plan is None:
                return Run(out_path)
            return _fit_planned(plan, lock, accel, devices, progress, plan.dataset)
    model_spec = load_spec(spec, overrides)
    family = registry.family(model_spec.family)
    recipe_obj = load_recipe(recipe, recipe_overrides, default=family.default_routine)
    check_fit(family, recipe_obj)
    if epochs is not None:
        recipe_obj = recipe_obj.model_copy(update={"epochs": epochs})
    check_snapshots(recipe_obj)
    out_path = check_output_folder(Path(out) if out is not None else default_out(model_spec), "--out")
    check_new_folder(out_path)

    # Load the data once here: a bad data spec fails fast with exit 2, before anything is written and
    # before any process starts.
    dataset = registry.load_data(model_spec)
    with run_lock(out_path, "ppgen fit") as lock:
        check_new_folder(out_path)  # again: another process may have fitted into it meanwhile
        plan = FitPlan(out_path, model_spec, recipe_obj, 0 if seed is None else seed)
        return _fit_planned(plan, lock, accel, devices, progress, dataset)


def _fit_planned(plan: FitPlan, lock: int, accel: str, devices: int, progress: bool | None, dataset: Any = None) -> Run:
    """Write the folder and train, under the folder's lock."""
    try:
        if dataset is None:
            dataset = registry.load_data(plan.spec)
        write_folder(plan, devices)
        job = Job(
            spec=plan.spec.model_dump(mode="json"),
            recipe=plan.recipe.model_dump(mode="json"),
            out=str(plan.out),
            seed=plan.seed,
            epochs=plan.recipe.epochs,
            resume=plan.resume,
            progress=progress,
            accelerator=accel,
            devices=devices,
            extra_env={"data_checksum": dataset.checksum},
            changes=plan.changes,
            lock=InheritedLock(lock) if devices > 1 else None,
        )
        if devices == 1:
            _train(fabric_for(job), job, dataset)
        else:
            launch(job, _train)
    except KeyboardInterrupt:
        # Ctrl-C before the loop could save (loading, building, starting processes) or a second Ctrl-C.
        raise interrupted_unsaved(plan) from None
    return Run(plan.out)


# --------------------------------------------------------------------------- the loop


def _train(fabric: Any, job: Job, dataset: Any) -> None:
    """One training process: build the model and the routine's state, start from the seed or the run's
    checkpoint, then train epoch by epoch, checkpointing after each."""
    spec, recipe = load_spec(job.spec), load_recipe(job.recipe)
    seed_all(job.seed)
    model = build(spec, dataset.info).to(fabric.device)
    routine = registry.routine(recipe.routine)(recipe, FabricRuntime(fabric))
    plan = Plan.of(dataset, spec.data.batch_size, job.epochs, fabric.world_size)
    state = routine.init(model, plan)
    if job.resume:
        state, at = restore(fabric, job, spec, recipe, model, routine, state, plan.steps_per_epoch)
    else:
        at = begin(fabric, job, model, dataset)
    rank, at_start = fabric.global_rank, at.epoch
    show = (sys.stderr.isatty() if job.progress is None else job.progress) and rank == 0
    val_x, val_y = dataset.split("val")
    val = (val_x.to(fabric.device), val_y.to(fabric.device) if val_y is not None else None)
    with StopFlag() as stop, MetricsLog(Path(job.out) / "metrics.jsonl", enabled=rank == 0) as log, \
            flushing_subnormals():
        loop = _Loop(fabric, job, recipe, model, routine, dataset, spec.data.batch_size, plan.steps_per_epoch, val,
                     show, Checkpointer(fabric, job, spec, recipe, model, routine),
                     UpdateGuard(model, routine, recipe.routine), log, stop)
        if job.resume:
            log.write({"kind": "resumed", "epoch": at.epoch, "step": state.step, "batches_done": at.batches_done,
                       "changes": job.changes})
        for epoch in range(at.epoch, job.epochs):
            t0 = time.perf_counter()
            loop.guard.start(state.step)
            state, at = _run_epoch(loop, state, at, announce=epoch == at_start)
            _end_epoch(loop, state, at, t0, announce=epoch == at_start)
            if routine.finished(state):
                break
            at = Position(epoch + 1)


@dataclass
class _Loop:
    """What every step and epoch of one training process works with."""

    fabric: Any
    job: Job
    recipe: InferenceSpec
    model: Family
    routine: Routine
    dataset: Any
    batch_size: int
    steps: int  # batches per epoch on this rank
    val: tuple[torch.Tensor, torch.Tensor | None]
    show: bool  # progress (a bar on a terminal, plain lines elsewhere) and a line per epoch on stderr
    checkpoints: Checkpointer
    guard: UpdateGuard
    log: MetricsLog
    stop: StopFlag


def _run_epoch(loop: _Loop, state: State, at: Position, announce: bool = False) -> tuple[State, Position]:
    """The batches of epoch ``at.epoch + 1`` from ``at.batches_done`` on; returns the state and where
    the epoch ends, with its losses. Ctrl-C saves after the step it arrives in and raises
    :class:`Interrupted`. With ``announce`` (the first epoch this process trains) a long epoch's estimated
    length is said after its first steps. The estimates are of the steps: validation follows them
    (:func:`_validate`)."""
    with phase(f"epoch {at.epoch + 1}/{loop.job.epochs}", loop.steps, "steps", show=loop.show,
               initial=at.batches_done, announce=announce and loop.show, closing=False, part="the steps") as bar:
        return _epoch_steps(loop, state, at, bar)


def _epoch_steps(loop: _Loop, state: State, at: Position, bar: Phase) -> tuple[State, Position]:
    fabric, job, epoch = loop.fabric, loop.job, at.epoch
    at, shown = replace(at), None
    for batch in loop.dataset.batches(epoch, loop.batch_size, job.seed, rank=fabric.global_rank,
                                      world_size=fabric.world_size, skip=at.batches_done):
        batch = tuple(t.to(fabric.device) if isinstance(t, torch.Tensor) else t for t in batch)
        state, info = loop.routine.step(state, batch)
        at.batches_done += 1
        loss = info.get("loss")  # a routine may measure it on some steps only
        halt = _check_step(loop, state, loss, at, bar)
        if loss is not None:
            at.loss_sum, at.loss_count, shown = at.loss_sum + loss, at.loss_count + 1, loss
        if state.step % loop.recipe.log_every == 0:
            loop.log.write({"kind": "train", "epoch": epoch + 1, "step": state.step, **info})
        bar.update(at.batches_done)
        if loop.show and at.batches_done % 10 == 0 and shown is not None:
            bar.postfix(loss=f"{shown:.3f}")
        if halt:
            bar.close()
            if not all_finite(loop.model):  # possible when this step's loss was not measured
                raise loop.checkpoints.failure(f"the parameters are not finite at epoch {epoch + 1}, batch "
                                               f"{at.batches_done} (step {state.step})")
            raise Interrupted(loop.checkpoints.save(state, epoch, at.batches_done, at.loss_sum, at.loss_count))
    return state, at


def _check_step(loop: _Loop, state: State, loss: float | None, at: Position, bar: Phase) -> bool:
    """Stop the fit on a loss that is not finite, and on a first step that changed nothing; returns
    whether Ctrl-C asks to stop. Every rank takes the same branch."""
    bad, halt = loss is not None and not math.isfinite(loss), loop.stop.requested
    if loop.fabric.world_size > 1:
        bad, halt = any_rank(loop.fabric, bad, halt)
    if bad:
        bar.close()
        raise loop.checkpoints.failure(f"the loss is {loss} at epoch {at.epoch + 1}, batch {at.batches_done} "
                                       f"(step {state.step})")
    if loop.guard.first:
        loop.guard.check_first(state)
    return halt


def _end_epoch(loop: _Loop, state: State, at: Position, t0: float, announce: bool = False) -> None:
    """Check that the epoch trained something, validate, write the epoch's record and checkpoint it; stop
    the fit if the parameters or the validation loss are not finite, or the ranks disagree."""
    fabric, model, epoch = loop.fabric, loop.model, at.epoch + 1
    loop.guard.check_epoch(state, epoch)
    train_s = time.perf_counter() - t0
    record: dict[str, Any] = {"kind": "epoch", "epoch": epoch, "step": state.step}
    record["loss"] = mean_across(fabric, at.loss_sum, at.loss_count)
    if fabric.global_rank == 0:
        record.update(_validate(loop, state, epoch, announce))
    finite = all_finite(model) and all(math.isfinite(v) for v in record.values() if isinstance(v, float))
    if fabric.world_size > 1:
        # Averaged gradients keep the ranks in step; say so in the record, and stop if they are not.
        digests = gather(fabric, param_digest(model))
        record["rank_param_digests"] = digests
        finite = all(gather(fabric, finite))
        if len(set(digests)) != 1:
            raise TrainingError(f"the {fabric.world_size} processes hold different parameters after epoch {epoch}")
    record["train_time_s"] = train_s
    record["time_s"] = time.perf_counter() - t0
    loop.log.write(record)
    if not finite:
        raise loop.checkpoints.failure(f"after epoch {epoch} (step {state.step}) the parameters or the validation "
                                       "loss are not finite")
    if loop.show:
        extra = f", val {record['val_loss']:.3f}" if "val_loss" in record else ""
        print(f"epoch {epoch}: loss {record['loss']:.3f}{extra} ({record['time_s']:.1f} s)", file=sys.stderr)
    loop.checkpoints.save(state, epoch, 0)


def _validate(loop: _Loop, state: State, epoch: int, announce: bool) -> dict[str, Any]:
    """The routine's numbers on the validation split, without gradients and with the RNG forked. The pass
    is a progress phase of its own (``epoch 3/20 validation``: a bar on a terminal, plain lines elsewhere)
    that the routine's batches report to (:func:`ppgen.inference.base.validation_batches`); with
    ``announce`` a long one's estimated length is said after its first batch. Showing progress changes
    nothing that is computed."""
    with phase(f"epoch {epoch}/{loop.job.epochs} validation", None, "batches", show=loop.show,
               announce=announce and loop.show, closing=False):
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            return loop.routine.validate(state, *loop.val)
