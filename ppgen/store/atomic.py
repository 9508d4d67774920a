"""Whole-file writes: a file is written to a fresh temporary file beside it, flushed to disk and renamed
over it, so that a kill never leaves half a file and a link at the path is replaced, never written through.
Run folders (:mod:`ppgen.store.folder`), figures (:mod:`ppgen.plots.common`) and reports all write this way."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(file)`` on a fresh temporary file beside ``path``, flush it to disk and rename it over
    ``path``. The temporary file is created anew (never opened through a link), and the rename replaces a
    link at ``path`` instead of writing to its target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` as a whole-file write: a crash never leaves a half-written file."""
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(text: str, path: Path) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
