"""Devices and processes, through Lightning Fabric: the accelerator a fit asks for, the spawned worker
processes of ``devices > 1`` and how they report back, gradient averaging (:class:`FabricRuntime`), and
the collective calls the loop makes so that every rank takes the same branch."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import torch

from ppgen.registry import load_data, load_spec
from ppgen.spec import SpecError
from ppgen.training.errors import Interrupted, TrainingError
from ppgen.training.signals import main_thread

if TYPE_CHECKING:
    from ppgen.training.plan import Job


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


# --------------------------------------------------------------------------- devices and processes


def choose_accelerator(name: str, devices: int) -> str:
    """The accelerator ``--device NAME`` means here, checked with the number of processes asked for."""
    if devices < 1:
        raise SpecError(f"--devices: must be at least 1, got {devices}")
    accel = _accelerator(name)
    most = torch.cuda.device_count() if accel == "cuda" else 1 if accel == "mps" else max(2, os.cpu_count() or 1)
    if devices > most:
        raise SpecError(f"--devices {devices}: at most {most} processes here (one per "
                        f"{'GPU' if accel == 'cuda' else 'device' if accel == 'mps' else 'CPU core'})")
    return accel


def _accelerator(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda", "gpu", "mps"):
        raise SpecError(f"--device: expected cpu, cuda, mps or auto, got {name!r}")
    if name in ("cuda", "gpu") and not torch.cuda.is_available():
        raise SpecError("--device cuda: no CUDA device is available here; use --device cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise SpecError("--device mps: no Apple MPS device is available here; use --device cpu")
    return "cuda" if name == "gpu" else name


def fabric_for(job: Job) -> Any:
    from lightning_fabric import Fabric

    if job.devices == 1:
        return Fabric(accelerator=job.accelerator, devices=1)
    from lightning_fabric.strategies import DDPStrategy

    # Spawned processes work from the CLI, scripts and notebooks alike; gloo is the CPU backend.
    backend = "nccl" if job.accelerator == "cuda" else "gloo"
    strategy = DDPStrategy(start_method="spawn", process_group_backend=backend)
    return Fabric(accelerator=job.accelerator, devices=job.devices, strategy=strategy)


def launch(job: Job, train: Callable[[Any, Job, Any], None]) -> None:
    """Run ``train(fabric, job, dataset)`` in ``job.devices`` spawned processes and raise what rank 0
    stopped with. A Ctrl-C reaches the workers too (they save and stop together); the parent only waits
    for them."""
    def forward(signum: int, frame: Any) -> None:
        for child in multiprocessing.active_children():
            os.kill(child.pid, signal.SIGINT)

    previous = signal.signal(signal.SIGINT, forward) if main_thread() else None
    try:
        outcome = fabric_for(job).launch(_train_spawned, job, train)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    _raise_outcome(outcome)


def _train_spawned(fabric: Any, job: Job, train: Callable[[Any, Job, Any], None]) -> tuple[str, str] | None:
    """A worker process: train, and hand how it stopped back to the parent as plain data (exceptions
    would arrive there as a traceback of the child)."""
    try:
        train(fabric, job, load_data(load_spec(job.spec)))
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


# --------------------------------------------------------------------------- across ranks


def broadcast_parameters(fabric: Any, model: torch.nn.Module) -> None:
    """Identical starting points on every rank; afterwards averaged gradients keep them equal."""
    for p in model.state_dict().values():
        if p.is_floating_point():
            p.copy_(fabric.broadcast(p, src=0))


def any_rank(fabric: Any, *flags: bool) -> list[bool]:
    """Whether each flag is set on some rank: every rank must take the same branch, or the next
    collective call waits forever."""
    total = fabric.all_reduce(torch.tensor([float(f) for f in flags], device=fabric.device), reduce_op="sum")
    return [bool(t > 0) for t in total]


def gather(fabric: Any, obj: Any) -> list[Any]:
    import torch.distributed as tdist

    out: list[Any] = [None] * fabric.world_size
    tdist.all_gather_object(out, obj)
    return out


def param_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def mean_across(fabric: Any, total: float, count: int) -> float:
    both = torch.tensor([total, float(count)], dtype=torch.float64)
    if fabric.world_size > 1:
        both = fabric.all_reduce(both, reduce_op="sum")
    return float(both[0] / both[1]) if both[1] > 0 else float("nan")
