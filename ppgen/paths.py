"""Where ppgen may write: output files (``sample -o``, ``compare -o``) and run folders (``fit --out``).

Each check runs before any work is done, so a path that cannot be written is a :class:`SpecError` naming
the flag (exit status 2) rather than an ``OSError`` after minutes of fitting or sampling.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from ppgen.spec import SpecError, cut


def _blocking_parent(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` if it is not a folder (so nothing can be made under it)."""
    for parent in path.parents:
        if parent.exists() or parent.is_symlink():
            return None if parent.is_dir() else parent
    return None


def _shown(path: Path) -> str:
    return cut(str(path))


def check_output_file(path: str | Path, flag: str, suffixes: Iterable[str]) -> Path:
    """``path`` as a file to write: one of ``suffixes`` (compared lower-case), not a folder, not under a
    file, not a dangling link, in a folder that exists or can be made and is writable."""
    out = Path(path)
    _check_name(out, flag)
    allowed = tuple(suffixes)
    if out.suffix.lower() not in allowed:
        raise SpecError(f"{flag} {_shown(out)}: expected a file ending in {', '.join(allowed)}")
    with _asking(out, flag):
        if out.is_dir():
            raise SpecError(f"{flag} {_shown(out)}: is a folder; give a file name, e.g. {_shown(out / ('samples' + allowed[0]))}")
        _check_writable(out, flag, "file")
    return out


def check_output_folder(path: str | Path, flag: str) -> Path:
    """``path`` as a folder to write into: an existing folder, or a path where one can be made."""
    out = Path(path)
    _check_name(out, flag)
    with _asking(out, flag):
        if out.exists() and not out.is_dir():
            raise SpecError(f"{flag} {_shown(out)}: a file of that name exists; choose another {flag}")
        _check_writable(out, flag, "folder")
    return out


@contextmanager
def _asking(out: Path, flag: str) -> Iterator[None]:
    """The file system's own refusal to look at ``out`` (a path longer than the system allows, a folder
    that cannot be searched) as bad input naming the flag."""
    try:
        yield
    except OSError as exc:
        raise SpecError(f"{flag} {_shown(out)}: {exc.strerror or exc}; choose another {flag}") from None


def _check_name(out: Path, flag: str) -> None:
    """Before the file system is asked anything about ``out`` (it raises on a name that is too long)."""
    try:
        os.fsencode(str(out))
    except UnicodeError:
        raise SpecError(f"{flag}: the path cannot be encoded for this file system; choose another {flag}") from None
    for name in out.parts:
        if len(name.encode(errors="replace")) > 255:
            raise SpecError(f"{flag} {_shown(out)}: a name in it is longer than 255 bytes; choose another {flag}")


def _check_writable(out: Path, flag: str, what: str) -> None:
    if out.is_symlink() and not out.exists():
        raise SpecError(f"{flag} {_shown(out)}: is a link to {_shown(Path(os.readlink(out)))}, which does not exist; "
                        f"remove the link or choose another {flag}")
    blocker = _blocking_parent(out)
    if blocker is not None:
        raise SpecError(f"{flag} {_shown(out)}: {_shown(blocker)} is a file, not a folder, so no {what} can be made "
                        f"under it; choose another {flag}")
    existing = next((p for p in [out, *out.parents] if p.exists()), None)
    target = existing if existing is not None else Path.cwd()
    folder = target if target.is_dir() else target.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SpecError(f"{flag} {_shown(out)}: {_shown(folder)} is not writable; choose another {flag}")
