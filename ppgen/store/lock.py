"""The run folder's lock: one process writes a folder at a time (``flock`` on ``FOLDER/.lock``, dropped by
the kernel however its holder ends), re-entrant within a process, and handed to spawned workers."""

from __future__ import annotations

import json
import os
import platform
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ppgen.spec import SpecError

LOCK = ".lock"

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
