"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small tensors: one thread avoids oversubscribing a shared CPU (restored afterwards). A module
    opts in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def no_pyplot_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    """ppgen draws with matplotlib's object API and leaves pyplot (and so a notebook's backend and its
    open figures) alone: a figure made through ``pyplot.figure`` (``pyplot.subplots`` calls it) in a
    test fails it."""
    import matplotlib.pyplot as plt

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a figure was made through matplotlib.pyplot; draw with ppgen.plots.common.subplots "
                             "(matplotlib's object API)")

    monkeypatch.setattr(plt, "figure", refuse)


@pytest.fixture
def saved(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every matplotlib Figure saved during the test, in the order saved (the files are still written)."""
    from matplotlib.figure import Figure

    out: list = []
    real = Figure.savefig

    def savefig(fig, fname, *args, **kwargs):
        out.append(fig)
        return real(fig, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return out
