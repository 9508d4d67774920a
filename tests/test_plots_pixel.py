"""The autoregressive families' figures drawn with the object API: completions keep the upper half and
show the hidden half as a checkerboard, samples one row per class for a conditional model, and the
diagnostic figures chosen by what the InferenceData holds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ppgen
from ppgen.arviz_data import arviz
from ppgen.data.core import DataInfo, Dataset
from ppgen.plots import pixel as pixel_plots


def _pixelcnn(conditional: bool = False):
    spec = {"family": "pixelcnn", "data": {"name": "digits", "binarize": "static"}, "conditional": conditional,
            "net": {"channels": 4, "blocks": 1, "head": 4, "first_kernel": 3}}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return ppgen.build(spec, DataInfo((1, 4, 4), "binary", 3))


def _data(n: int = 8) -> Dataset:
    x = (torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    y = torch.arange(n) % 3
    return Dataset("digits", x, x, x, y, y, y, binarize="static", num_classes=3)


def test_completions_keep_the_upper_half_and_checker_the_hidden_half(tmp_path, saved):
    model = _pixelcnn()
    x = _data(3).test_x
    pixel_plots.completion_figure(model, x, None, tmp_path / "c.png", draws=2)
    fig = saved[0]
    np.testing.assert_allclose(fig.get_size_inches(), [3.5, 4.5])
    grid = np.asarray(fig.axes[0].images[0].get_array())
    assert grid.shape[:2] == (4 * 5 + 1, 3 * 5 + 1)  # rows: data, upper halves, two completions

    def cell(row, col):
        return grid[1 + 5 * row: 5 + 5 * row, 1 + 5 * col: 5 + 5 * col]

    for col in range(3):
        image = x[col, 0].numpy()
        np.testing.assert_allclose(cell(0, col), image)
        np.testing.assert_allclose(cell(1, col)[:2], image[:2])
        np.testing.assert_allclose(cell(1, col)[2:], [[0.3, 0.7, 0.3, 0.7], [0.7, 0.3, 0.7, 0.3]], rtol=1e-6)
        for draw in (2, 3):
            np.testing.assert_allclose(cell(draw, col)[:2], image[:2])
            assert set(np.unique(cell(draw, col)[2:])) <= {0.0, 1.0}


def test_a_conditional_model_draws_one_row_of_eight_per_class(tmp_path, monkeypatch):
    model = _pixelcnn(conditional=True)
    asked = []
    sample = model.sample
    monkeypatch.setattr(model, "sample", lambda n, y=None, **k: asked.append(y) or sample(n, y=y, **k))
    out = pixel_plots.figures(model, tmp_path, _data())
    assert set(out) == {"samples", "completions"} and all(p.stat().st_size > 0 for p in out.values())
    assert asked[0].tolist() == [0] * 8 + [1] * 8 + [2] * 8


def test_diagnostic_figures_follow_the_groups(tmp_path):
    model = _pixelcnn()
    az = arviz()
    g = np.random.default_rng(0)
    with_pixels = az.from_dict(log_likelihood={"x": g.normal(size=(1, 4, 2, 16))},
                               dims={"x": ["obs", "pixel"]},
                               sample_stats={"loss": np.array([[3.0, 2.0]]), "step": np.array([[1, 2]])})
    out = pixel_plots.diagnostic_figures(model, with_pixels, tmp_path / "a")
    assert set(out) == {"pixel_nll", "loss_trace"}
    bare = az.from_dict(log_likelihood={"x": g.normal(size=(1, 4, 2))}, dims={"x": ["obs"]})
    assert pixel_plots.diagnostic_figures(model, bare, tmp_path / "b") == {}
