"""The run folder and ``open_run``.

A run is a folder::

    spec.yaml         the resolved model spec
    inference.yaml    the resolved recipe (as it is now: a resume may change the safe keys, see train.py)
    checkpoints/      last.pt, epoch-NNNN.pt snapshots if asked for
    metrics.jsonl     one JSON record per line: {"kind": "train"|"epoch"|"resumed", "epoch", "step", ...}
    history.jsonl     one record per fit and per resume: when, from where, what changed
    figures/          PNGs
    evaluation.json   what ``ppgen evaluate`` measured
    idata.nc          what ``ppgen diagnose`` converted to ArviZ
    env.json          versions, seed, git commit, data checksum, devices
    .lock             held (``flock``) by the process writing the folder

Every file is written whole or not at all: to a temporary file, flushed to disk, then renamed over the
old one, so a kill never leaves half a file and a file that is a symbolic link is replaced, never
written through. A checkpoint records the family, the resolved spec and recipe it was trained with and a
SHA-256 digest of everything in it; loading one checks the digest, the family and that its tensors are
finite, and refuses (:class:`SpecError`, naming the file) a checkpoint that fails any of them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import subprocess
import time
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

import torch

from ppgen.atomic import atomic_save, atomic_write, atomic_write_text  # noqa: F401  (ppgen.runs.atomic_*, as before)
from ppgen.models.base import Family
from ppgen.registry import build, load_recipe, load_spec
from ppgen.spec import InferenceSpec, ModelSpec, SpecError

CHECKPOINT = "checkpoints/last.pt"
LOCK = ".lock"
HISTORY = "history.jsonl"
#: The layout of a checkpoint; one without it (or with another) was not written by this ppgen.
CHECKPOINT_FORMAT = 1


# --------------------------------------------------------------------------- whole-file writes


def write_yaml(obj: Any, path: Path) -> None:
    """A spec or recipe (or a plain mapping) as YAML, written whole."""
    import yaml
    from pydantic import BaseModel

    data = obj.model_dump(mode="json") if isinstance(obj, BaseModel) else obj
    atomic_write_text(yaml.safe_dump(data, sort_keys=False), path)


def append_jsonl(record: dict[str, Any], path: Path) -> None:
    """Add one record to a small JSON-lines file (``history.jsonl``), rewriting it whole."""
    old = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
    if old and not old.endswith(b"\n"):
        old += b"\n"
    atomic_write_text(old.decode("utf-8", errors="replace") + json.dumps(record) + "\n", path)


def open_append(path: Path) -> Any:
    """``metrics.jsonl`` opened for appending; a link there is refused rather than written through."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise SpecError(f"{path}: cannot be opened for appending ({exc.strerror}); a run folder's files "
                        "must be plain files, not links") from None
    return os.fdopen(fd, "a", encoding="utf-8")


# --------------------------------------------------------------------------- the folder's lock

#: Folders this process holds the lock of: real path -> [file descriptor, depth]. The lock is
#: re-entrant within a process (``ppgen fit`` fits, then draws its figures under the same lock).
_HELD: dict[str, list[int]] = {}


