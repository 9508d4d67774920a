"""The energy families' figures drawn with the object API: each weight filter scaled to its own range,
Gibbs chains laid out chain by row and step by column, the files drawn for image and other data, and
the trace and rank panels of the chain statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ppgen
from ppgen.arviz_data import arviz
from ppgen.data.core import DataInfo, Dataset
from ppgen.plots import energy as energy_plots


def test_each_filter_is_scaled_to_its_own_range(tmp_path, saved):
    W = torch.tensor([[0.0, 10.0, -1.0], [1.0, 20.0, -1.0], [2.0, 30.0, -1.0], [3.0, 40.0, -1.0]])  # (D=4, hidden 3)
    path = energy_plots.filters_figure(W, (1, 2, 2), tmp_path / "filters.png")
    assert path.stat().st_size > 0
    ax = saved[0].axes[0]
    grid = np.asarray(ax.images[0].get_array())
    assert grid.shape[:2] == (2 * 3 + 1, 2 * 3 + 1)  # three filters in a 2 x 2 grid
    first = grid[1:3, 1:3]
    np.testing.assert_allclose(first, [[0.0, 1 / 3], [2 / 3, 1.0]])
    np.testing.assert_allclose(grid[1:3, 4:6], [[0.0, 1 / 3], [2 / 3, 1.0]])  # 10..40 scaled the same way
    np.testing.assert_allclose(grid[4:6, 1:3], 0.0)  # a constant filter is 0, not a division by zero
    assert ax.get_title() == "weight filters of the first 3 hidden units"


def test_chains_are_rows_and_gibbs_steps_columns(tmp_path, saved):
    shots = [torch.full((2, 1, 2, 2), float(k) / 4) + torch.tensor([0.0, 0.1]).reshape(2, 1, 1, 1) for k in range(3)]
    energy_plots.chains_figure(shots, [0, 1, 10], tmp_path / "chains.png")
    fig = saved[0]
    np.testing.assert_allclose(fig.get_size_inches(), [3.8, 2.6])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["k=0", "k=1", "k=10"]
    grid = np.asarray(ax.images[0].get_array())
    for row in range(2):
        for col in range(3):
            cell = grid[1 + 3 * row: 3 + 3 * row, 1 + 3 * col: 3 + 3 * col]
            np.testing.assert_allclose(cell, col / 4 + 0.1 * row, rtol=1e-6)


def _rbm(event: tuple[int, ...]):
    spec = {"family": "rbm", "data": {"name": "digits", "binarize": "static"}, "hidden": 3,
            "init": {"visible_bias": "zero"}, "sampling": {"steps": 2, "chains": 2, "warmup": 2, "draws": 4}}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return ppgen.build(spec, DataInfo(event, "binary"))


def test_image_figures_and_the_random_state_left_as_it_was(tmp_path):
    model = _rbm((1, 4, 4))
    x = (torch.rand(12, 1, 4, 4, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    torch.manual_seed(9)
    before = torch.get_rng_state()
    out = energy_plots.figures(model, tmp_path, Dataset("digits", x, x, x, binarize="static"))
    assert torch.equal(torch.get_rng_state(), before)
    assert set(out) == {"filters", "gibbs_chains", "samples"}
    assert all(p.stat().st_size > 0 for p in out.values())


def test_trace_and_rank_panels_of_the_chain_statistics(tmp_path, saved):
    g = np.random.default_rng(0)
    stats = {"free_energy": g.normal(size=(2, 20)), "mean_hidden": g.random((2, 20))}
    idata = arviz().from_dict(sample_stats=stats)
    out = energy_plots.diagnostic_figures(_rbm((1, 4, 4)), idata, tmp_path)
    assert set(out) == {"trace", "rank"} and len(saved) == 2
    trace = saved[0]
    np.testing.assert_allclose(trace.get_size_inches(), [9, 2.0 * 2 + 0.8])
    axes = trace.axes
    assert len(axes) == 4 and [a.get_ylabel() for a in axes[0::2]] == ["density", "density"]
    assert [a.get_xlabel() for a in axes[1::2]] == ["draw", "draw"]
    assert all(a.lines or a.collections for a in axes)
    rank = saved[1]
    assert len(rank.axes) == 2 and all(a.patches or a.collections or a.lines for a in rank.axes)
