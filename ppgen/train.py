"""The one training loop: epochs, progress, metrics, checkpoints, resume, data parallelism.

Every routine is driven by :func:`fit` through the two verbs of :mod:`ppgen.inference.base`; only this
module knows about epochs, progress bars, ``metrics.jsonl`` and checkpoint files. Devices and processes
come from Lightning Fabric: with ``devices > 1`` each process takes every ``world_size``-th batch and
the routine averages gradients through :class:`FabricRuntime` before each update, so every rank ends
with the same parameters.

A checkpoint (``checkpoints/last.pt``, written atomically at the end of each epoch and on Ctrl-C)
holds the model, the routine's state (optimizers, persistent chains, ...), the RNG states and the
position (epoch, batches done). Batches are a pure function of (seed, epoch), so ``resume`` continues
exactly where the run stopped: fitting 2 epochs equals fitting 1 and resuming for 1.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from ppgen import registry
from ppgen.runs import CHECKPOINT, Run, atomic_save, atomic_write_text, environment, load_checkpoint
from ppgen.spec import InferenceSpec, ModelSpec, SpecError, dump_yaml, load_recipe, load_spec


class TrainingError(RuntimeError):
    """Training cannot go on (a NaN or infinite loss); the message names the step and what to change."""


class Interrupted(Exception):
    """Ctrl-C during training: the loop saved a checkpoint at the last finished step."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"interrupted; saved {path}; continue with --resume")
        self.path = path


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
    ``runs/<name>-<time>``. With ``resume`` the run at ``out`` continues from its last checkpoint up to
    ``epochs``, with the spec and recipe it was started with (``spec`` may then be the run folder itself,
    and ``recipe=None`` means the run's own); only ``epochs`` may change. ``seed`` defaults to 0 for a
    new run and to the run's own when resuming. ``progress=None`` shows a progress bar only on a terminal.
    """
    if resume:
        spec, out = _resume_sources(spec, out)
        if recipe is None:
            recipe = Path(out) / "inference.yaml"
    model_spec = load_spec(spec, overrides)
    family = registry.family(model_spec.family)
    recipe_obj = load_recipe(recipe, recipe_overrides, default=family.default_routine)
    if epochs is not None:
        if epochs < 1:
            raise SpecError(f"--epochs: must be at least 1, got {epochs}")
        recipe_obj = recipe_obj.model_copy(update={"epochs": epochs})
    if devices < 1:
        raise SpecError(f"--devices: must be at least 1, got {devices}")
    accel = _accelerator(accelerator)
    out_path = Path(out) if out is not None else _default_out(model_spec)
    seed = _check_folder(out_path, model_spec, recipe_obj, resume, devices, seed)

    # Load the data once here: a bad data spec fails fast with exit 2, before anything is written and
    # before any process starts.
    from ppgen import data as data_mod

    dataset = data_mod.load(model_spec.data)
    if resume:  # a routine refuses a resume it cannot continue exactly, before the folder is touched
        registry.routine(recipe_obj.routine).check_resume(
            recipe_obj, load_checkpoint(out_path / CHECKPOINT)["routine"],
            dataset.steps_per_epoch(model_spec.data.batch_size, devices))
    _write_folder(out_path, model_spec, recipe_obj, resume)
    job = Job(
        spec=model_spec.model_dump(mode="json"),
        recipe=recipe_obj.model_dump(mode="json"),
        out=str(out_path),
        seed=seed,
        epochs=recipe_obj.epochs,
        resume=resume,
        progress=progress,
        accelerator=accel,
        devices=devices,
        extra_env={"data_checksum": dataset.checksum},
    )
    if devices == 1:
        _train(_fabric(job), job, dataset)
    else:
        _raise_outcome(_launch(job))
    return Run(out_path)


def _resume_sources(spec: Any, out: str | Path | None) -> tuple[Any, Path]:
    """With ``resume``, ``spec`` may name the run folder (``ppgen fit RUN --resume``)."""
    if isinstance(spec, (str, Path)) and Path(spec).is_dir():
        if out is not None and Path(out).resolve() != Path(spec).resolve():
            raise SpecError(f"--resume: {spec} is a run folder, but --out names another ({out})")
        return Path(spec) / "spec.yaml", Path(spec)
    if out is None:
        raise SpecError("--resume: say which run to continue with --out RUN (or pass the run folder as the spec)")
    return spec, Path(out)


def _default_out(spec: ModelSpec) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{spec.name or spec.family}-{stamp}"


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
    raise {"spec": SpecError, "training": TrainingError}[kind](message)


def _flat_diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += _flat_diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            keys.append(f"{prefix}{k} ({va!r} then, {vb!r} now)")
    return keys


def _check_folder(out: Path, spec: ModelSpec, recipe: InferenceSpec, resume: bool, devices: int,
                  seed: int | None) -> int:
    """Refuse what cannot be done, before anything is written; return the seed to train with."""
    ckpt = out / CHECKPOINT
    if not resume:
        if ckpt.exists():
            raise SpecError(f"--out {out}: a fitted run is already there; pass --resume to continue it or choose another --out")
        if out.exists() and not out.is_dir():
            raise SpecError(f"--out {out}: a file of that name exists; choose another --out")
        return 0 if seed is None else seed
    if not ckpt.exists():
        raise SpecError(f"--resume: {out} has no checkpoint to resume from; drop --resume to start a new run")
    saved = load_spec(out / "spec.yaml")
    diff = _flat_diff(saved.model_dump(mode="json"), spec.model_dump(mode="json"))
    if diff:
        raise SpecError(f"--resume: the spec differs from the one {out} was started with in {'; '.join(diff)}")
    saved_recipe = load_recipe(out / "inference.yaml")
    diff = _flat_diff(saved_recipe.model_dump(mode="json", exclude={"epochs"}), recipe.model_dump(mode="json", exclude={"epochs"}))
    if diff:
        raise SpecError(f"--resume: the recipe differs from the one {out} was started with in {'; '.join(diff)}; "
                        "only --epochs may change")
    saved_ckpt = load_checkpoint(ckpt)
    world = int(saved_ckpt["world_size"])
    if world != devices:
        raise SpecError(f"--resume: {out} was fitted with --devices {world}; resume it with --devices {world}")
    # The batches of an epoch are a function of the seed: a resumed run keeps its own.
    if seed is not None and seed != int(saved_ckpt["seed"]):
        raise SpecError(f"--resume: {out} was fitted with --seed {int(saved_ckpt['seed'])}; drop --seed or pass that one")
    return int(saved_ckpt["seed"])


def _write_folder(out: Path, spec: ModelSpec, recipe: InferenceSpec, resume: bool) -> None:
    if resume:
        saved = load_recipe(out / "inference.yaml")
        if recipe.epochs > saved.epochs:
            dump_yaml(recipe, out / "inference.yaml")
        return
    out.mkdir(parents=True, exist_ok=True)
    dump_yaml(spec, out / "spec.yaml")
    dump_yaml(recipe, out / "inference.yaml")
    (out / "metrics.jsonl").unlink(missing_ok=True)


# --------------------------------------------------------------------------- the loop


def _train_spawned(fabric: Any, job: Job) -> tuple[str, str] | None:
    """A worker process: train, and hand how it stopped back to the parent as plain data (exceptions
    would arrive there as a traceback of the child)."""
    from ppgen import data as data_mod

    try:
        _train(fabric, job, data_mod.load(load_spec(job.spec).data))
    except Interrupted as exc:
        return ("interrupted", str(exc.path))
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
    from ppgen.api import build

    spec = load_spec(job.spec)
    recipe = load_recipe(job.recipe)
    out = Path(job.out)
    rank, world = fabric.global_rank, fabric.world_size
    device = fabric.device

    seed_all(job.seed)
    model = build(spec, dataset.info).to(device)
    routine = registry.routine(recipe.routine)(recipe, FabricRuntime(fabric))
    state = routine.init(model)
    start_epoch, skip, carried = 0, 0, (0.0, 0)
    if job.resume:
        ckpt = load_checkpoint(out / CHECKPOINT)
        model.load_state_dict(ckpt["model"])
        state = routine.load_state_dict(state, ckpt["routine"])
        start_epoch, skip = int(ckpt["epoch"]), int(ckpt["batches_done"])
        carried = (float(ckpt.get("epoch_loss_sum", 0.0)), int(ckpt.get("epoch_loss_count", 0)))
        set_rng_state(ckpt["rng"][rank])
        if start_epoch >= job.epochs:
            if rank == 0:
                print(f"{out}: already fitted for {start_epoch} epochs; raise --epochs to continue", file=sys.stderr)
            return
        if rank == 0:
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
            atomic_write_text(json.dumps(env, indent=2) + "\n", out / "env.json")
            _drop_stale_results(out)
        # Each rank draws its own Monte Carlo noise.
        torch.manual_seed(job.seed * 1000 + rank + 1)

    batch_size = spec.data.batch_size
    steps = dataset.steps_per_epoch(batch_size, world)
    show = (sys.stderr.isatty() if job.progress is None else job.progress) and rank == 0
    val_x, val_y = dataset.split("val")
    val_x = val_x.to(device)
    val_y = val_y.to(device) if val_y is not None else None

    def save(epoch: int, batches_done: int, loss_sum: float = 0.0, loss_count: int = 0) -> Path:
        rngs = [rng_state()]
        if world > 1:
            rngs = _gather(fabric, rngs[0])
        if rank == 0:
            ckpt = {
                "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "routine": routine.state_dict(state),
                "epoch": epoch,
                "batches_done": batches_done,
                "epoch_loss_sum": loss_sum,
                "epoch_loss_count": loss_count,
                "rng": rngs,
                "world_size": world,
                "seed": job.seed,
                "family": spec.family,
            }
            atomic_save(ckpt, out / CHECKPOINT)
            if batches_done == 0 and epoch in recipe.snapshots:
                atomic_save({"model": ckpt["model"], "epoch": epoch}, out / f"checkpoints/epoch-{epoch:04d}.pt")
        return out / CHECKPOINT

    def fail(why: str) -> TrainingError:
        last = out / CHECKPOINT
        kept = f"the last good checkpoint ({last}) is kept" if last.exists() else "no checkpoint was written"
        return TrainingError(f"{why}; training stopped and {kept}. Lower optimizer.lr or set optimizer.clip_norm "
                             "in the recipe.")

    with _StopFlag() as stop, _MetricsLog(out / "metrics.jsonl", enabled=rank == 0) as log:
        for epoch in range(start_epoch, job.epochs):
            t0 = time.perf_counter()
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
        self._f = path.open("a") if enabled else None

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
