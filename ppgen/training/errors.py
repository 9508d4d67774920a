"""How a fit stops short: training cannot go on (:class:`TrainingError`), or Ctrl-C (:class:`Interrupted`)."""

from __future__ import annotations

from pathlib import Path


class TrainingError(RuntimeError):
    """Training cannot go on (a NaN or infinite loss); the message names the step and what to change."""


class Interrupted(Exception):
    """Ctrl-C during training. With ``saved`` the loop saved a checkpoint at the last finished step;
    without, this call saved nothing and the message says what is kept and how to go on."""

    def __init__(self, path: Path, message: str | None = None, saved: bool = True) -> None:
        super().__init__(message or f"interrupted; saved {path}; continue with --resume")
        self.path = path
        self.saved = saved
