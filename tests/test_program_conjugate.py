"""Closed-form EM wired into a program: the program's values read and written through its point-mass guide
or its parameters, the gmm family's steps built with the program's priors, and the log prior."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Dirichlet, LogNormal, Normal

import ppgen
from ppgen.data.core import DataInfo
from ppgen.program.bernoulli_em import BernoulliMixtureEM
from ppgen.program.conjugate import ConjugateEM
from ppgen.program.mixture_form import NotConjugate

POINTS = DataInfo((2,), "continuous")
GAUSS = {
    "family": "program", "data": {"name": "toy2d"}, "guide_globals": "delta",
    "model": {
        "w": {"dist": "Dirichlet", "concentration": [2.0, 2.0], "global": True},
        "mu": {"dist": "Normal", "loc": 1.0, "scale": 3.0, "shape": [2, 2], "global": True},
        "sd": {"dist": "LogNormal", "loc": "log(0.5)", "scale": 0.7, "shape": [2, 2], "global": True},
        "c": {"dist": "Categorical", "probs": "w", "enumerate": "parallel"},
        "x": {"dist": "Normal", "loc": "onehot(c, 2) @ mu", "scale": "onehot(c, 2) @ sd", "observed": "x"},
    },
}
THETA = {"weights": torch.tensor([0.3, 0.7], dtype=torch.float64),
         "locs": torch.tensor([[0.0, 1.0], [2.0, -1.0]], dtype=torch.float64),
         "scales": torch.tensor([[0.5, 1.0], [2.0, 0.25]], dtype=torch.float64)}


def _model(spec: dict = GAUSS, info: DataInfo = POINTS):
    with torch.random.fork_rng(devices=[]):
        return ppgen.build(spec, info)


def test_a_program_family_is_conjugate_em_and_its_point_round_trips():
    model = _model()
    assert isinstance(model, ConjugateEM)
    model.point.set(THETA)
    got = model.point.values()
    for role, value in THETA.items():
        torch.testing.assert_close(got[role].double(), value, atol=1e-6, rtol=1e-6)
    # written into the point-mass guide's unconstrained values
    params = model._modules["params"]
    torch.testing.assert_close(params.auto__sd__value.detach().double(), THETA["scales"].log(), atol=1e-6, rtol=1e-6)
    assert not bool(model.initialized)


def test_the_steps_are_the_gmm_familys_with_the_programs_priors():
    model = _model()
    model.em_check(flat=False)
    gmm = model._em_gmm()
    assert type(gmm).__name__ == "GMM" and gmm is model._em_gmm()
    prior = gmm.spec.prior
    assert prior.weights_concentration == 2.0 and (prior.loc.mean, prior.loc.std) == (1.0, 3.0)
    assert math.isclose(prior.scale.median, 0.5, rel_tol=1e-6) and math.isclose(prior.scale.log_std, 0.7, rel_tol=1e-6)
    assert gmm.spec.covariance == "diag" and gmm.spec.components == 2
    assert len(model.sites) == 3


def test_log_prior_is_the_declared_priors_density():
    model = _model()
    theta = {k: v[None] for k, v in THETA.items()}
    expect = (Dirichlet(torch.tensor([2.0, 2.0], dtype=torch.float64)).log_prob(THETA["weights"])
              + Normal(torch.tensor(1.0, dtype=torch.float64), 3.0).log_prob(THETA["locs"]).sum()
              + LogNormal(torch.tensor(math.log(0.5), dtype=torch.float64), 0.7).log_prob(THETA["scales"]).sum())
    torch.testing.assert_close(model.log_prior(theta)[0], expect, atol=1e-6, rtol=1e-6)


def test_a_flat_mixture_has_zero_log_prior_and_writes_its_parameters():
    spec = {"family": "program", "data": {"name": "toy2d"},
            "params": {"w": {"shape": [2], "init": 0.5, "constraint": "simplex"},
                       "mu": {"shape": [2, 2], "init": 0.0},
                       "sd": {"shape": [2], "init": 1.0, "constraint": "positive"}},
            "model": {"c": GAUSS["model"]["c"], "x": GAUSS["model"]["x"]}}
    model = _model(spec)
    theta = {"weights": THETA["weights"], "locs": THETA["locs"], "scales": torch.tensor([0.5, 2.0], dtype=torch.float64)}
    torch.testing.assert_close(model.log_prior({k: v[None] for k, v in theta.items()}),
                               torch.zeros(1, dtype=torch.float64))
    model.point.set(theta)
    params = model._modules["params"]
    torch.testing.assert_close(params.value("sd").double(), theta["scales"], atol=1e-6, rtol=1e-6)
    assert model._em_gmm().spec.covariance == "spherical"


def test_a_bernoulli_mixture_uses_its_own_steps_on_flattened_images():
    spec = {"family": "program", "data": {"name": "digits"}, "guide_globals": "delta",
            "params": {"w": {"shape": [2], "init": 0.5, "constraint": "simplex"},
                       "p": {"shape": [2, 4], "init": 0.5, "constraint": "unit_interval"}},
            "model": {"c": {"dist": "Categorical", "probs": "w", "enumerate": "parallel"},
                      "x": {"dist": "Bernoulli", "probs": "onehot(c, 2) @ p", "observed": "x", "shape": [4]}}}
    model = _model(spec, DataInfo((1, 2, 2), "binary"))
    assert isinstance(model._em_gmm(), BernoulliMixtureEM) and model.sites == ()
    x = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]], dtype=torch.float64)
    theta = {"weights": torch.tensor([[0.5, 0.5]], dtype=torch.float64),
             "probs": torch.full((1, 2, 4), 0.5, dtype=torch.float64)}
    _, ll = model.em_statistics(x, theta)
    torch.testing.assert_close(ll, torch.tensor([4 * math.log(0.5)], dtype=torch.float64))


def test_em_check_refuses_a_program_that_is_not_a_mixture():
    spec = {**GAUSS, "model": {**GAUSS["model"], "x": {**GAUSS["model"]["x"], "dist": "Laplace"}}}
    model = _model(spec)
    with pytest.raises(NotConjugate, match="model.x is Laplace of shape"):
        model.em_check(flat=False)
