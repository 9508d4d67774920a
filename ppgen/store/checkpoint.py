"""Checkpoints: sealed by a SHA-256 digest of everything in them (:func:`seal`), and loaded only after
checking their format, their entries, their family, that their tensors are finite and that the digest
matches (:func:`load_checkpoint`); a checkpoint that fails any of these is a :class:`SpecError` naming
the file."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import torch

from ppgen.store.records import cap, whole_number
from ppgen.spec import SpecError

CHECKPOINT = "checkpoints/last.pt"
#: The layout of a checkpoint; one without it (or with another) was not written by this ppgen.
CHECKPOINT_FORMAT = 1


def tensor_digest(obj: Any) -> str:
    """SHA-256 over a checkpoint's contents in a fixed order: every tensor's dtype, shape and bytes, every
    plain value, every key."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}:".encode())
        for k in sorted(obj, key=lambda k: (type(k).__name__, repr(k))):
            _feed(h, k)
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}:".encode())
        for v in obj:
            _feed(h, v)
    elif isinstance(obj, str):
        b = obj.encode("utf-8")
        h.update(f"S{len(b)}:".encode() + b)
    elif obj is None or isinstance(obj, bool):
        h.update(f"{obj};".encode())
    elif isinstance(obj, int):
        h.update(f"I{obj};".encode())
    elif isinstance(obj, float):
        h.update(f"F{obj.hex()};".encode())
    else:
        raise TypeError(f"a checkpoint holds tensors and plain values only, not {type(obj).__name__}")


def seal(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint with its format and digest added (what :func:`load_checkpoint` checks)."""
    body = {k: v for k, v in ckpt.items() if k != "digest"}
    body["format"] = CHECKPOINT_FORMAT
    return {**body, "digest": tensor_digest(body)}


def first_nonfinite(obj: Any, prefix: str = "") -> str | None:
    """The name of the first floating-point tensor in ``obj`` holding a NaN or an infinity, else None."""
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() or obj.is_complex():
            if not bool(torch.isfinite(obj).all()):
                return prefix or "(tensor)"
        return None
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for k, v in items:
        found = first_nonfinite(v, f"{prefix}.{k}" if prefix else str(k))
        if found:
            return found
    return None


#: What a run checkpoint holds: key -> (check, what it must be).
_RUN_KEYS: dict[str, tuple[Any, str]] = {
    "model": (lambda v: isinstance(v, dict) and all(isinstance(t, torch.Tensor) for t in v.values()),
              "a mapping of tensor names to tensors"),
    "routine": (lambda v: isinstance(v, dict) and whole_number(v.get("step")), "the routine's state (with its step)"),
    "epoch": (whole_number, "a whole number of finished epochs, 0 or more"),
    "batches_done": (whole_number, "a whole number of batches, 0 or more"),
    "epoch_loss_sum": (lambda v: isinstance(v, float) and math.isfinite(v), "a finite number"),
    "epoch_loss_count": (whole_number, "a whole number, 0 or more"),
    "rng": (lambda v: isinstance(v, list) and len(v) > 0 and all(
        isinstance(s, dict) and all(isinstance(s.get(k), torch.Tensor) for k in ("torch", "numpy", "python"))
        for s in v), "one random-number state (torch, numpy, python) per process"),
    "world_size": (lambda v: whole_number(v, 1), "the number of processes, 1 or more"),
    "seed": (whole_number, "the run's seed"),
    "family": (lambda v: isinstance(v, str) and bool(v), "the family's name"),
    "spec": (lambda v: isinstance(v, dict), "the resolved model spec"),
    "recipe": (lambda v: isinstance(v, dict), "the resolved recipe"),
}
_SNAPSHOT_KEYS = {k: _RUN_KEYS[k] for k in ("model", "epoch", "family")}


def load_checkpoint(path: str | Path, family: str | None = None, *, snapshot: bool = False) -> dict[str, Any]:
    """A checkpoint, checked: read with ``weights_only=True`` (tensors and plain values only, nothing
    executes), every expected entry present and of its kind, the family ``family`` (when given), every
    tensor finite, and the digest written with it matching its contents. Anything else is a
    :class:`SpecError` naming the file and what is wrong with it."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SpecError(f"{path}: no checkpoint; has this run been fitted?") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: a folder, not a checkpoint") from None
    except Exception as exc:  # a truncated or foreign file
        raise SpecError(f"{path}: not a readable ppgen checkpoint ({type(exc).__name__}: {cap(str(exc))})") from None
    if not isinstance(ckpt, dict):
        raise SpecError(f"{path}: not a ppgen checkpoint (it holds a {type(ckpt).__name__}, not a mapping)")
    for key, (ok, what) in (_SNAPSHOT_KEYS if snapshot else _RUN_KEYS).items():
        if key not in ckpt:
            raise SpecError(f"{path}: not a complete ppgen checkpoint: it has no {key!r} ({what})")
        if not ok(ckpt[key]):
            raise SpecError(f"{path}: {key!r} must be {what}, got {cap(repr(ckpt[key]))}")
    if ckpt.get("format") != CHECKPOINT_FORMAT or not isinstance(ckpt.get("digest"), str):
        raise SpecError(f"{path}: has no digest of format {CHECKPOINT_FORMAT}: written by an older ppgen or by "
                        "something else, so its contents cannot be checked; fit the run again")
    if not snapshot:
        if ckpt["spec"].get("family") != ckpt["family"]:
            raise SpecError(f"{path}: records family {ckpt['family']!r} but a spec of family "
                            f"{ckpt['spec'].get('family')!r}")
        if len(ckpt["rng"]) != ckpt["world_size"]:
            raise SpecError(f"{path}: holds {len(ckpt['rng'])} random-number states for {ckpt['world_size']} processes")
    if family is not None and ckpt["family"] != family:
        raise SpecError(f"{path}: a checkpoint of the {ckpt['family']!r} family, not of {family!r}; it belongs to "
                        "another run")
    bad = first_nonfinite({"model": ckpt["model"], "routine": ckpt.get("routine", {})})
    if bad:
        raise SpecError(f"{path}: the tensor {bad} holds NaN or infinite values; the checkpoint is damaged "
                        "and cannot be used")
    if tensor_digest({k: v for k, v in ckpt.items() if k != "digest"}) != ckpt["digest"]:
        raise SpecError(f"{path}: its contents do not match the digest written with them: the file was damaged "
                        "or edited after ppgen saved it, and cannot be used")
    return ckpt


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """``model.load_state_dict(state)``; names or shapes that do not fit are a :class:`SpecError` naming
    the checkpoint."""
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise SpecError(f"{path}: its weights do not fit this run's model ({cap(str(exc).strip())})") from None
