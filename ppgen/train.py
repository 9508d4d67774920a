"""The one training loop: epochs, progress, metrics, checkpoints, resume, data parallelism.

Every routine is driven by :func:`fit` through the two verbs of :mod:`ppgen.inference.base`; only this
module knows about epochs, progress bars, ``metrics.jsonl`` and checkpoint files. Devices and processes
come from Lightning Fabric: with ``devices > 1`` each process takes every ``world_size``-th batch and
the routine averages gradients through :class:`FabricRuntime` before each update, so every rank ends
with the same parameters.

A checkpoint (``checkpoints/last.pt``, written atomically at the end of each epoch and on Ctrl-C)
holds the model, the routine's state (optimizers, persistent chains, ...), the RNG states, the
position (epoch, batches done), and the resolved spec and recipe it was trained with, sealed by a
digest (:mod:`ppgen.runs`). Batches are a pure function of (seed, epoch), so ``resume`` continues
exactly where the run stopped: fitting 2 epochs equals fitting 1 and resuming for 1.

A resume keeps the spec and the recipe the checkpoint records, except for the keys in
:data:`RESUMABLE` (the epochs, the learning rates, gradient clipping, ``log_every``, ``snapshots``):
the way out of a divergence is to continue from the last good checkpoint with a lower learning rate.
Each change is recorded (a ``resumed`` record in ``metrics.jsonl``, a line in ``history.jsonl``); an
unchanged resume is exact. The process writing a run folder holds its lock (:func:`ppgen.runs.run_lock`).
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import sys
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from ppgen import registry
from ppgen.inference.base import Plan
from ppgen.inference.capability import check_fit
from ppgen.runs import (
    CHECKPOINT,
    HISTORY,
    InheritedLock,
    Run,
    append_jsonl,
    atomic_save,
    atomic_write_text,
    check_record,
    describe_diff,
    environment,
    first_nonfinite,
    flat_diff,
    load_checkpoint,
    load_copy,
    load_model_state,
    open_append,
    read_metrics,
    check_unlocked,
    run_lock,
    seal,
    write_yaml,
)
from ppgen.paths import check_output_folder
from ppgen.registry import build, load_recipe, load_spec
from ppgen.spec import InferenceSpec, ModelSpec, SpecError, check_seed, check_snapshots

#: The recipe keys a resume may change (``--epochs``, ``--set inference.KEY=VALUE``, another
#: ``--inference``); any other difference from the recipe the checkpoint records is refused, naming the
#: key. A changed learning rate is set in the optimizers (their moments are kept; a routine's schedule
#: then scales the new rate).
RESUMABLE = (
    "epochs",
    "log_every",
    "snapshots",
    "optimizer.lr",
    "optimizer.clip_norm",
    "discriminator_optimizer.lr",
    "discriminator_optimizer.clip_norm",
)


class TrainingError(RuntimeError):
    """Training cannot go on (a NaN or infinite loss); the message names the step and what to change."""


class Interrupted(Exception):
    """Ctrl-C during training. With ``saved`` the loop saved a checkpoint at the last finished step;
    without, this call saved nothing and the message says what is kept and how to go on."""

    def __init__(self, path: Path, message: str | None = None, saved: bool = True) -> None:
        super().__init__(message or f"interrupted; saved {path}; continue with --resume")
        self.path = path
        self.saved = saved


class FabricRuntime:
    """A routine's view of Fabric: backward, and gradient averaging across processes (one flat
    all-reduce per update, so the cost does not grow with the number of parameter tensors)."""

    def __init__(self, fabric: Any) -> None:
        self.fabric = fabric
        self.device = fabric.device
        self.rank = fabric.global_rank
        self.world_size = fabric.world_size

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def reduce_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        if self.world_size == 1:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        flat = self.fabric.all_reduce(flat, reduce_op="mean")
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()


@dataclass
class Job:
    """Everything a training process needs, as plain data (it crosses process boundaries)."""

    spec: dict[str, Any]
    recipe: dict[str, Any]
    out: str
    seed: int
    epochs: int
    resume: bool
    progress: bool | None
    accelerator: str = "cpu"
    devices: int = 1
    extra_env: dict[str, Any] = field(default_factory=dict)
    changes: dict[str, list[Any]] = field(default_factory=dict)  # what this resume changed: key -> [then, now]
    lock: Any = None  # the folder's lock, handed to spawned workers (an InheritedLock)


@dataclass
class _Plan:
    """A checked request: what to fit into which folder, and for a resume where it starts and what changes."""

    out: Path
    spec: ModelSpec
    recipe: InferenceSpec
    seed: int
    resume: bool = False
    recorded_recipe: InferenceSpec | None = None
    changes: dict[str, list[Any]] = field(default_factory=dict)
    start: dict[str, int] = field(default_factory=dict)
    dataset: Any = None  # loaded while checking, so that it is not loaded twice


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
    the keys in :data:`RESUMABLE` may change, and ``epochs`` may not fall below the epochs already done.
    ``seed`` defaults to 0 for a new run and to the run's own when resuming. ``progress=None`` shows a
    progress bar only on a terminal.
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
    if devices < 1:
        raise SpecError(f"--devices: must be at least 1, got {devices}")
    accel = _accelerator(accelerator)
    most = torch.cuda.device_count() if accel == "cuda" else 1 if accel == "mps" else max(2, os.cpu_count() or 1)
    if devices > most:
        raise SpecError(f"--devices {devices}: at most {most} processes here (one per "
                        f"{'GPU' if accel == 'cuda' else 'device' if accel == 'mps' else 'CPU core'})")
    if resume:
        out_path = _resume_folder(spec, out)
        with run_lock(out_path, "ppgen fit --resume") as lock:
            plan = _resume_plan(out_path, spec, recipe, overrides, recipe_overrides, epochs, seed, devices)
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
    out_path = check_output_folder(Path(out) if out is not None else _default_out(model_spec), "--out")
    _check_new_folder(out_path)

    # Load the data once here: a bad data spec fails fast with exit 2, before anything is written and
    # before any process starts.
    dataset = registry.load_data(model_spec)
    with run_lock(out_path, "ppgen fit") as lock:
        _check_new_folder(out_path)  # again: another process may have fitted into it meanwhile
        plan = _Plan(out_path, model_spec, recipe_obj, 0 if seed is None else seed)
        return _fit_planned(plan, lock, accel, devices, progress, dataset)


def _fit_planned(plan: _Plan, lock: int, accel: str, devices: int, progress: bool | None, dataset: Any = None) -> Run:
    """Write the folder and train, under the folder's lock."""
    try:
        if dataset is None:
            dataset = registry.load_data(plan.spec)
        _write_folder(plan, devices)
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
            _train(_fabric(job), job, dataset)
        else:
            _raise_outcome(_launch(job))
    except KeyboardInterrupt:
        # Ctrl-C before the loop could save (loading, building, starting processes) or a second Ctrl-C.
        raise _interrupted_unsaved(plan) from None
    return Run(plan.out)


