"""Progress and time estimates of long loops, on stderr.

A long loop (the held-out likelihood over the test split, log Z by AIS, the samples for the quality metrics)
is a :class:`Phase`. It times its first chunk of work and, where the whole phase will take at least
:data:`ESTIMATE_FROM` seconds, says how long before going on:

    ppgen evaluate: test log-likelihood: about 9.3 min (5.6 s for the first 100 of 10,000 test examples)

With ``show`` it then shows progress: a bar on a terminal, and where stderr is not a terminal (a notebook,
a log file) a plain line at most every :data:`LINE_EVERY` seconds, when another tenth of the work is done
or :data:`LINE_AT_LEAST` seconds have passed, so that a log shows the run is alive; and a last line with the
time taken where any line was written. The estimate is said with or without ``show``.

The training loop (:mod:`ppgen.training.loop`) opens a phase per epoch (``epoch 3/20``, its steps the work, the
batches already done before a resume as ``initial``), announced on the first epoch only and without a closing
line, since the loop writes its own line at each epoch's end; :meth:`Phase.postfix` puts the latest loss on
the bar and on the plain lines. Its estimates are of ``the steps``: the routine's validation pass follows
them, a phase of its own (``epoch 3/20 validation``) that the routine's batches report to through
:func:`tick`, estimated from its first batch:

    epoch 1/1: 6 of 7 steps (86%), 32 s so far, about 5.3 s left in the steps
    epoch 1/1 validation: about 4.2 min (13 s for the first 1 of 20 batches)

A loop deep inside a family (the AIS temperatures of an energy model's log Z) does not know the phase it
runs in: it calls :func:`tick`, which reports to the innermost phase opened without a total of its own, and
does nothing outside one.
"""

from __future__ import annotations

import contextvars
import sys
from contextlib import contextmanager
from time import monotonic
from typing import Any, Callable, Iterator, TextIO

#: A phase whose projected length is at least this many seconds is announced with its estimate.
ESTIMATE_FROM = 10.0
#: The first chunk that an estimate is made from: the first update after this many seconds, or after this
#: share of the work, whichever comes first.
TIME_FIRST = 1.0
SHARE_FIRST = 0.01
#: Plain progress lines (stderr not a terminal): at most one every LINE_EVERY seconds, and then only when
#: LINE_SHARE more of the work is done or LINE_AT_LEAST seconds have passed since the last.
LINE_EVERY = 10.0
LINE_AT_LEAST = 30.0
LINE_SHARE = 0.1

_OPEN: contextvars.ContextVar[Phase | None] = contextvars.ContextVar("ppgen_progress_phase", default=None)


def duration(seconds: float) -> str:
    """A time span in words: ``4.2 s``, ``3.5 min``, ``2.1 h``."""
    if seconds < 60:
        return f"{seconds:.2g} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (OSError, ValueError):  # a closed or detached stream
        return False


