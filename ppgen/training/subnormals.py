"""Subnormal floats flushed to zero while a model trains.

A float32 below 2**-126 (about 1.2e-38) in magnitude is subnormal. x86 CPUs compute with such values
in microcode, many times slower than with normal ones. Training can make them by the million: in the
semi-supervised M2, once q(y | x) rules a class out its weight in the sum over classes falls below that,
and every gradient that flows back through the networks for that class is scaled by it. On an Intel Xeon
(2 cores, torch 2.13 with MKL, one thread), the epochs of M2 with a decoder per class grew from 45 s to
243 s as q(y | x) became confident, and a step of the fitted model took 0.634 s against 0.116 s with
subnormals flushed (``python benchmarks/labels.py subnormals --run RUN`` measures the ratio on a CPU).

:func:`flushing_subnormals` turns on the processor's flush-to-zero and denormals-are-zero mode
(:func:`torch.set_flush_denormal`) for the fit and puts back the mode it found when the fit ends, so the
caller's process is left as it was. Arithmetic then differs from IEEE 754 only where a value would be
subnormal: such a value becomes 0, a change below 1.2e-38 in size, which float32 cannot even represent
beside any number above about 1e-31. The mode belongs to a thread: it holds in the thread that trains,
which on a CPU does every operation when torch runs one thread a process (ppgen's benchmarks run so) and
a share of them otherwise. Where the CPU has no such mode (``set_flush_denormal`` returns False) nothing
changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["flushing", "flushing_subnormals"]


def flushing() -> bool:
    """Whether this thread flushes subnormal floats to zero now: 2e-30 * 1e-10 is subnormal in float32."""
    return float(torch.tensor(2e-30, dtype=torch.float32) * 1e-10) == 0.0


@contextmanager
def flushing_subnormals() -> Iterator[bool]:
    """Flush subnormal floats to zero in this thread inside the block, and restore the mode found on exit.
    Yields whether the mode is on inside (False where the CPU has none)."""
    before = flushing()
    on = before or torch.set_flush_denormal(True)
    try:
        yield on
    finally:
        if on and not before:
            torch.set_flush_denormal(False)