def _interrupted_unsaved(plan: _Plan) -> Interrupted:
    last = plan.out / CHECKPOINT
    try:
        ckpt = load_checkpoint(last, plan.spec.family) if last.exists() else None
    except SpecError:
        ckpt = None
    if ckpt is None:
        return Interrupted(last, f"interrupted before the first checkpoint: nothing was saved in {plan.out}; start "
                                 "again with the same command", saved=False)
    where = f"epoch {ckpt['epoch']}, batch {ckpt['batches_done']}, step {ckpt['routine']['step']}"
    return Interrupted(last, f"interrupted before a new checkpoint was written: nothing was saved by this call; "
                             f"{last} ({where}) is kept; continue with: ppgen fit {plan.out} --resume", saved=False)


def _resume_folder(spec: Any, out: str | Path | None) -> Path:
    """The run folder a resume continues: ``spec`` may name it (``ppgen fit RUN --resume``), or ``out``."""
    if isinstance(spec, (str, Path)) and Path(spec).is_dir():
        if out is not None and Path(out).resolve() != Path(spec).resolve():
            raise SpecError(f"--resume: {spec} is a run folder, but --out names another ({out})")
        folder = Path(spec)
    elif out is None:
        if isinstance(spec, (str, Path)) and not Path(spec).exists():
            raise SpecError(f"--resume: {spec}: no such run folder")
        raise SpecError("--resume: say which run to continue with --out RUN (or pass the run folder as the spec)")
    else:
        folder = Path(out)
    if not folder.exists():
        raise SpecError(f"--resume: {folder}: no such run folder, so no checkpoint to resume from; drop --resume "
                        "to start a new run there")
    if not folder.is_dir():
        raise SpecError(f"--resume: {folder} is a file, not a run folder")
    if not (folder / CHECKPOINT).exists():
        if (folder / "spec.yaml").exists():
            raise SpecError(f"--resume: {folder} has no checkpoint to resume from (its fit stopped before saving "
                            "one); drop --resume to start it again")
        raise SpecError(f"--resume: {folder} is not a ppgen run folder (no spec.yaml, no {CHECKPOINT}), so no "
                        "checkpoint to resume from; drop --resume to start a new run there")
    return folder


