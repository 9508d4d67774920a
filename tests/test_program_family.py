"""The program family's own logic: which objective its svi fit reports, the size that weights global sites,
the start of the global guides, the view of x, and log p(x) exact where nothing is sampled."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

import ppgen
from ppgen.data.core import DataInfo
from ppgen.program.family import SVI_BOUND, SVI_EXACT, ProgramFamily
from ppgen.program.schema import ProgramSpec
from ppgen.spec import SpecError

POINTS = DataInfo((2,), "continuous")
MIXTURE = {
    "family": "program", "data": {"name": "toy2d"},
    "params": {"mu": {"shape": [2, 2], "init": [[0.0, 0.0], [2.0, -1.0]]}},
    "model": {"c": {"dist": "Categorical", "probs": [0.3, 0.7], "enumerate": "parallel"},
              "x": {"dist": "Normal", "loc": "onehot(c, 2) @ mu", "scale": 0.5, "observed": "x"}},
}
LATENT = {
    "family": "program", "data": {"name": "toy2d"},
    "model": {"z": {"dist": "Normal", "loc": 0.0, "scale": 1.0, "shape": [2]},
              "x": {"dist": "Normal", "loc": "z", "scale": 0.5, "observed": "x"}},
}


def _build(spec: dict, info: DataInfo = POINTS) -> ProgramFamily:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return ppgen.build(spec, info)


def test_the_svi_objective_is_exact_only_when_nothing_is_sampled():
    assert ProgramFamily.svi_objective(ProgramSpec.model_validate(MIXTURE)) == SVI_EXACT
    assert ProgramFamily.svi_objective(ProgramSpec.model_validate(LATENT)) == SVI_BOUND
    declared = {**MIXTURE, "model": {**MIXTURE["model"], "c": {"dist": "Categorical", "probs": [0.3, 0.7]}},
                "guide": {"c": {"dist": "Categorical", "probs": [0.5, 0.5]}}}
    assert ProgramFamily.svi_objective(ProgramSpec.model_validate(declared)) == SVI_BOUND
    assert SVI_EXACT != SVI_BOUND


def test_log_likelihood_of_an_enumerated_mixture_is_exact():
    model = _build(MIXTURE)
    x = torch.tensor([[0.1, -0.2], [1.5, -1.0]])
    est, se = model.log_likelihood(x, k=3)
    mu = torch.tensor([[0.0, 0.0], [2.0, -1.0]])
    comp = Normal(mu[None], 0.5).log_prob(x[:, None]).sum(-1) + torch.log(torch.tensor([0.3, 0.7]))
    torch.testing.assert_close(est, torch.logsumexp(comp, 1))
    assert float(se.abs().max()) == 0.0
    assert not model.likelihood_is_discrete() and not model.importance_samples


def test_log_likelihood_sums_over_a_label_site():
    spec = {**MIXTURE, "model": {"y": {"dist": "Categorical", "probs": [0.3, 0.7], "observed": "y"},
                                 "x": {"dist": "Normal", "loc": "onehot(y, 2) @ mu", "scale": 0.5, "observed": "x"}}}
    model = _build(spec, DataInfo((2,), "continuous", 2))
    x = torch.tensor([[0.1, -0.2]])
    per_class = model.class_log_likelihoods(x, k=2)
    mu = torch.tensor([[0.0, 0.0], [2.0, -1.0]])
    expect = Normal(mu, 0.5).log_prob(x).sum(-1) + torch.log(torch.tensor([0.3, 0.7]))
    torch.testing.assert_close(per_class[0], expect)
    torch.testing.assert_close(model.log_likelihood(x, k=2)[0], torch.logsumexp(expect, 0, keepdim=True))
    with pytest.raises(SpecError, match="class_log_likelihoods: the program has no site observed: y"):
        _build(MIXTURE).class_log_likelihoods(x)


def test_a_delta_guide_of_local_latents_has_no_likelihood_estimate():
    model = _build({**LATENT, "guide": "delta"})
    assert model.log_likelihood(torch.zeros(3, 2), k=2) is None and not model.importance_samples


def test_num_data_weights_global_sites_only():
    assert _build(LATENT).num_data() == 1
    spec = {**LATENT, "model": {"m": {"dist": "Normal", "loc": 0.0, "scale": 1.0, "shape": [2], "global": True},
                                "x": {"dist": "Normal", "loc": "m", "scale": 0.5, "observed": "x"}}}
    assert _build(spec, DataInfo((2,), "continuous", n_train=40)).num_data() == 40
    assert _build({**spec, "num_data": 7}, DataInfo((2,), "continuous", n_train=40)).num_data() == 7
    with pytest.raises(SpecError, match="num_data: the model was built without the size of its training set"):
        _build(spec).num_data()


def test_the_global_guides_start_at_the_priors_median():
    spec = {**LATENT, "num_data": 10,
            "model": {"m": {"dist": "Normal", "loc": 3.0, "scale": 0.01, "shape": [2], "global": True},
                      "s": {"dist": "LogNormal", "loc": "log(2.0)", "scale": 0.01, "global": True},
                      "x": {"dist": "Normal", "loc": "m", "scale": "s", "observed": "x"}}}
    params = _build(spec)._modules["params"]
    torch.testing.assert_close(params.auto__m__loc.detach(), torch.full((2,), 3.0), atol=0.03, rtol=0)
    assert abs(float(params.auto__s__loc.detach()) - math.log(2.0)) < 0.03  # the unconstrained (log) median
    delta = _build({**spec, "guide_globals": "delta"})._modules["params"]
    torch.testing.assert_close(delta.auto__m__value.detach(), torch.full((2,), 3.0), atol=0.03, rtol=0)


def test_x_is_viewed_in_the_sites_shape_and_back():
    spec = {"family": "program", "data": {"name": "digits"},
            "model": {"x": {"dist": "Bernoulli", "logits": 0.0, "observed": "x", "shape": [4]}}}
    model = _build(spec, DataInfo((1, 2, 2), "binary"))
    x = torch.arange(8.0).reshape(2, 1, 2, 2)
    assert model._x_in(x).shape == (2, 4)
    torch.testing.assert_close(model._x_out(model._x_in(x)), x)
    assert model._dummy_x(3).shape == (3, 4) and float(model._dummy_x(3).abs().sum()) == 0.0
    assert model.likelihood_is_discrete()
    torch.testing.assert_close(model.log_likelihood(torch.zeros(2, 1, 2, 2))[0], torch.full((2,), 4 * math.log(0.5)))
