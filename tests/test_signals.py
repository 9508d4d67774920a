"""ppgen.training.signals: Ctrl-C during training (the first asks to stop after the step, a second a
second later stops at once), handlers set only from the main thread and put back as they were."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import pytest

from ppgen.training import signals
from ppgen.training.signals import StopFlag, main_thread


def test_main_thread_is_true_only_there() -> None:
    seen: list[bool] = []
    worker = threading.Thread(target=lambda: seen.append(main_thread()))
    worker.start()
    worker.join()
    assert main_thread() is True and seen == [False]


def _previous(signum: int, frame: Any) -> None:
    raise AssertionError("the handler from before the fit was called during it")


@pytest.fixture
def own_handler() -> Any:
    """A handler of the test's own on SIGINT, restored to pytest's afterwards."""
    before = signal.signal(signal.SIGINT, _previous)
    yield
    signal.signal(signal.SIGINT, before)


def test_a_real_ctrl_c_sets_the_flag_and_the_handler_before_is_put_back(own_handler: None) -> None:
    with StopFlag() as stop:
        assert signal.getsignal(signal.SIGINT) == stop._handle
        assert stop.requested is False
        os.kill(os.getpid(), signal.SIGINT)  # delivered to this (the main) thread before the next line runs
        assert stop.requested is True
    assert signal.getsignal(signal.SIGINT) is _previous


def test_the_handler_is_put_back_when_the_fit_raises(own_handler: None) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with StopFlag():
            raise RuntimeError("boom")
    assert signal.getsignal(signal.SIGINT) is _previous


def test_nested_flags_put_back_each_handler_in_turn(own_handler: None) -> None:
    with StopFlag() as outer:
        with StopFlag() as inner:
            assert signal.getsignal(signal.SIGINT) == inner._handle
        assert signal.getsignal(signal.SIGINT) == outer._handle
    assert signal.getsignal(signal.SIGINT) is _previous


def test_the_default_handler_is_put_back_too() -> None:
    before = signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        with StopFlag():
            pass
        assert signal.getsignal(signal.SIGINT) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGINT, before)


def test_outside_the_main_thread_no_handler_is_touched(own_handler: None) -> None:
    seen: list[Any] = []

    def fit() -> None:
        with StopFlag() as stop:
            seen.append(stop)
            seen.append(signal.getsignal(signal.SIGINT))

    worker = threading.Thread(target=fit)
    worker.start()
    worker.join()
    assert seen[1] is _previous and seen[0]._previous is None
    assert signal.getsignal(signal.SIGINT) is _previous


def test_a_second_ctrl_c_stops_at_once_only_a_second_or_more_after_the_first(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(signals.time, "monotonic", lambda: now[0])
    stop = StopFlag()
    stop._handle(signal.SIGINT, None)
    assert stop.requested is True
    now[0] = 100.9  # a terminal's Ctrl-C and the parent's forwarded copy arrive together: ignored
    stop._handle(signal.SIGINT, None)
    now[0] = 101.0  # exactly a second: still the same press
    stop._handle(signal.SIGINT, None)
    assert stop.requested is True
    now[0] = 101.01
    with pytest.raises(KeyboardInterrupt):
        stop._handle(signal.SIGINT, None)


def test_the_second_is_measured_from_the_first_request_not_the_last(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr(signals.time, "monotonic", lambda: now[0])
    stop = StopFlag()
    stop._handle(signal.SIGINT, None)
    for t in (0.5, 0.9):  # ignored presses do not move the first one's time
        now[0] = t
        stop._handle(signal.SIGINT, None)
    now[0] = 1.5
    with pytest.raises(KeyboardInterrupt):
        stop._handle(signal.SIGINT, None)