@contextmanager
def run_lock(folder: str | Path, action: str) -> Iterator[int]:
    """Hold the run folder's lock while writing it; yields the lock file's descriptor.

    The lock is ``flock`` on ``FOLDER/.lock``: the kernel drops it when its holder ends, however it ends
    (kill -9 included), so no stale marker is ever left. Spawned worker processes receive the same
    descriptor (:class:`InheritedLock`) and keep the lock held while any of them lives. A second writer
    gets :class:`SpecError` naming the folder and the holder's process id.
    """
    import fcntl

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SpecError(f"{folder}: cannot make the run folder there ({exc.strerror}); choose another path") from None
    if not folder.is_dir():
        raise SpecError(f"{folder}: not a folder; choose another path for the run")
    key = os.path.realpath(folder)
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield _HELD[key][0]
        finally:
            _HELD[key][1] -= 1
        return
    path = folder / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise SpecError(f"{path}: cannot open the run folder's lock file ({exc.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = _holder(fd)
        os.close(fd)
        raise SpecError(f"{folder}: another process is writing this run folder ({holder}); wait until it has "
                        "finished, or use another folder") from None
    info = {"pid": os.getpid(), "action": action, "host": platform.node(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    _HELD[key] = [fd, 1]
    try:
        yield fd
    finally:
        del _HELD[key]
        # Closing lets the lock go once no process holds the descriptor (a worker left running keeps it).
        # The file stays: removing it would race with a process that has just opened it.
        os.close(fd)


def check_unlocked(folder: str | Path) -> None:
    """Refuse early (a :class:`SpecError` naming the holder) when another process holds the folder's lock;
    the lock itself is taken with :func:`run_lock`."""
    import fcntl

    path = Path(folder) / LOCK
    if os.path.realpath(folder) in _HELD or not path.is_file() or path.is_symlink():
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise SpecError(f"{folder}: another process is writing this run folder ({_holder(fd)}); wait until it has "
                        "finished, or use another folder") from None
    finally:
        os.close(fd)  # closing drops the probe's own lock, if it got one


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode())
        return f"pid {int(info['pid'])}: {info['action']}, since {info['since']}"
    except Exception:  # written at this moment, or not by ppgen: say what is sure
        return "pid unknown"


class InheritedLock:
    """A held lock's descriptor, handed to spawned worker processes (pickled with multiprocessing's
    descriptor passing), so that the lock is held as long as any process writing the folder lives."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> tuple[Any, tuple[Any]]:
        from multiprocessing import reduction

        return _rebuild_lock, (reduction.DupFd(self.fd),)


def _rebuild_lock(dup: Any) -> InheritedLock:
    return InheritedLock(dup.detach())


# --------------------------------------------------------------------------- checkpoints


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


def _is_int(v: Any, low: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


#: What a run checkpoint holds: key -> (check, what it must be).
_RUN_KEYS: dict[str, tuple[Any, str]] = {
    "model": (lambda v: isinstance(v, dict) and all(isinstance(t, torch.Tensor) for t in v.values()),
              "a mapping of tensor names to tensors"),
    "routine": (lambda v: isinstance(v, dict) and _is_int(v.get("step")), "the routine's state (with its step)"),
    "epoch": (_is_int, "a whole number of finished epochs, 0 or more"),
    "batches_done": (_is_int, "a whole number of batches, 0 or more"),
    "epoch_loss_sum": (lambda v: isinstance(v, float) and math.isfinite(v), "a finite number"),
    "epoch_loss_count": (_is_int, "a whole number, 0 or more"),
    "rng": (lambda v: isinstance(v, list) and len(v) > 0 and all(
        isinstance(s, dict) and all(isinstance(s.get(k), torch.Tensor) for k in ("torch", "numpy", "python"))
        for s in v), "one random-number state (torch, numpy, python) per process"),
    "world_size": (lambda v: _is_int(v, 1), "the number of processes, 1 or more"),
    "seed": (_is_int, "the run's seed"),
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
        raise SpecError(f"{path}: not a readable ppgen checkpoint ({type(exc).__name__}: {_cap(str(exc))})") from None
    if not isinstance(ckpt, dict):
        raise SpecError(f"{path}: not a ppgen checkpoint (it holds a {type(ckpt).__name__}, not a mapping)")
    for key, (ok, what) in (_SNAPSHOT_KEYS if snapshot else _RUN_KEYS).items():
        if key not in ckpt:
            raise SpecError(f"{path}: not a complete ppgen checkpoint: it has no {key!r} ({what})")
        if not ok(ckpt[key]):
            raise SpecError(f"{path}: {key!r} must be {what}, got {_cap(repr(ckpt[key]))}")
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
        raise SpecError(f"{path}: its weights do not fit this run's model ({_cap(str(exc).strip())})") from None


def _cap(text: str, limit: int = 600) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more characters)"


# --------------------------------------------------------------------------- metrics and JSON files


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl``; a last line cut short (the process was killed mid-write) is
    skipped, a bad line elsewhere (not UTF-8, not JSON, not a record) is an error naming it."""
    if not path.exists():
        return []
    lines = [line for line in path.read_bytes().splitlines() if line.strip()]
    records = []
    for i, raw in enumerate(lines):
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            if i == len(lines) - 1:
                break
            raise SpecError(f"{path}: line {i + 1} is not a JSON record") from None
        problem = _record_problem(record)
        if problem:
            raise SpecError(f"{path}: line {i + 1} {problem}")
        records.append(record)
    return records


def _record_problem(record: Any) -> str | None:
    if not isinstance(record, dict):
        return f"is a JSON {type(record).__name__}, not a record ({{...}})"
    kind = record.get("kind")
    if kind is not None and not isinstance(kind, str):
        return f"has a kind that is not a name ({_cap(repr(kind), 80)})"
    for key in ("epoch", "step"):
        if key in record and not _is_int(record[key]):
            return f"has {key} {_cap(repr(record[key]), 80)}, not a whole number"
    if kind in ("epoch", "train") and "step" not in record:
        return f"is a {kind} record without a step"
    if kind == "epoch" and "epoch" not in record:
        return "is an epoch record without its epoch"
    for key in ("loss", "val_loss"):
        if key in record and record[key] is not None and (isinstance(record[key], bool)
                                                          or not isinstance(record[key], (int, float))):
            return f"has {key} {_cap(repr(record[key]), 80)}, not a number"
    return None


def read_json_object(path: Path) -> dict[str, Any] | None:
    """A JSON file holding one object (``evaluation.json``, ``env.json``), or None when there is none."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpecError(f"{path}: not a readable JSON file ({type(exc).__name__}: {_cap(str(exc), 200)}); "
                        "delete it and run the command that writes it again") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: holds a JSON {type(data).__name__}, not an object ({{...}}); delete it and "
                        "run the command that writes it again")
    return data


def environment(seed: int, data_checksum: str, devices: int, accelerator: str) -> dict[str, Any]:
    from importlib.metadata import version

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyro": version("pyro-ppl"),
        "arviz": version("arviz"),
        "platform": platform.platform(),
        "seed": seed,
        "git_commit": commit,
        "data_checksum": data_checksum,
        "devices": devices,
        "accelerator": accelerator,
    }


def flat_diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """The dotted keys where two nested mappings differ, with the value in each."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += flat_diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append((f"{prefix}{k}", va, vb))
    return out


def describe_diff(diff: list[tuple[str, Any, Any]], then: str = "then", now: str = "now") -> str:
    return "; ".join(f"{k} ({_cap(repr(a), 120)} {then}, {_cap(repr(b), 120)} {now})" for k, a, b in diff)


def load_copy(path: Path, loader: Any, checkpoint: Path) -> Any:
    """A run folder's ``spec.yaml`` or ``inference.yaml`` (``loader`` is ``load_spec`` or ``load_recipe``);
    one that cannot be read says that it is a copy of what the checkpoint records."""
    again = f"it is a copy of what {checkpoint} records: delete it and ppgen writes it again from the checkpoint"
    if path.is_file() and path.stat().st_size == 0:
        raise SpecError(f"{path}: empty (a write was cut short, or it was emptied); {again}")
    try:
        return loader(path)
    except SpecError as exc:
        raise SpecError(f"{exc}\n({again})") from None


def check_record(path: Path, loaded: Any, recorded: Any, checkpoint: Path) -> None:
    """A run folder's ``spec.yaml`` or ``inference.yaml`` must say what its checkpoint records."""
    then, now = recorded.model_dump(mode="json"), loaded.model_dump(mode="json")
    if "family" in then and then["family"] != now.get("family"):
        raise SpecError(f"{checkpoint}: a checkpoint of the {then['family']!r} family, but {path} is a "
                        f"{now.get('family')!r} spec; the checkpoint belongs to another run")
    diff = flat_diff(then, now)
    if diff:
        raise SpecError(f"{path} and {checkpoint} disagree on what this run is, in "
                        f"{describe_diff(diff, 'in the checkpoint', 'in the file')}: one of them was edited, damaged or "
                        "copied from another run. If the file is the wrong one, delete it and ppgen writes it again from "
                        "the checkpoint (on --resume, change a setting with --set inference.KEY=VALUE)")


# --------------------------------------------------------------------------- the run


class Run:
    """A fitted run, opened from its folder: ``model``, ``spec``, ``recipe``, ``metrics``,
    ``evaluation``, ``samples(n)`` and ``idata`` (InferenceData)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise SpecError(f"{self.path}: no such run folder")
        if not self.path.is_dir():
            raise SpecError(f"{self.path}: a file, not a run folder")
        if not (self.path / "spec.yaml").exists() and not (self.path / CHECKPOINT).exists():
            raise SpecError(f"{self.path}: not a ppgen run folder (no spec.yaml, no {CHECKPOINT})")

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, family={self.spec.family!r})"

    def _has_checkpoint(self) -> bool:
        return (self.path / CHECKPOINT).exists()

    @cached_property
    def spec(self) -> ModelSpec:
        """``spec.yaml``, which must agree with the spec the checkpoint records."""
        path = self.path / "spec.yaml"
        if not self._has_checkpoint():
            return load_spec(path)
        recorded = load_spec(self.checkpoint["spec"])
        if path.exists():
            check_record(path, load_copy(path, load_spec, self.path / CHECKPOINT), recorded, self.path / CHECKPOINT)
        return recorded

    @cached_property
    def recipe(self) -> InferenceSpec:
        """``inference.yaml``, which must agree with the recipe the checkpoint records."""
        path = self.path / "inference.yaml"
        if not self._has_checkpoint():
            return load_recipe(path)
        recorded = load_recipe(self.checkpoint["recipe"])
        if path.exists():
            check_record(path, load_copy(path, load_recipe, self.path / CHECKPOINT), recorded, self.path / CHECKPOINT)
        return recorded

    @property
    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.path / "metrics.jsonl")

    @property
    def evaluation(self) -> dict[str, Any] | None:
        return read_json_object(self.path / "evaluation.json")

    @property
    def env(self) -> dict[str, Any]:
        return read_json_object(self.path / "env.json") or {}

    @property
    def history(self) -> list[dict[str, Any]]:
        """The records of ``history.jsonl``: each fit and resume, with what a resume changed."""
        return read_metrics(self.path / HISTORY)

    @cached_property
    def data(self) -> Any:
        from ppgen.registry import load_data

        return load_data(self.spec)

    @cached_property
    def checkpoint(self) -> dict[str, Any]:
        return load_checkpoint(self.path / CHECKPOINT)

    @cached_property
    def model(self) -> Family:
        """The fitted family module, in eval mode, with the checkpoint's ``state_dict`` loaded."""
        model = build(self.spec, self.data.info)
        load_model_state(model, self.checkpoint["model"], self.path / CHECKPOINT)
        return model.eval()

    def model_at(self, epoch: int) -> Family:
        """The model as it was at the end of ``epoch`` (needs ``snapshots`` at fit time)."""
        path = self.path / f"checkpoints/epoch-{epoch:04d}.pt"
        model = build(self.spec, self.data.info)
        load_model_state(model, load_checkpoint(path, self.spec.family, snapshot=True)["model"], path)
        return model.eval()

    @torch.random.fork_rng(devices=[])  # seeds its own draws; the caller's random state is given back
    def samples(self, n: int = 64, seed: int = 0, display: bool = False) -> torch.Tensor:
        """``n`` draws from the fitted model; with ``display`` as a picture shows them (e.g. pixel
        probabilities instead of binary draws)."""
        torch.manual_seed(seed)
        with torch.no_grad():
            return self.model.display_samples(n) if display else self.model.sample(n)

    @cached_property
    def idata(self) -> Any:
        """ArviZ InferenceData: ``idata.nc`` if ``ppgen diagnose`` wrote it, else built now."""
        from ppgen import diagnostics

        p = self.path / "idata.nc"
        if p.exists():
            return diagnostics.arviz().from_netcdf(p)

        return diagnostics.inference_data(self)


def open_run(path: str | Path) -> Run:
    """Open a run folder written by ``ppgen fit``."""
    return Run(path)
