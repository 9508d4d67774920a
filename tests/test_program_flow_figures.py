"""Figures of a 2-D flow program drawn with the object API: the density image equals p(x) on its grid,
and the warp's right panel is the base grid pushed through the layers (a reversal of the coordinates
here, so known exactly)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.distributions import Normal

import ppgen
from ppgen.data.core import DataInfo, Dataset
from ppgen.program.flow_figures import _limits, density, flow_figures, warp

POINTS = DataInfo((2,), "continuous")
LOC, SCALE = [0.5, -1.0], [2.0, 1.0]
FLOW = {"family": "program", "data": {"name": "toy2d"},
        "model": {"x": {"dist": "TransformedDistribution", "base": {"dist": "Normal", "loc": LOC, "scale": SCALE},
                        "transforms": [{"kind": "reverse"}], "observed": "x"}}}


def _build(spec: dict):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return ppgen.build(spec, POINTS)


def _reversed_log_density(pts: torch.Tensor) -> torch.Tensor:
    # x = reverse(u), u ~ N(LOC, SCALE): x[0] = u[1], x[1] = u[0]
    return Normal(torch.tensor(LOC), torch.tensor(SCALE)).log_prob(pts.flip(-1)).sum(-1)


X = torch.tensor([[-1.0, 0.0], [1.0, 2.0], [0.0, 4.0]])


def test_limits_pad_the_data_range():
    (x0, x1), (y0, y1) = _limits(X, margin=0.5)
    assert (x0, x1) == pytest.approx((-2.001, 2.001)) and (y0, y1) == pytest.approx((-2.001, 6.001))


def test_the_density_image_is_p_of_x_on_its_grid(tmp_path, saved):
    model = _build(FLOW)
    density(model, X, tmp_path / "d.png", steps=7)
    axes = saved[0].axes
    img = np.asarray(axes[0].images[0].get_array())
    (x0, x1), (y0, y1) = _limits(X)
    gx, gy = torch.linspace(x0, x1, 7), torch.linspace(y0, y1, 7)
    expect = torch.stack([torch.stack([_reversed_log_density(torch.stack([a, b])) for a in gx]) for b in gy]).exp()
    np.testing.assert_allclose(img, expect.numpy(), rtol=1e-5, atol=1e-8)
    assert axes[0].images[0].origin == "lower" and tuple(axes[0].images[0].get_extent()) == pytest.approx((x0, x1, y0, y1))
    np.testing.assert_allclose(np.asarray(axes[1].collections[0].get_offsets()), X.numpy())


def test_the_warp_pushes_the_base_grid_through_the_layers(tmp_path, saved):
    model = _build(FLOW)
    torch.manual_seed(0)
    warp(model, X, tmp_path / "w.png", lines=3, points=5, span=1.0)
    left, right = saved[0].axes
    assert len(left.get_lines()) == len(right.get_lines()) == 6  # a horizontal and a vertical line per level
    first = np.stack([left.get_lines()[0].get_xdata(), left.get_lines()[0].get_ydata()], 1)
    t = np.linspace(-1.0, 1.0, 5)
    np.testing.assert_allclose(first, np.stack([t * 2.0 + 0.5, np.full(5, -1.0 * 1.0 - 1.0)], 1), rtol=1e-6)
    for a, b in zip(left.get_lines(), right.get_lines()):
        np.testing.assert_allclose(b.get_xdata(), a.get_ydata(), rtol=1e-6)
        np.testing.assert_allclose(b.get_ydata(), a.get_xdata(), rtol=1e-6)


def test_flow_figures_for_2d_data_only(tmp_path):
    data = Dataset("toy2d", X, X, X)
    out = flow_figures(_build(FLOW), data, tmp_path)
    assert set(out) == {"density", "warp"} and all(p.stat().st_size > 0 for p in out.values())
    latent = {"family": "program", "data": {"name": "toy2d"},
              "model": {"z": {"dist": "Normal", "loc": 0.0, "scale": 1.0, "shape": [2]},
                        "x": {"dist": "Normal", "loc": "z", "scale": 1.0, "observed": "x"}}}
    assert flow_figures(_build(latent), data, tmp_path / "b") == {}  # not exact, not a flow
    gaussian = {"family": "program", "data": {"name": "toy2d"},
                "model": {"x": {"dist": "Normal", "loc": 0.0, "scale": 1.0, "observed": "x"}}}
    assert set(flow_figures(_build(gaussian), data, tmp_path / "c")) == {"density"}