class Phase:
    """One long loop: ``update(done)`` (or ``advance(n)``) as the work goes, ``close()`` at the end.

    ``what`` names the work (``"test log-likelihood"``), ``total`` counts it in ``unit`` (``"test
    examples"``; None until the first :meth:`update` that gives it), ``prefix`` starts every line
    (``"ppgen evaluate: "``). ``stream`` and ``clock`` are stderr and :func:`time.monotonic` unless given.
    ``initial`` units were done before the phase opened (a resumed epoch): the estimates are made from the
    rate of the work done since. ``announce=False`` keeps the estimate to the bar and the lines (nothing is
    said without ``show``), ``closing=False`` leaves out the last line with the time taken. ``part`` names
    the part of a larger piece of work that the phase is (``"the steps"`` of an epoch that validation
    follows): the estimate and the time left are then said of it (``about 1.0 min for the steps``, ``about
    48 s left in the steps``), not as if the whole were nearly done.
    """

    def __init__(self, what: str, total: int | None = None, unit: str = "", *, show: bool = False,
                 prefix: str = "", stream: TextIO | None = None, clock: Callable[[], float] | None = None,
                 initial: int = 0, announce: bool = True, closing: bool = True, part: str = "") -> None:
        self.what, self.total, self.unit, self.show, self.prefix = what, total, unit, show, prefix
        self.announce, self.closing, self.part = announce, closing, part
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock or monotonic
        self.start = self.clock()
        self.initial = self.done = initial
        self.estimate: float | None = None
        self.lines = 0
        self._last_line, self._last_share = self.start, (min(1.0, initial / total) if total else 0.0)
        self._postfix: dict[str, str] = {}
        self._bar: Any = None
        self._closed = False
        if show and total and is_terminal(self.stream):
            self._draw_bar(initial)  # the bar from the start, the estimate below it after the first chunk

    # -- reporting ---------------------------------------------------------------------------------
    def advance(self, n: int = 1) -> None:
        self.update(self.done + n)

    def update(self, done: int, total: int | None = None) -> None:
        """``done`` units of the work are finished (of ``total``, where the phase was opened without one)."""
        if total is not None and self.total is None:
            self.total = total
        self.done = done
        if not self.total or self._closed:
            return
        now = self.clock()
        elapsed = now - self.start
        share = min(1.0, done / self.total)
        # the share of the work left when the phase opened that is done now: what the estimates go by
        ran = min(1.0, (done - self.initial) / (self.total - self.initial)) if self.total > self.initial else 1.0
        if self.estimate is None and 0 < ran < 1 and (elapsed >= TIME_FIRST or ran >= SHARE_FIRST):
            self.estimate = elapsed / ran
            if self.estimate >= ESTIMATE_FROM and self.announce:
                self._write(f"{self.what}: about {duration(self.estimate)}{' for ' + self.part if self.part else ''} "
                            f"({duration(elapsed)} for the first "
                            f"{done - self.initial:,} of {self.total - self.initial:,}"
                            f"{' ' + self.unit if self.unit else ''})")
        if not self.show:
            return
        if is_terminal(self.stream):
            self._draw_bar(done)
        elif share < 1 and now - self._last_line >= LINE_EVERY and (
                share - self._last_share >= LINE_SHARE or now - self._last_line >= LINE_AT_LEAST):
            left = elapsed / ran * (1 - ran) if ran > 0 else None
            self._write(f"{self.what}: {done:,} of {self.total:,}{' ' + self.unit if self.unit else ''} "
                        f"({100 * share:.0f}%), {duration(elapsed)} so far"
                        + (f", about {duration(left)} left{' in ' + self.part if self.part else ''}"
                           if left is not None else "")
                        + "".join(f", {k} {v}" for k, v in self._postfix.items()))
            self.lines += 1
            self._last_line, self._last_share = now, share

    def postfix(self, **values: str) -> None:
        """Numbers to show with the progress (``loss="1.234"``): after the bar on a terminal, at the end of
        the next plain line elsewhere."""
        self._postfix = dict(values)
        if self._bar is not None:
            self._bar.set_postfix(values)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        if not self.closing:
            return
        if self.lines or (self.announce and self.estimate is not None and self.estimate >= ESTIMATE_FROM):
            self._write(f"{self.what}: done in {duration(self.clock() - self.start)}")

    # -- output ------------------------------------------------------------------------------------
    def _draw_bar(self, done: int) -> None:
        if self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, desc=self.what, unit=f" {self.unit}" if self.unit else "it",
                             initial=self.initial, leave=False, dynamic_ncols=True, file=self.stream)
        self._bar.update(done - self._bar.n)

    def _write(self, text: str) -> None:
        line = f"{self.prefix}{text}"
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)


@contextmanager
def phase(what: str, total: int | None = None, unit: str = "", *, show: bool = False, prefix: str = "",
          stream: TextIO | None = None, clock: Callable[[], float] | None = None, initial: int = 0,
          announce: bool = True, closing: bool = True, part: str = "") -> Iterator[Phase]:
    """A :class:`Phase` for the ``with`` block, closed at its end. Opened without a ``total``, it takes the
    :func:`tick` calls of the loops run inside it; with one, it hides the enclosing phase from them."""
    p = Phase(what, total, unit, show=show, prefix=prefix, stream=stream, clock=clock, initial=initial,
              announce=announce, closing=closing, part=part)
    token = _OPEN.set(p if total is None else None)
    try:
        yield p
    finally:
        _OPEN.reset(token)
        p.close()


def tick(done: int, total: int) -> None:
    """``done`` of ``total`` steps of a loop are finished: reported to the innermost phase opened without
    a total (see :func:`phase`), ignored outside one."""
    p = _OPEN.get()
    if p is not None:
        p.update(done, total)
