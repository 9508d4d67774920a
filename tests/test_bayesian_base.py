"""The Bayesian family base (ppgen.models.bayesian.base.BayesFamily) on a two-component mixture of unit-variance
Normals defined here, so that every number has a closed form: the parameter store (point estimate as
unconstrained parameters, posterior draws as buffers, both in the state dict), parameter values with a
leading batch, relabelling of label-switched draws, the log prior, log joint and MAP loss against their
formulas and against TraceEnum_ELBO, the held-out likelihood (plug-in, or averaged over draws), a
data-driven start taken once, and which InferenceData a fit gets."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pydantic
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO
from torch.distributions import constraints

from ppgen.data.core import DataInfo
from ppgen.models.bayesian.base import BayesFamily, NormalPrior, ScalePrior, tensor_options
from ppgen.models.bayesian.stores import Site, Theta
from ppgen.spec import ModelSpec, SpecError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONCENTRATION, LOC_STD = 2.0, 3.0


class TwoNormals(BayesFamily):
    """weights ~ Dirichlet(2, 2), locs[k] ~ Normal(0, 3), z_n ~ Categorical(weights), x_n ~ Normal(locs[z_n], 1)."""

    family_name = "two_normals"
    unit = "data point"

    def build_sites(self) -> list[Site]:
        return [Site("weights", (2,), constraints.simplex, ("component",), (0,)),
                Site("locs", (2,), constraints.real, ("component",), (0,))]

    def prior(self, name: str, like: torch.Tensor | None = None) -> dist.Distribution:
        opts = tensor_options(like)
        if name == "weights":
            return dist.Dirichlet(torch.full((2,), CONCENTRATION, **opts))
        return dist.Normal(torch.zeros(2, **opts), torch.full((2,), LOC_STD, **opts)).to_event(1)

    def default_values(self) -> Theta:
        return {"weights": torch.tensor([0.25, 0.75]), "locs": torch.tensor([-1.0, 2.0])}

    def log_lik(self, x: torch.Tensor, theta: Theta) -> torch.Tensor:
        comp = dist.Normal(theta["locs"][:, None, :], 1.0).log_prob(x[None, :, None])  # (S, N, 2)
        return torch.logsumexp(theta["weights"].log()[:, None, :] + comp, -1)

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        theta = self.sample_globals()
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Categorical(theta["weights"]), infer={"enumerate": "parallel"})
            pyro.sample("x", dist.Normal(theta["locs"][z], 1.0), obs=x)

    def marginal_model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        theta = self.sample_globals()
        with pyro.plate("data", x.shape[0]):
            mix = dist.MixtureSameFamily(dist.Categorical(theta["weights"]), dist.Normal(theta["locs"], 1.0))
            pyro.sample("x", mix, obs=x)

    def simulate(self, theta: Theta, n: int) -> torch.Tensor:
        z = dist.Categorical(theta["weights"]).sample((n,)).T  # (S, n)
        return torch.gather(theta["locs"], 1, z) + torch.randn(z.shape)

    def signature(self, theta: Theta) -> torch.Tensor:
        return theta["locs"][..., None]

    def init_values(self, x: torch.Tensor, generator: torch.Generator) -> Theta:
        picked = x[torch.randperm(x.shape[0], generator=generator)[:2]]
        return {"weights": torch.tensor([0.5, 0.5]), "locs": picked.sort().values}

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        return self.simulate(self.theta("point"), n)[0]


def _model() -> TwoNormals:
    return TwoNormals(ModelSpec(family="two_normals"), DataInfo((), "continuous"))


X = torch.tensor([-1.5, -0.5, 0.2, 1.8, 2.5])


def _normal_log_pdf(x: float, mean: float, std: float) -> float:
    return -0.5 * ((x - mean) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)


def _log_lik_by_hand(x: float, w: list[float], m: list[float]) -> float:
    return math.log(sum(wk * math.exp(_normal_log_pdf(x, mk, 1.0)) for wk, mk in zip(w, m)))


def _log_prior_by_hand(w: list[float], m: list[float]) -> float:
    # Dirichlet(2, 2) on two weights: Gamma(4) / Gamma(2)^2 * w1 * w2 = 6 w1 w2
    return math.log(6 * w[0] * w[1]) + sum(_normal_log_pdf(mk, 0.0, LOC_STD) for mk in m)


def _draws() -> dict[str, torch.Tensor]:
    """Two chains of three draws; the second chain has its labels the other way round."""
    locs = torch.tensor([[[-1.0, 2.0], [-1.2, 2.1], [-0.9, 1.9]],
                         [[2.2, -1.1], [1.8, -0.8], [2.0, -1.0]]])
    weights = torch.tensor([[[0.3, 0.7], [0.35, 0.65], [0.25, 0.75]],
                            [[0.72, 0.28], [0.6, 0.4], [0.7, 0.3]]])
    return {"weights": weights, "locs": locs}


# --------------------------------------------------------------------------- spec sections and options


def test_tensor_options_follow_the_tensor_given() -> None:
    assert tensor_options(None) == {}
    like = torch.zeros(2, dtype=torch.float64)
    assert tensor_options(like) == {"dtype": torch.float64, "device": like.device}
    model = _model()
    assert model.prior("locs", like=like).mean.dtype == torch.float64
    assert model.prior("locs").mean.dtype == torch.get_default_dtype()


def test_prior_sections_refuse_a_non_positive_spread() -> None:
    assert NormalPrior().std == 10.0 and ScalePrior().median == 1.0 and ScalePrior().log_std == 1.5
    for make in (lambda: NormalPrior(std=0.0), lambda: ScalePrior(median=-1.0), lambda: ScalePrior(log_std=0.0)):
        with pytest.raises(pydantic.ValidationError):
            make()
    with pytest.raises(pydantic.ValidationError, match="scale"):
        NormalPrior(scale=1.0)  # an unknown key


# --------------------------------------------------------------------------- the parameter store


def test_the_point_estimate_is_held_unconstrained_and_starts_at_the_default_values() -> None:
    model = _model()
    params = dict(model.named_parameters())
    assert set(params) == {"point.u_weights", "point.u_locs"}
    assert params["point.u_weights"].shape == (1,)  # a 2-simplex has one free coordinate
    values = model.point.values()
    assert torch.allclose(values["weights"], torch.tensor([0.25, 0.75]))
    assert torch.allclose(values["locs"], torch.tensor([-1.0, 2.0]))
    theta = model.theta()  # no draws: the point estimate with a batch of one
    assert set(theta) == {"weights", "locs"} and theta["locs"].shape == (1, 2)
    assert not theta["locs"].requires_grad
    assert not model.has_posterior
    with pytest.raises(SpecError, match="nuts"):
        model.theta("posterior")


def test_posterior_draws_are_flattened_chain_major_and_travel_in_the_state_dict() -> None:
    model = _model()
    draws = _draws()
    stats = {"diverging": torch.zeros(2, 3, dtype=torch.bool)}
    model.set_posterior(draws, stats)
    assert model.has_posterior and len(model.posterior) == 3
    flat = model.theta()  # auto: the posterior once there is one
    assert flat["locs"].shape == (6, 2)
    assert torch.equal(flat["locs"][3], draws["locs"][1, 0])
    assert torch.equal(model.theta("point")["locs"][0], torch.tensor([-1.0, 2.0]))
    again = _model()
    again.load_state_dict(model.state_dict())
    assert again.has_posterior
    assert torch.equal(again.posterior.draws()["weights"], draws["weights"])
    assert torch.equal(again.posterior.stats()["diverging"], stats["diverging"])


def test_relabelled_theta_undoes_the_swapped_chain() -> None:
    model = _model()
    assert torch.equal(model.relabelled_theta()["locs"], model.theta("point")["locs"])  # no draws: the point
    model.set_posterior(_draws())
    theta = model.relabelled_theta()
    assert theta["locs"].shape == (6, 2)
    assert (theta["locs"][:, 0] < 0).all() and (theta["locs"][:, 1] > 0).all()
    # each weight moves with its component: the small component is the heavier in every draw
    assert (theta["weights"][:, 0] < 0.5).all()
    assert torch.equal(theta["locs"][3], torch.tensor([-1.1, 2.2]))
    assert torch.equal(theta["weights"][3], torch.tensor([0.28, 0.72]))
    _, perms = model.relabel(_draws())
    assert perms[0].tolist() == [[0, 1]] * 3 and perms[1].tolist() == [[1, 0]] * 3


# --------------------------------------------------------------------------- densities


def test_log_prior_log_lik_and_log_joint_equal_their_formulas() -> None:
    model = _model()
    w, m = [0.25, 0.75], [-1.0, 2.0]
    theta = model.theta("point")
    lp = model.log_prior(theta)
    assert lp.shape == (1,)
    assert float(lp) == pytest.approx(_log_prior_by_hand(w, m), abs=1e-5)
    ll = model.log_lik(X, theta)
    assert ll.shape == (1, 5)
    np.testing.assert_allclose(ll[0].numpy(), [_log_lik_by_hand(float(x), w, m) for x in X], atol=1e-5)
    summed = sum(_log_lik_by_hand(float(x), w, m) for x in X)
    assert float(model.log_joint(X, theta)) == pytest.approx(_log_prior_by_hand(w, m) + summed, abs=1e-4)
    # a minibatch of 5 out of 20 counts four times
    assert float(model.log_joint(X, theta, n_total=20)) == pytest.approx(_log_prior_by_hand(w, m) + 4 * summed, abs=1e-4)


def test_map_loss_is_minus_the_log_joint_and_what_traceenum_elbo_computes() -> None:
    model = _model()
    loss = model.map_loss(X)
    assert float(loss.detach()) == pytest.approx(-float(model.log_joint(X, model.theta("point"))), abs=1e-5)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    assert elbo.loss(model.model, model.guide, X) == pytest.approx(float(loss.detach()), abs=1e-4)


def test_the_guide_is_a_point_mass_at_the_point_estimate() -> None:
    model = _model()
    trace = poutine.trace(model.guide).get_trace(X)
    for name, value in model.point.values().items():
        node = trace.nodes[name]
        assert isinstance(node["fn"], dist.Delta)
        assert torch.equal(node["value"], value)
        assert node["fn"].event_dim == 1


def test_log_prior_checks_the_support_unless_told_not_to_and_keeps_one_prior_per_dtype() -> None:
    model = _model()
    outside = {"weights": torch.tensor([[0.9, 0.9]]), "locs": torch.tensor([[0.0, 0.0]])}
    with pytest.raises(ValueError):
        model.log_prior(outside)
    # unchecked, the Dirichlet density is evaluated at the value as it is: log(6 * 0.9 * 0.9)
    expected = math.log(6 * 0.81) + 2 * _normal_log_pdf(0.0, 0.0, LOC_STD)
    assert float(model.log_prior(outside, validate=False)) == pytest.approx(expected, abs=1e-5)
    like32, like64 = torch.zeros(2), torch.zeros(2, dtype=torch.float64)
    assert model._prior_like("locs", like32) is model._prior_like("locs", like32)
    assert model._prior_like("locs", like64) is not model._prior_like("locs", like32)
    theta64 = {k: v.double() for k, v in model.theta("point").items()}
    lp = model.log_prior(theta64)
    assert lp.dtype == torch.float64
    assert float(lp) == pytest.approx(_log_prior_by_hand([0.25, 0.75], [-1.0, 2.0]), abs=1e-6)


# --------------------------------------------------------------------------- held-out likelihood


def test_pointwise_log_lik_in_chunks_equals_one_pass() -> None:
    model = _model()
    model.set_posterior(_draws())
    theta = model.theta()
    whole = model.log_lik(X, theta)
    assert torch.equal(model.pointwise_log_lik(X, theta, chunk=1), whole)  # one parameter value at a time
    assert torch.equal(model.pointwise_log_lik(X, theta, chunk=5 * 4 * 4), whole)  # four at a time


def test_log_likelihood_is_the_plug_in_density_or_the_mean_over_draws() -> None:
    model = _model()
    ll, se = model.log_likelihood(X)
    np.testing.assert_allclose(ll.numpy(), [_log_lik_by_hand(float(x), [0.25, 0.75], [-1.0, 2.0]) for x in X], atol=1e-5)
    assert torch.equal(se, torch.zeros(5))
    assert model.evaluation_setup(None) == {"nll_unit": "nats per data point",
                                           "likelihood": "plug-in density at the point estimate (MAP)"}
    draws = _draws()
    model.set_posterior(draws)
    ll, se = model.log_likelihood(X)
    flat_w, flat_m = draws["weights"].reshape(6, 2).tolist(), draws["locs"].reshape(6, 2).tolist()
    for n, x in enumerate(X.tolist()):
        p = np.array([math.exp(_log_lik_by_hand(x, w, m)) for w, m in zip(flat_w, flat_m)])
        assert float(ll[n]) == pytest.approx(math.log(p.mean()), abs=1e-5)
        # delta method: the standard error of the mean density relative to the mean
        assert float(se[n]) == pytest.approx(p.std(ddof=1) / math.sqrt(6) / p.mean(), rel=1e-4)
    assert model.evaluation_setup(None)["likelihood"] == "posterior predictive density averaged over 6 posterior draws"


def test_the_data_driven_start_is_taken_once_and_remembered() -> None:
    model = _model()
    x = torch.tensor([3.0, -2.0, 0.5, 7.0])
    model.init_from_data(x, seed=3)
    expected = x[torch.randperm(4, generator=torch.Generator().manual_seed(3))[:2]].sort().values
    assert torch.allclose(model.point.values()["locs"], expected, atol=1e-6)
    assert torch.allclose(model.point.values()["weights"], torch.tensor([0.5, 0.5]))
    assert bool(model.initialized)
    model.init_from_data(torch.tensor([100.0, 200.0]), seed=4)  # already started: nothing moves
    assert torch.allclose(model.point.values()["locs"], expected, atol=1e-6)
    again = _model()
    again.load_state_dict(model.state_dict())
    again.init_from_data(torch.tensor([100.0, 200.0]), seed=4)
    assert torch.allclose(again.point.values()["locs"], expected, atol=1e-6)


# --------------------------------------------------------------------------- InferenceData


def test_a_fit_without_draws_gets_the_point_estimate_and_one_with_draws_the_posterior() -> None:
    model = _model()
    data = SimpleNamespace(split=lambda part: (X, None))
    point = model.inference_data(data, [])
    assert point.attrs["inference"] == "point estimate"
    assert point.posterior.sizes["chain"] == 1 and point.posterior.sizes["draw"] == 1
    model.set_posterior(_draws())
    full = model.inference_data(data, [])
    assert full.attrs["inference"] == "nuts"
    assert full.posterior.sizes["chain"] == 2 and full.posterior.sizes["draw"] == 3
    assert model.pair_variables() == (["weights"], {})
    assert model.test_statistic(X[None]) is None