def _recorded(loader: Any, data: dict[str, Any], path: Path, what: str) -> Any:
    try:
        return loader(data)
    except SpecError as exc:
        raise SpecError(f"{path}: the {what} it records is not valid here: {exc}") from None


def _resume_plan(out: Path, spec: Any, recipe: Any, overrides: list[str] | None, recipe_overrides: list[str] | None,
                 epochs: int | None, seed: int | None, devices: int) -> _Plan | None:
    """Check a resume against what the checkpoint records, before anything is written; None when the
    run already has the epochs asked for and nothing else changes."""
    path = out / CHECKPOINT
    ckpt = load_checkpoint(path)
    spec_then = _recorded(load_spec, ckpt["spec"], path, "spec")
    recipe_then = _recorded(load_recipe, ckpt["recipe"], path, "recipe")
    # The folder's copies say what the checkpoint records: an edit or damage there is not a way to change a run.
    own_spec, own_recipe = out / "spec.yaml", out / "inference.yaml"
    if own_spec.exists():
        check_record(own_spec, load_copy(own_spec, load_spec, path), spec_then, path)
    if own_recipe.exists():
        check_record(own_recipe, load_copy(own_recipe, load_recipe, path), recipe_then, path)
    read_metrics(out / "metrics.jsonl")  # a damaged line is refused now, not after the resume has begun

    is_folder = isinstance(spec, (str, Path)) and Path(spec).is_dir()
    source = (own_spec if own_spec.exists() else ckpt["spec"]) if is_folder else spec
    model_spec = load_spec(source, overrides)
    diff = flat_diff(spec_then.model_dump(mode="json"), model_spec.model_dump(mode="json"))
    if diff:
        raise SpecError(f"--resume: the spec differs from the one {out} was started with (recorded in {path}) in "
                        f"{describe_diff(diff)}; a resumed run keeps its spec")
    family = registry.family(spec_then.family)
    if recipe is None:
        recipe = own_recipe if own_recipe.exists() else ckpt["recipe"]
    recipe_obj = load_recipe(recipe, recipe_overrides, default=family.default_routine)
    if epochs is not None:
        recipe_obj = recipe_obj.model_copy(update={"epochs": epochs})
    check_snapshots(recipe_obj)
    diff = flat_diff(recipe_then.model_dump(mode="json"), recipe_obj.model_dump(mode="json"))
    refused = [d for d in diff if d[0] not in RESUMABLE]
    if refused:
        raise SpecError(f"--resume: the recipe differs from the one {out} was trained with (recorded in {path}) in "
                        f"{describe_diff(refused)}; a resume may change only {', '.join(RESUMABLE)}")
    changes = {k: [a, b] for k, a, b in diff}

    done, part = int(ckpt["epoch"]), int(ckpt["batches_done"])
    target = recipe_obj.epochs
    if target < done or (target == done and part > 0):
        have = f"{done} epochs" + (f" and {part} batches of epoch {done + 1}" if part else "")
        raise SpecError(f"--epochs {target}: {out} already has {have}, and a run cannot go back; pass --epochs "
                        f"{done + 1} or more to continue it")
    if target == done:
        other = [k for k in changes if k != "epochs"]
        if other:
            raise SpecError(f"--resume: {out} already has its {done} epochs, so the change of {', '.join(other)} "
                            f"would apply to nothing; pass --epochs {done + 1} or more to continue it")
        print(f"{out}: already fitted for {done} epochs; raise --epochs to continue", file=sys.stderr)
        return None
    world = int(ckpt["world_size"])
    if world != devices:
        raise SpecError(f"--resume: {out} was fitted with --devices {world}; resume it with --devices {world}")
    # The batches of an epoch are a function of the seed: a resumed run keeps its own.
    if seed is not None and seed != int(ckpt["seed"]):
        raise SpecError(f"--resume: {out} was fitted with --seed {int(ckpt['seed'])}; drop --seed or pass that one")
    # A routine refuses a resume it cannot continue exactly (a schedule planned for another length).
    dataset = registry.load_data(spec_then)
    registry.routine(recipe_obj.routine).check_resume(
        recipe_obj, ckpt["routine"], dataset.steps_per_epoch(spec_then.data.batch_size, devices))
    start = {"epoch": done, "batches_done": part, "step": int(ckpt["routine"]["step"])}
    return _Plan(out, spec_then, recipe_obj, int(ckpt["seed"]), resume=True, recorded_recipe=recipe_then,
                 changes=changes, start=start, dataset=dataset)


