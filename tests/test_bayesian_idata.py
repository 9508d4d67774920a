"""InferenceData of a Bayesian family (ppgen.models.bayesian.idata) on a small two-dimensional Gaussian mixture
with hand-made draws: the groups each builder fills, their dims and coordinate names, the chain and draw
counts, the pointwise log-likelihood and log joint against the family's densities, relabelled draws,
thinned replicated data, which sampler statistics are kept, that the plug-in predictive of a point
estimate is declared as independent draws (and the posterior's are not), and that neither builder moves
the caller's random number generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ppgen.arviz_data import independent_draws, markov_chains
from ppgen.data.core import DataInfo
from ppgen.models.bayesian import idata as idata_module
from ppgen.models.bayesian.gmm import GMM, GMMSpec
from ppgen.models.bayesian.idata import POINT_PREDICTIVE, inference_data, point_inference_data

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CHAINS, DRAWS, N = 2, 4, 6


def _gmm() -> GMM:
    return GMM(GMMSpec(components=2, covariance="diag", data={"name": "toymix"}), DataInfo((2,), "continuous"))


def _x() -> torch.Tensor:
    return torch.tensor([[-2.0, 0.1], [-1.5, -0.3], [-2.2, 0.4], [1.9, 1.0], [2.1, 0.7], [2.4, 1.3]])


def _draws() -> dict[str, torch.Tensor]:
    """Two chains of four draws; the second chain has the components' labels the other way round."""
    gen = torch.Generator().manual_seed(0)
    locs = torch.tensor([[-2.0, 0.0], [2.0, 1.0]]) + 0.1 * torch.randn(CHAINS, DRAWS, 2, 2, generator=gen)
    scales = 0.5 + 0.1 * torch.rand(CHAINS, DRAWS, 2, 2, generator=gen)
    w0 = 0.4 + 0.1 * torch.rand(CHAINS, DRAWS, generator=gen)
    weights = torch.stack([w0, 1 - w0], -1)
    swap = torch.tensor([1, 0])
    locs[1], scales[1], weights[1] = locs[1][:, swap], scales[1][:, swap], weights[1][:, swap]
    return {"weights": weights, "locs": locs, "scales": scales}


def _flat(draws: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.reshape(-1, *v.shape[2:]) for k, v in draws.items()}


def test_posterior_draws_fill_every_group_with_named_dims_and_the_chain_count() -> None:
    model, x, draws = _gmm(), _x(), _draws()
    stats = {"diverging": torch.zeros(CHAINS, DRAWS, dtype=torch.bool), "step_size": torch.full((CHAINS, DRAWS), 0.3),
             "per_chain": torch.ones(CHAINS)}
    idata = inference_data(model, x, draws=draws, stats=stats)
    assert set(idata.groups()) == {"posterior", "log_likelihood", "posterior_predictive", "observed_data", "sample_stats"}
    assert idata.posterior["locs"].dims == ("chain", "draw", "component", "dim")
    assert idata.posterior["weights"].dims == ("chain", "draw", "component")
    assert idata.posterior.sizes["chain"] == CHAINS and idata.posterior.sizes["draw"] == DRAWS
    assert idata.log_likelihood["x"].dims == ("chain", "draw", "obs")
    assert idata.observed_data["x"].dims == ("obs", "event_0")
    assert idata.posterior_predictive["x"].dims == ("chain", "draw", "obs", "event_0")
    assert idata.posterior_predictive["x"].shape == (CHAINS, DRAWS, N, 2)
    np.testing.assert_array_equal(idata.observed_data["obs"].values, np.arange(N))
    np.testing.assert_array_equal(idata.observed_data["x"].values, x.double().numpy())
    # the sampler's statistics of shape (chain, draw) are kept beside lp, others are not
    assert set(idata.sample_stats.data_vars) == {"lp", "diverging", "step_size"}
    assert idata.attrs["inference"] == "nuts" and idata.attrs["family"] == "gmm" and idata.attrs["unit"] == "data point"
    assert idata.attrs["relabelled"] == 1
    assert idata.posterior_predictive.attrs["thinned_by"] == 1
    # Markov chains: R-hat applies, nothing declares the draws independent
    assert not independent_draws(idata, "posterior_predictive")
    assert markov_chains(idata, "posterior")


