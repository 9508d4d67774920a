"""Uniform dequantization: the level of each intensity, the one-draw bound's value on a density known in
closed form, the levels drawn, and the checks and defaults of the ``dequantize`` key."""

from __future__ import annotations

import math

import pytest
import torch

from ppgen.data.core import DataInfo
from ppgen.program.dequantize import Dequant, DequantizeDecl, Dequantized, check, resolve
from ppgen.program.dists import TABLE, build
from ppgen.spec import SpecError

GREY = DataInfo((1, 8, 8), "continuous", 10)


def _uniform_cube(d: int) -> torch.distributions.Distribution:
    return torch.distributions.Independent(torch.distributions.Uniform(torch.zeros(d), torch.ones(d)), 1)


def test_a_uniform_density_gives_every_cell_probability_one_over_l_to_the_d():
    # p = 1 on [0, 1)^3: log P(k) = -3 log L exactly, whatever the noise
    d = Dequantized(_uniform_cube(3), levels=17, scale=16.0)
    x = torch.tensor([[0.0, 0.5, 1.0], [0.0625, 0.0, 0.25]])
    torch.testing.assert_close(d.log_prob(x), torch.full((2,), -3 * math.log(17)))


def test_the_bound_scores_the_density_inside_the_levels_cell():
    # a density on [0, 1) that is 2y: the cell of level k of L=4 is [k/4, (k+1)/4)
    class Linear(torch.distributions.Distribution):
        arg_constraints: dict = {}

        def __init__(self):
            super().__init__(torch.Size(), torch.Size(), validate_args=False)

        def log_prob(self, y):
            return torch.log(2 * y)

    torch.manual_seed(0)
    d = Dequantized(Linear(), levels=4, scale=3.0)
    x = torch.full((20000,), 2 / 3)  # level 2: y in [0.5, 0.75)
    lp = d.log_prob(x)
    y = torch.exp(lp + math.log(4)) / 2
    assert float(y.min()) >= 0.5 and float(y.max()) < 0.75
    # E_u[log 2y] - log 4 over the cell, in closed form: 4 * integral_{1/2}^{3/4} log(2y) dy - log 4
    def antiderivative(t):
        return t * math.log(2 * t) - t
    exact = 4 * (antiderivative(0.75) - antiderivative(0.5)) - math.log(4)
    assert abs(float(lp.mean()) - exact) < 0.01


def test_values_off_the_grid_are_refused():
    d = Dequantized(_uniform_cube(2), levels=4, scale=3.0)
    with pytest.raises(ValueError, match="dequantize with 4 levels and scale 3 needs intensities k / 3"):
        d.log_prob(torch.tensor([0.5, 0.0]))
    with pytest.raises(ValueError, match="for whole k in 0..3"):
        d.log_prob(torch.tensor([4 / 3, 0.0]))


def test_samples_are_the_levels_of_the_densitys_draws():
    torch.manual_seed(0)
    d = Dequantized(_uniform_cube(2), levels=4, scale=3.0)
    s = d.sample((4000,))
    assert s.shape == (4000, 2)
    assert set((s * 3).round().unique().tolist()) == {0.0, 1.0, 2.0, 3.0}
    # a density outside [0, 1) is clipped to the end levels
    wide = Dequantized(torch.distributions.Independent(torch.distributions.Uniform(-torch.ones(1), 2 * torch.ones(1)), 1),
                       levels=4, scale=3.0)
    t = wide.sample((2000,))
    assert float(t.min()) == 0.0 and float(t.max()) == 1.0
    assert d.expand((5,)).batch_shape == (5,)


def test_build_wraps_a_site_that_declares_dequantize():
    d = build(TABLE["Normal"], {"loc": torch.full((2,), 0.5), "scale": torch.ones(2)}, (2,),
              {"dequantize": Dequant(256, 256.0)})
    assert isinstance(d, Dequantized) and d.event_shape == (2,) and d.levels == 256


def test_check_applies_to_the_continuous_likelihood_of_x_only():
    assert check("model.x", "uniform", TABLE["Normal"], "model", "x") == DequantizeDecl()
    decl = DequantizeDecl(levels=17)
    assert check("model.x", decl, TABLE["Normal"], "model", "x") is decl
    with pytest.raises(SpecError, match=r"guide\.x\.dequantize: applies to the model's observed site x only"):
        check("guide.x", "uniform", TABLE["Normal"], "guide", None)
    with pytest.raises(SpecError, match=r"model\.x\.dequantize: Bernoulli is not a density on continuous values"):
        check("model.x", "uniform", TABLE["Bernoulli"], "model", "x")
    with pytest.raises(SpecError, match="MixtureSameFamily is not a density"):
        check("model.x", "uniform", TABLE["MixtureSameFamily"], "model", "x")


def test_resolve_takes_each_data_sets_levels_and_scale():
    decl = DequantizeDecl()
    assert resolve("model.x", decl, GREY, "mnist") == Dequant(256, 256.0)
    assert resolve("model.x", decl, GREY, "digits") == Dequant(17, 16.0)
    assert resolve("model.x", decl, GREY, "images") == Dequant(256, 255.0)
    assert resolve("model.x", DequantizeDecl(levels=5), GREY, "npz") == Dequant(5, 4.0)
    assert resolve("model.x", DequantizeDecl(levels=5, scale=5), GREY, "npz") == Dequant(5, 5.0)
    with pytest.raises(SpecError, match=r"model\.x\.dequantize: the data are binarized"):
        resolve("model.x", decl, DataInfo((1, 8, 8), "binary"), "mnist")
    with pytest.raises(SpecError, match="toy2d data are continuous already"):
        resolve("model.x", decl, DataInfo((2,), "continuous"), "toy2d")