def _default_out(spec: ModelSpec) -> Path:
    name = spec.name or spec.family
    bad = (not name or len(name) > 100 or name.startswith(".") or "/" in name or "\\" in name
           or any(unicodedata.category(c)[0] == "C" for c in name))
    if bad:
        raise SpecError(f"name: without --out the run folder is runs/<name>-<time>, so the name must be one plain "
                        f"folder name (no '/' or '\\', not starting with '.', no control characters, at most 100 "
                        f"characters), got {name[:120]!r}; change the name or pass --out")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{name}-{stamp}"


def _accelerator(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda", "gpu", "mps"):
        raise SpecError(f"--device: expected cpu, cuda, mps or auto, got {name!r}")
    if name in ("cuda", "gpu") and not torch.cuda.is_available():
        raise SpecError("--device cuda: no CUDA device is available here; use --device cpu")
    return "cuda" if name == "gpu" else name


def _fabric(job: Job) -> Any:
    from lightning_fabric import Fabric

    if job.devices == 1:
        return Fabric(accelerator=job.accelerator, devices=1)
    from lightning_fabric.strategies import DDPStrategy

    # Spawned processes work from the CLI, scripts and notebooks alike; gloo is the CPU backend.
    backend = "nccl" if job.accelerator == "cuda" else "gloo"
    strategy = DDPStrategy(start_method="spawn", process_group_backend=backend)
    return Fabric(accelerator=job.accelerator, devices=job.devices, strategy=strategy)


def _launch(job: Job) -> tuple[str, str] | None:
    """Run the job in ``job.devices`` spawned processes and return rank 0's outcome. A Ctrl-C reaches
    the workers too (they save and stop together); the parent only waits for them."""
    def forward(signum: int, frame: Any) -> None:
        import multiprocessing

        for child in multiprocessing.active_children():
            os.kill(child.pid, signal.SIGINT)

    previous = signal.signal(signal.SIGINT, forward) if _main_thread() else None
    try:
        return _fabric(job).launch(_train_spawned, job)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _raise_outcome(outcome: tuple[str, str] | None) -> None:
    """Raise in the parent what a worker process stopped with (see :func:`_train_spawned`)."""
    if outcome is None:
        return
    kind, message = outcome
    if kind == "interrupted":
        raise Interrupted(Path(message))
    if kind == "interrupted_unsaved":
        raise KeyboardInterrupt
    raise {"spec": SpecError, "training": TrainingError}[kind](message)


def _check_new_folder(out: Path) -> None:
    """Refuse a new run's folder that cannot take one, before anything is written."""
    if out.is_dir():
        check_unlocked(out)
    if out.is_symlink() and not out.exists():
        raise SpecError(f"--out {out}: a link to nothing ({os.readlink(out)}); choose another --out")
    if out.exists() and not out.is_dir():
        raise SpecError(f"--out {out}: a file of that name exists; choose another --out")
    if (out / CHECKPOINT).exists():
        raise SpecError(f"--out {out}: a fitted run is already there; pass --resume to continue it or choose another --out")
    above = out.parent
    while not above.exists() and above != above.parent:
        above = above.parent
    if above.exists() and not above.is_dir():
        raise SpecError(f"--out {out}: {above} is a file, so no folder can be made under it; choose another --out")


def _write_folder(plan: _Plan, devices: int) -> None:
    out = plan.out
    now = time.strftime("%Y-%m-%d %H:%M:%S")
    if plan.resume:
        # A copy that is missing is written again from the record; a changed recipe is written with the
        # first checkpoint that holds it (until then the folder's copy says what the checkpoint records).
        if not (out / "spec.yaml").exists():
            write_yaml(plan.spec, out / "spec.yaml")
        if not (out / "inference.yaml").exists():
            write_yaml(plan.recorded_recipe, out / "inference.yaml")
        return  # the loop records the resume in history.jsonl once it has loaded the checkpoint
    out.mkdir(parents=True, exist_ok=True)
    write_yaml(plan.spec, out / "spec.yaml")
    write_yaml(plan.recipe, out / "inference.yaml")
    (out / "metrics.jsonl").unlink(missing_ok=True)
    (out / HISTORY).unlink(missing_ok=True)
    append_jsonl({"event": "fit", "time": now, "pid": os.getpid(), "epochs": plan.recipe.epochs, "seed": plan.seed,
                  "devices": devices}, out / HISTORY)


# --------------------------------------------------------------------------- the loop


def _train_spawned(fabric: Any, job: Job) -> tuple[str, str] | None:
    """A worker process: train, and hand how it stopped back to the parent as plain data (exceptions
    would arrive there as a traceback of the child)."""
    try:
        _train(fabric, job, registry.load_data(load_spec(job.spec)))
    except Interrupted as exc:
        return ("interrupted", str(exc.path))
    except KeyboardInterrupt:
        return ("interrupted_unsaved", "")
    except SpecError as exc:
        return ("spec", str(exc))
    except TrainingError as exc:
        return ("training", str(exc))
    finally:
        # Leave together: a rank that exits while another still holds the group can abort in gloo.
        import torch.distributed as tdist

        if tdist.is_initialized():
            tdist.barrier()
            tdist.destroy_process_group()
    return None


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_rng_to_tensor(),
        "python": torch.tensor(_python_rng_to_list(), dtype=torch.int64),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    keys = state["numpy"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys[:-1], int(keys[-1])))
    py = state["python"].tolist()
    random.setstate((py[0], tuple(py[1:-1]), None if py[-1] < 0 else py[-1]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _numpy_rng_to_tensor() -> torch.Tensor:
    _, keys, pos, *_ = np.random.get_state()
    return torch.from_numpy(np.append(keys, pos).astype(np.int64))


def _python_rng_to_list() -> list[int]:
    version, internal, gauss = random.getstate()
    return [version, *internal, -1 if gauss is None else int(gauss)]


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class _StopFlag:
    """The first Ctrl-C asks the loop to stop after the current step; a second one, a second or more
    later, stops at once (a terminal's Ctrl-C and the parent's forwarded one arrive together)."""

    def __init__(self) -> None:
        self.requested = False
        self._when = 0.0
        self._previous: Any = None

    def __enter__(self) -> "_StopFlag":
        if _main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and time.monotonic() - self._when > 1.0:
            raise KeyboardInterrupt
        if not self.requested:
            self.requested, self._when = True, time.monotonic()

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _train(fabric: Any, job: Job, dataset: Any) -> None:
    spec = load_spec(job.spec)
    recipe = load_recipe(job.recipe)
    out = Path(job.out)
    rank, world = fabric.global_rank, fabric.world_size
    device = fabric.device

    seed_all(job.seed)
    model = build(spec, dataset.info).to(device)
    routine = registry.routine(recipe.routine)(recipe, FabricRuntime(fabric))
    batch_size = spec.data.batch_size
    plan = Plan.of(dataset, batch_size, job.epochs, world)
    state = routine.init(model, plan)
    start_epoch, skip, carried = 0, 0, (0.0, 0)
    steps = plan.steps_per_epoch
    if job.resume:
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
        start_epoch, skip = int(ckpt["epoch"]), int(ckpt["batches_done"])
        carried = (float(ckpt["epoch_loss_sum"]), int(ckpt["epoch_loss_count"]))
        set_rng_state(ckpt["rng"][rank])
        if start_epoch >= job.epochs:  # fit() refuses this before anything is written
            raise SpecError(f"--epochs {job.epochs}: {out} already has {start_epoch} epochs")
        if skip > steps:
            raise SpecError(f"{path}: records {skip} batches of epoch {start_epoch + 1} done, but an epoch of this "
                            f"run has {steps}")
        if rank == 0:
            pid = os.getppid() if world > 1 else os.getpid()  # the process the user started
            append_jsonl({"event": "resume", "time": time.strftime("%Y-%m-%d %H:%M:%S"), "pid": pid,
                          "from_epoch": start_epoch, "from_batches_done": skip, "from_step": state.step,
                          "epochs": job.epochs, "devices": world, "changes": job.changes}, out / HISTORY)
            _truncate_metrics(out / "metrics.jsonl", state.step, start_epoch)
            _drop_stale_results(out)
    else:
        if world > 1:
            # Identical starting points on every rank; afterwards averaged gradients keep them equal.
            for p in model.state_dict().values():
                if p.is_floating_point():
                    p.copy_(fabric.broadcast(p, src=0))
        if rank == 0:
            env = environment(job.seed, job.extra_env.get("data_checksum", ""), world, job.accelerator)
            if getattr(dataset, "kept", None) is not None:  # data.labels: which training labels were kept
                env["labelled_examples"] = dataset.kept.tolist()
            atomic_write_text(json.dumps(env, indent=2) + "\n", out / "env.json")
            _drop_stale_results(out)
        # Each rank draws its own Monte Carlo noise.
        torch.manual_seed(job.seed * 1000 + rank + 1)

    show = (sys.stderr.isatty() if job.progress is None else job.progress) and rank == 0
    val_x, val_y = dataset.split("val")
    val_x = val_x.to(device)
    val_y = val_y.to(device) if val_y is not None else None

    recipe_written = not job.changes  # the folder's inference.yaml says what the next checkpoint records

    def save(epoch: int, batches_done: int, loss_sum: float = 0.0, loss_count: int = 0) -> Path:
        nonlocal recipe_written
        rngs = [rng_state()]
        if world > 1:
            rngs = _gather(fabric, rngs[0])
        routine_state = routine.state_dict(state)
        # Never a non-finite checkpoint: it would be resumed from, evaluated and called good.
        bad = first_nonfinite({"model": model.state_dict(), "routine": routine_state})
        if world > 1:
            bad = next((b for b in _gather(fabric, bad) if b), None)
        if bad:
            raise fail(f"the tensor {bad} is not finite at epoch {epoch + (batches_done > 0)}, batch {batches_done} "
                       f"(step {state.step})")
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
            if not recipe_written:
                write_yaml(job.recipe, out / "inference.yaml")
                recipe_written = True
            if batches_done == 0 and epoch in recipe.snapshots:
                atomic_save(seal({"model": ckpt["model"], "epoch": epoch, "family": spec.family}),
                            out / f"checkpoints/epoch-{epoch:04d}.pt")
        return out / CHECKPOINT

    def fail(why: str) -> TrainingError:
        last = out / CHECKPOINT
        lr = recipe.optimizer.lr
        lower = f"--set inference.optimizer.lr={lr / 10:g} (now {lr:g}) or --set inference.optimizer.clip_norm=1.0"
        if not last.exists():
            return TrainingError(f"{why}; training stopped and no checkpoint was written. Start again with a lower "
                                 f"learning rate or gradient clipping: {lower}")
        try:
            good = load_checkpoint(last, spec.family)
        except SpecError as exc:
            return TrainingError(f"{why}; training stopped, and the checkpoint on disk does not pass its checks "
                                 f"either ({exc}); fit the run again with {lower}")
        where = f"epoch {good['epoch']}, batch {good['batches_done']}, step {good['routine']['step']}"
        return TrainingError(f"{why}; training stopped and the last good checkpoint ({last}: {where}) is kept. "
                             f"Continue from it with a lower learning rate or gradient clipping: "
                             f"ppgen fit {out} --resume --epochs {job.epochs} {lower}")

    guard = _UpdateGuard(model, routine, recipe.routine)
    with _StopFlag() as stop, _MetricsLog(out / "metrics.jsonl", enabled=rank == 0) as log:
        if job.resume:
            log.write({"kind": "resumed", "epoch": start_epoch, "step": state.step, "batches_done": skip,
                       "changes": job.changes})
        for epoch in range(start_epoch, job.epochs):
            t0 = time.perf_counter()
            guard.start(state.step)
            bar = _progress(show, steps, f"epoch {epoch + 1}/{job.epochs}", initial=skip)
            loss_sum, loss_count = carried
            carried = (0.0, 0)
            done, shown = skip, None
            for batch in dataset.batches(epoch, batch_size, job.seed, rank=rank, world_size=world, skip=skip):
                batch = tuple(t.to(device) if isinstance(t, torch.Tensor) else t for t in batch)
                state, info = routine.step(state, batch)
                done += 1
                loss = info.get("loss")  # a routine may measure it on some steps only
                bad, halt = loss is not None and not math.isfinite(loss), stop.requested
                if world > 1:
                    # Every rank must take the same branch, or the next collective call waits forever.
                    flags = fabric.all_reduce(torch.tensor([float(bad), float(halt)], device=device), reduce_op="sum")
                    bad, halt = bool(flags[0] > 0), bool(flags[1] > 0)
                if bad:
                    bar.close()
                    raise fail(f"the loss is {loss} at epoch {epoch + 1}, batch {done} (step {state.step})")
                if guard.first:
                    guard.check_first(state)
                if loss is not None:
                    loss_sum, loss_count, shown = loss_sum + loss, loss_count + 1, loss
                if state.step % recipe.log_every == 0:
                    log.write({"kind": "train", "epoch": epoch + 1, "step": state.step, **info})
                bar.update(1)
                if show and done % 10 == 0 and shown is not None:
                    bar.set_postfix(loss=f"{shown:.3f}")
                if halt:
                    bar.close()
                    if not _all_finite(model):  # possible when this step's loss was not measured
                        raise fail(f"the parameters are not finite at epoch {epoch + 1}, batch {done} (step {state.step})")
                    raise Interrupted(save(epoch, done, loss_sum, loss_count))
            bar.close()
            guard.check_epoch(state, epoch + 1)
            train_s = time.perf_counter() - t0
            skip = 0
            record: dict[str, Any] = {"kind": "epoch", "epoch": epoch + 1, "step": state.step}
            record["loss"] = _mean_across(fabric, loss_sum, loss_count)
            if rank == 0:
                with torch.no_grad(), torch.random.fork_rng(devices=[]):
                    record.update(routine.validate(state, val_x, val_y))
            finite = _all_finite(model) and all(math.isfinite(v) for v in record.values() if isinstance(v, float))
            if world > 1:
                # Averaged gradients keep the ranks in step; say so in the record, and stop if they are not.
                digests = _gather(fabric, _param_digest(model))
                record["rank_param_digests"] = digests
                finite = all(_gather(fabric, finite))
                if len(set(digests)) != 1:
                    raise TrainingError(f"the {world} processes hold different parameters after epoch {epoch + 1}")
            record["train_time_s"] = train_s
            record["time_s"] = time.perf_counter() - t0
            log.write(record)
            if not finite:
                raise fail(f"after epoch {epoch + 1} (step {state.step}) the parameters or the validation loss are "
                           "not finite")
            if show:
                extra = f", val {record['val_loss']:.3f}" if "val_loss" in record else ""
                print(f"epoch {epoch + 1}: loss {record['loss']:.3f}{extra} ({record['time_s']:.1f} s)", file=sys.stderr)
            save(epoch + 1, 0)
            if routine.finished(state):
                break


class _UpdateGuard:
    """A run that trains nothing is an error. The parameters are copied when an epoch starts; the first
    step this process takes must change at least one parameter the routine trains, and by the end of
    each epoch every group of parameters the routine's steps were meant to change
    (``trained_parameters``) must have at least one that changed, or be converged rather than cut off.
    A parameter that did not change in an epoch is cut off when no gradient reached it (its ``grad`` is
    None), when none of the routine's optimizers steps it, or when its gradient is zero and it has not
    changed since this process began training. One that an optimizer steps with a gradient, and that
    moved before or has a non-zero gradient, has converged (a full-batch fit at its optimum takes steps
    below float resolution) and is not an error."""

    def __init__(self, model: torch.nn.Module, routine: Any, name: str) -> None:
        self.model, self.routine, self.name = model, routine, name
        self.first = True
        self.since = 0
        self.before: dict[str, torch.Tensor] = {}
        self.moved: set[str] = set()

    def start(self, step: int) -> None:
        self.since = step
        self.before = {n: p.detach().clone() for n, p in self.model.named_parameters()}

    def _changed(self, names: list[str]) -> bool:
        params = dict(self.model.named_parameters())
        changed = {n for n in names if not torch.equal(self.before[n], params[n].detach())}
        self.moved |= changed
        return bool(changed)

    def _cut_off(self, state: Any, names: list[str]) -> bool:
        """True when no parameter of an unchanged group can be called converged (see the class doc)."""
        params = dict(self.model.named_parameters())
        stepped = {id(q) for opt in (getattr(state, "optimizers", None) or {}).values()
                   for group in opt.param_groups for q in group["params"]}
        for n in names:
            grad = params[n].grad
            if grad is None or id(params[n]) not in stepped:
                continue  # no gradient reached it, or no optimizer steps it
            if n in self.moved or bool(grad.detach().ne(0).any()):
                return False
        return True

    def _why(self, state: Any, names: list[str]) -> str:
        """Why the parameters did not change: cut off from the objective, or updates too small to show in
        their precision (a learning rate far too small, or weights that had already diverged)."""
        params = dict(self.model.named_parameters())
        stepped = {id(q) for opt in (getattr(state, "optimizers", None) or {}).values()
                   for group in opt.param_groups for q in group["params"]}
        reached = [n for n in names if params[n].grad is not None and id(params[n]) in stepped
                   and bool(params[n].grad.detach().ne(0).any())]
        if not reached or len(reached) < len(names):
            return _NOTHING_LEARNED
        largest = max(float(params[n].detach().abs().max()) for n in reached)
        rates = sorted({float(g["lr"]) for opt in state.optimizers.values() for g in opt.param_groups if "lr" in g})
        lr = f" (learning rate {', '.join(f'{r:g}' for r in rates)})" if rates else ""
        why = ("the weights had already diverged before this point: start the run again with a lower learning "
               "rate" if largest > 1e6 else "the learning rate is far too small for them: raise optimizer.lr")
        return (f"they have non-zero gradients and their optimizer steps them, but each update{lr} is below the "
                f"precision of the weights, which reach {largest:.3g} in magnitude; {why}")

    def check_first(self, state: Any) -> None:
        self.first = False
        names = [n for group in self.routine.trained_parameters(state, self.since).values() for n in group]
        if names and not self._changed(names):
            raise TrainingError(f"routine {self.name!r}: step {state.step} changed none of the parameters it "
                                f"trains ({_listing(names)}); " + self._why(state, names))

    def check_epoch(self, state: Any, epoch: int) -> None:
        groups = self.routine.trained_parameters(state, self.since)
        stuck = [n for label, names in groups.items() if names and not self._changed(names) and self._cut_off(state, names)
                 for n in names]
        if stuck:
            raise TrainingError(f"routine {self.name!r}: no step of epoch {epoch} (steps {self.since + 1} to "
                                f"{state.step}) changed {_listing(stuck)}; " + self._why(state, stuck))


_NOTHING_LEARNED = ("their gradient is zero or the update never reaches them, so the fit would learn nothing "
                    "there. Check that the objective uses them (for SVI: the family's model and guide, or its "
                    "fused loss)")


def _listing(names: list[str], at_most: int = 8) -> str:
    shown = ", ".join(names[:at_most])
    return shown if len(names) <= at_most else f"{shown} and {len(names) - at_most} more"


def _all_finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.state_dict().values() if p.is_floating_point())


def _drop_stale_results(out: Path) -> None:
    """A run about to change its weights: what was measured on the old ones no longer holds."""
    for name in ("evaluation.json", "idata.nc"):
        (out / name).unlink(missing_ok=True)


def _truncate_metrics(path: Path, step: int, epoch: int) -> None:
    """Drop the records written after the checkpoint (a run stopped by a NaN goes on logging until it
    stops), so that a resumed run's metrics read as one run's."""
    from ppgen.runs import read_metrics

    keep = [m for m in read_metrics(path) if m.get("step", 0) <= step and (m.get("kind") != "epoch" or m["epoch"] <= epoch)]
    atomic_write_text("".join(json.dumps(m) + "\n" for m in keep), path)


def _gather(fabric: Any, obj: Any) -> list[Any]:
    import torch.distributed as tdist

    out: list[Any] = [None] * fabric.world_size
    tdist.all_gather_object(out, obj)
    return out


def _param_digest(model: torch.nn.Module) -> str:
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _mean_across(fabric: Any, total: float, count: int) -> float:
    both = torch.tensor([total, float(count)], dtype=torch.float64)
    if fabric.world_size > 1:
        both = fabric.all_reduce(both, reduce_op="sum")
    return float(both[0] / both[1]) if both[1] > 0 else float("nan")


class _MetricsLog:
    """``metrics.jsonl``, appended a line a record; numbers that are not finite are written as null
    (JSON has no NaN)."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self._f = open_append(path) if enabled else None

    def __enter__(self) -> "_MetricsLog":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._f is not None:
            self._f.close()

    def write(self, record: dict[str, Any]) -> None:
        if self._f is not None:
            clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
            self._f.write(json.dumps(clean) + "\n")
            self._f.flush()


class _NoBar:
    def update(self, n: int = 1) -> None: ...

    def set_postfix(self, **kw: Any) -> None: ...

    def close(self) -> None: ...


def _progress(show: bool, total: int, desc: str, initial: int = 0) -> Any:
    if not show:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, initial=initial, leave=False, dynamic_ncols=True, file=sys.stderr)