def test_the_pointwise_log_likelihood_and_lp_are_the_familys_densities_at_the_relabelled_draws() -> None:
    model, x, draws = _gmm(), _x(), _draws()
    idata = inference_data(model, x, draws=draws, stats={})
    relabelled, perms = model.relabel(draws)
    assert perms[0, 0].tolist() == [0, 1] and perms[1, 0].tolist() == [1, 0]
    np.testing.assert_allclose(idata.posterior["locs"].values, relabelled["locs"].double().numpy())
    assert (idata.posterior["locs"].values[..., 0, 0] < idata.posterior["locs"].values[..., 1, 0]).all()
    flat = _flat(draws)  # labels do not change a likelihood
    ll = model.log_lik(x, flat)
    np.testing.assert_allclose(idata.log_likelihood["x"].values, ll.reshape(CHAINS, DRAWS, N).double().numpy(), rtol=1e-6)
    lp = model.log_prior(flat) + ll.sum(-1)
    np.testing.assert_allclose(idata.sample_stats["lp"].values, lp.reshape(CHAINS, DRAWS).double().numpy(), rtol=1e-6)
    raw = inference_data(model, x, draws=draws, stats={}, relabel_draws=False)
    assert raw.attrs["relabelled"] == 0
    np.testing.assert_allclose(raw.posterior["locs"].values, draws["locs"].double().numpy())


def test_draws_and_stats_default_to_those_the_model_holds() -> None:
    model, x, draws = _gmm(), _x(), _draws()
    model.set_posterior(draws, {"diverging": torch.zeros(CHAINS, DRAWS, dtype=torch.bool)})
    held = inference_data(model, x, inference="test")
    given = inference_data(model, x, draws=draws, stats={"diverging": torch.zeros(CHAINS, DRAWS, dtype=torch.bool)})
    assert held.attrs["inference"] == "test"
    assert "diverging" in held.sample_stats
    np.testing.assert_array_equal(held.posterior["locs"].values, given.posterior["locs"].values)
    np.testing.assert_array_equal(held.posterior_predictive["x"].values, given.posterior_predictive["x"].values)


def test_replicated_data_are_thinned_past_the_limit_seeded_and_leave_the_global_rng_alone(monkeypatch) -> None:
    model, x, draws = _gmm(), _x(), _draws()
    # 2 chains x 4 draws x 12 values = 96 values; a limit of 40 keeps every third draw
    monkeypatch.setattr(idata_module, "MAX_PREDICTIVE_VALUES", 40)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    idata = inference_data(model, x, draws=draws, stats={}, seed=5)
    assert torch.equal(torch.get_rng_state(), before)
    assert idata.posterior_predictive.attrs["thinned_by"] == 3
    assert idata.posterior_predictive["x"].shape == (CHAINS, 2, N, 2)  # draws 0 and 3 of each chain
    assert idata.posterior.sizes["draw"] == DRAWS  # only the replicated data are thinned
    again = inference_data(model, x, draws=draws, stats={}, seed=5)
    np.testing.assert_array_equal(idata.posterior_predictive["x"].values, again.posterior_predictive["x"].values)
    other = inference_data(model, x, draws=draws, stats={}, seed=6)
    assert not np.array_equal(idata.posterior_predictive["x"].values, other.posterior_predictive["x"].values)


def test_replicated_data_come_from_their_own_draw() -> None:
    model, x = _gmm(), _x()
    draws = _draws()
    # chain 0 far to the left, chain 1 far to the right, tiny scales: each replicated point tells its chain
    draws["locs"][0] = torch.tensor([[-50.0, 0.0], [-40.0, 0.0]])
    draws["locs"][1] = torch.tensor([[40.0, 0.0], [50.0, 0.0]])
    draws["scales"] = torch.full_like(draws["scales"], 0.01)
    rep = inference_data(model, x, draws=draws, stats={}).posterior_predictive["x"].values
    assert (rep[0, ..., 0] < -30).all() and (rep[1, ..., 0] > 30).all()


