"""Ctrl-C during training: the first asks the loop to stop after the current step (it then saves), a
second stops at once. Signal handlers are set only from the main thread, and put back afterwards."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any


def main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class StopFlag:
    """The first Ctrl-C asks the loop to stop after the current step; a second one, a second or more
    later, stops at once (a terminal's Ctrl-C and the parent's forwarded one arrive together)."""

    def __init__(self) -> None:
        self.requested = False
        self._when = 0.0
        self._previous: Any = None

    def __enter__(self) -> "StopFlag":
        if main_thread():
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