def test_a_point_estimate_is_one_chain_of_one_draw_with_an_independent_plug_in_predictive() -> None:
    model, x = _gmm(), _x()
    model.point.set({"weights": torch.tensor([0.5, 0.5]), "locs": torch.tensor([[-2.0, 0.0], [2.0, 1.0]]),
                     "scales": torch.full((2, 2), 0.5)})
    torch.manual_seed(7)
    before = torch.get_rng_state()
    idata = point_inference_data(model, x, seed=1)
    assert torch.equal(torch.get_rng_state(), before)
    assert set(idata.groups()) == {"posterior", "log_likelihood", "posterior_predictive", "observed_data", "sample_stats"}
    assert idata.posterior.sizes["chain"] == 1 and idata.posterior.sizes["draw"] == 1
    assert idata.posterior["scales"].dims == ("chain", "draw", "component", "dim")
    np.testing.assert_allclose(idata.posterior["locs"].values[0, 0], [[-2.0, 0.0], [2.0, 1.0]], atol=1e-6)
    theta = model.theta("point")
    ll = model.log_lik(x, theta)
    np.testing.assert_allclose(idata.log_likelihood["x"].values, ll.reshape(1, 1, N).double().numpy(), rtol=1e-6)
    np.testing.assert_allclose(idata.sample_stats["lp"].values,
                               (model.log_prior(theta) + ll.sum(-1)).reshape(1, 1).double().numpy(), rtol=1e-6)
    assert idata.posterior_predictive["x"].dims == ("chain", "draw", "obs", "event_0")
    assert idata.posterior_predictive["x"].shape == (*POINT_PREDICTIVE, N, 2)
    assert idata.posterior.attrs["point_estimate"] == "MAP"
    assert "plug-in" in idata.posterior_predictive.attrs["predictive"]
    assert idata.attrs["inference"] == "point estimate" and idata.attrs["family"] == "gmm"
    # independent replicated data sets, declared so: no R-hat over them or over the single draw
    assert independent_draws(idata, "posterior_predictive")
    assert not independent_draws(idata, "posterior")
    assert not markov_chains(idata, "posterior_predictive") and not markov_chains(idata, "posterior")
    again = point_inference_data(model, x, seed=1)
    np.testing.assert_array_equal(idata.posterior_predictive["x"].values, again.posterior_predictive["x"].values)


def test_a_point_estimates_predictive_shrinks_for_large_data_to_no_fewer_draws_than_chains(monkeypatch) -> None:
    """With large data the replicated data sets are fewer; their chains never outnumber their draws, the
    layout that ArviZ takes for (draw, chain) swapped and warns about."""
    model, x = _gmm(), _x()
    chains = POINT_PREDICTIVE[0]
    monkeypatch.setattr(idata_module, "MAX_PREDICTIVE_VALUES", chains * x.numel() * 10)
    pp = point_inference_data(model, x).posterior_predictive
    assert pp.sizes["chain"] == chains and pp.sizes["draw"] == 10
    monkeypatch.setattr(idata_module, "MAX_PREDICTIVE_VALUES", chains * x.numel() * 3)
    pp = point_inference_data(model, x).posterior_predictive
    assert pp.sizes["chain"] == 3 and pp.sizes["draw"] == 3
    monkeypatch.setattr(idata_module, "MAX_PREDICTIVE_VALUES", 1)
    pp = point_inference_data(model, x).posterior_predictive
    assert pp.sizes["chain"] == 2 and pp.sizes["draw"] == 2


def test_thinning_to_fewer_draws_than_chains_keeps_every_chain_without_a_warning(monkeypatch) -> None:
    """Posterior draws thinned for large data may keep fewer draws than there are chains; the chains are
    the sampler's, so they stay, and ArviZ's guess that the axes are swapped is not passed on."""
    model, x = _gmm(), _x()
    draws = {k: v.repeat(2, *([1] * (v.dim() - 1))) for k, v in _draws().items()}  # 4 chains of 4 draws
    monkeypatch.setattr(idata_module, "MAX_PREDICTIVE_VALUES", 4 * 4 * x.numel() // 4)  # every fourth draw
    idata = inference_data(model, x, draws=draws, stats={})
    assert idata.posterior_predictive.attrs["thinned_by"] == 4
    assert idata.posterior_predictive["x"].shape == (4, 1, N, 2)
    assert idata.posterior.sizes["chain"] == 4 and idata.posterior.sizes["draw"] == DRAWS
