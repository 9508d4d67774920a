"""The RBM families (ppgen.models.energy.rbm: ``rbm`` and ``gbrbm``) on machines of 3 visible and 2 hidden
units, against sums written out from the energy E(v, h) = -b.v - c.h - v W h: the spec's and the data's
checks, the Pyro model (free energy as a factor, weight decay as a declared prior) and the joint model,
log p(x) by enumeration and with a forced AIS, the standardized Gaussian density in data units, one
block-Gibbs sweep's transition against its exact probabilities, and the chain statistics."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from pydantic import ValidationError
from pyro import poutine

from ppgen import registry
from ppgen.data.core import DataInfo
from ppgen.models.energy.rbm import GBRBM, RBM, GaussianVisibleSpec, GBRBMSpec, RBMSpec
from ppgen.models.energy.rbm_core import RBMCore

pytestmark = pytest.mark.usefixtures("one_torch_thread")

D, H = 3, 2


def _rbm(weight_decay: float = 0.0, seed: int = 0) -> RBM:
    spec = RBMSpec(hidden=H, data={"name": "digits"}, prior={"weight_decay": weight_decay})
    model = RBM(spec, DataInfo((D,), "binary"))
    torch.manual_seed(seed)
    with torch.no_grad():
        model.core.W.normal_(0, 1.2)
        model.core.b.normal_()
        model.core.c.normal_()
    return model.double()


def _gbrbm(sigma: float = 0.7) -> GBRBM:
    spec = GBRBMSpec(hidden=H, data={"name": "toy1d", "binarize": "none"}, visible={"sigma": sigma})
    model = GBRBM(spec, DataInfo((1,), "continuous"))
    torch.manual_seed(1)
    with torch.no_grad():
        model.core.W.normal_(0, 1.0)
        model.core.b.normal_()
        model.core.c.normal_()
    return model.double()


def _states(n: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=torch.float64)


def _minus_energy(core: RBMCore, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """-E(v, h) = b.v + c.h + v W h, written out for binary units."""
    return v @ core.b + h @ core.c + torch.einsum("...i,ij,...j->...", v, core.W, h)


@torch.no_grad()
def _brute_log_p(core: RBMCore, v: torch.Tensor) -> torch.Tensor:
    vs, hs = _states(D), _states(H)
    table = _minus_energy(core, vs[:, None, :], hs[None, :, :])  # (2^D, 2^H)
    log_z = torch.logsumexp(table.reshape(-1), 0)
    return torch.logsumexp(_minus_energy(core, v[:, None, :], hs[None, :, :]), 1) - log_z


# --------------------------------------------------------------------------- specs and data


def test_specs_refuse_the_wrong_kind_of_data() -> None:
    with pytest.raises(ValidationError, match="gbrbm"):
        RBMSpec(data={"name": "toy2d", "binarize": "none"})
    with pytest.raises(ValidationError, match="binarize"):
        RBMSpec(data={"name": "digits", "binarize": "none"})
    with pytest.raises(ValidationError, match="binarize: none"):
        GBRBMSpec(data={"name": "digits", "binarize": "static"})
    with pytest.raises(ValidationError):
        GaussianVisibleSpec(sigma=0.0)
    with pytest.raises(ValueError, match="needs binary data"):
        RBM(RBMSpec(hidden=2, data={"name": "digits"}), DataInfo((3,), "continuous"))
    with pytest.raises(ValueError, match="real-valued"):
        GBRBM(GBRBMSpec(hidden=2, data={"name": "toy1d", "binarize": "none"}), DataInfo((3,), "binary"))


def test_the_spec_builds_the_core_it_names() -> None:
    spec = GBRBMSpec(hidden=4, data={"name": "toy2d", "binarize": "none"},
                     visible={"sigma": 0.5, "learn_sigma": True, "standardize": False},
                     init={"weight_std": 1e-3, "hidden_bias": -2.0}, prior={"weight_decay": 0.01})
    model = GBRBM(spec, DataInfo((2,), "continuous"))
    core = model.core
    assert (core.n_visible, core.n_hidden) == (2, 4) and core.gaussian
    assert torch.allclose(core.sigma, torch.full((2,), 0.5))
    assert isinstance(core.log_sigma, torch.nn.Parameter)  # learned
    assert torch.equal(core.c, torch.full((4,), -2.0)) and 0 < float(core.W.detach().abs().max()) < 5e-3
    assert core.weight_decay == 0.01 and model.standardize is False
    assert model.first_layer() is core and model.filter_weights() is core.W
    assert registry.family("rbm") is RBM and registry.family("gbrbm") is GBRBM
    assert not _rbm().core.gaussian


# --------------------------------------------------------------------------- Pyro models


@torch.no_grad()
def test_the_model_is_minus_the_free_energy_plus_the_weight_prior() -> None:
    x = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    model = _rbm()
    trace = poutine.trace(model.model).get_trace(x)
    hs = _states(H)
    unnorm = torch.logsumexp(_minus_energy(model.core, x[:, None, :], hs[None]), 1)
    assert float(trace.log_prob_sum()) == pytest.approx(float(unnorm.sum()), abs=1e-10)
    assert "W" not in trace.nodes  # no decay, no prior
    lam = 0.1
    decayed = _rbm(weight_decay=lam)
    trace = poutine.trace(decayed.model).get_trace(x)
    trace.compute_log_prob()
    w = decayed.core.W
    # N(0, 1/lam) on every weight, counted once per example of the batch
    prior = 2 * float((0.5 * math.log(lam / (2 * math.pi)) - lam * w**2 / 2).sum())
    assert float(trace.nodes["W"]["log_prob_sum"]) == pytest.approx(prior, abs=1e-10)
    assert float(trace.log_prob_sum()) == pytest.approx(float(unnorm.sum()) + prior, abs=1e-10)
    assert poutine.trace(model.guide).get_trace(x).stochastic_nodes == []


@torch.no_grad()
def test_the_joint_model_is_the_boltzmann_distribution_over_uniform_base_measures() -> None:
    model = _rbm()
    v = _states(D).repeat_interleave(2**H, 0)
    h = _states(H).repeat(2**D, 1)
    conditioned = poutine.condition(model.joint_model, data={"v": v, "h": h})
    trace = poutine.trace(conditioned).get_trace(v.shape[0])
    trace.compute_log_prob()
    per_state = sum(trace.nodes[n]["log_prob"] for n in ("v", "h", "energy"))
    expected = _minus_energy(model.core, v, h) - (D + H) * math.log(2)
    assert torch.allclose(per_state, expected, atol=1e-10)


@torch.no_grad()
def test_the_gaussian_joint_model_differs_from_minus_the_energy_by_its_base_constants() -> None:
    model = _gbrbm()
    core = model.core
    v = torch.tensor([[-1.0], [0.3], [2.5], [0.0]], dtype=torch.float64)
    h = torch.tensor([[0.0, 1.0], [1.0, 1.0], [0.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    trace = poutine.trace(poutine.condition(model.joint_model, data={"v": v, "h": h})).get_trace(4)
    trace.compute_log_prob()
    per_state = sum(trace.nodes[n]["log_prob"] for n in ("v", "h", "energy"))
    s = core.sigma
    minus_e = -((v - core.b) ** 2 / (2 * s**2)).sum(-1) + h @ core.c + ((v / s) @ core.W * h).sum(-1)
    const = -H * math.log(2) - float(torch.log(s * math.sqrt(2 * math.pi)).sum())
    assert torch.allclose(per_state, minus_e + const, atol=1e-10)


# --------------------------------------------------------------------------- likelihood


@torch.no_grad()
def test_log_likelihood_equals_enumeration_and_normalizes() -> None:
    model = _rbm()
    vs = _states(D)
    ll, se = model.log_likelihood(vs)
    assert torch.allclose(ll, _brute_log_p(model.core, vs), atol=1e-10)
    assert float(torch.logsumexp(ll, 0)) == pytest.approx(0.0, abs=1e-10)
    assert torch.equal(se, torch.zeros(2**D, dtype=torch.float64))
    lz = model.log_partition()
    assert lz.method == "exact"
    hs = _states(H)
    brute = torch.logsumexp(_minus_energy(model.core, vs[:, None, :], hs[None]).reshape(-1), 0)
    assert lz.value == pytest.approx(float(brute), abs=1e-10)


def test_forced_ais_estimates_log_z_and_its_error_reaches_the_likelihood() -> None:
    model = _rbm()
    exact = model.log_partition().value
    torch.manual_seed(0)
    x = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 1.0]])

    class Train:  # the one method of a data set that log_partition calls
        def split(self, part: str) -> tuple[torch.Tensor, None]:
            return x, None

    ais = model.log_partition(Train(), runs=200, steps=200, method="ais")
    assert ais.method == "ais" and ais.runs == 200 and ais.steps == 200
    assert abs(ais.value - exact) < max(0.05, 4 * ais.stderr)
    model.evaluation_setup(Train(), ais_runs=200, ais_steps=200, log_z_method="ais")
    ll, se = model.log_likelihood(x.double())
    assert torch.allclose(ll, -model.core.free_energy(x.double()) - model._log_z.value, atol=1e-10)
    assert torch.equal(se, torch.full((3,), model._log_z.stderr, dtype=torch.float64))
    extra = model.evaluate_extra(x.double(), None)
    assert extra["test_nll_mc_stderr"] == model._log_z.stderr > 0
    assert {"test_pseudo_loglik", "test_recon_error"} <= set(extra) and "test_loss" not in extra


@torch.no_grad()
def test_the_gaussian_density_in_data_units_integrates_to_one() -> None:
    model = _gbrbm()
    x = torch.tensor([[0.0], [2.0], [3.0], [7.0]])
    model.init_from_data(x)  # standardize: mean 3, std 2.94
    assert model.x_std.item() == pytest.approx(float(x.std()), rel=1e-6)
    grid = torch.linspace(-40.0, 46.0, 40_001, dtype=torch.float64)[:, None]
    ll, _ = model.log_likelihood(grid)
    mass = torch.trapezoid(ll.exp(), grid[:, 0])
    assert float(mass) == pytest.approx(1.0, abs=1e-6)
    # and it is the density of the standardized value, divided by the scale
    v = (grid - model.x_mean) / model.x_std
    assert torch.allclose(ll, -model.core.free_energy(v) - model.log_partition().value - model.x_std.log().sum(), atol=1e-10)


# --------------------------------------------------------------------------- Gibbs sampling


@torch.no_grad()
def test_one_sweep_draws_h_given_v_then_v_given_h() -> None:
    model = _rbm()
    core = model.core
    n = 40_000
    v0 = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    torch.manual_seed(2)
    out = model.gibbs_sweep({"v": v0.expand(n, D).clone(), "h": torch.zeros(n, H, dtype=torch.float64)})
    assert set(out) == {"v", "h", "_mean"}
    assert torch.allclose(out["_mean"], torch.sigmoid(core.b + out["h"] @ core.W.t()))
    # exact transition: p(h | v0) p(v' | h), over the 2^H x 2^D outcomes
    hs, vs = _states(H), _states(D)
    p_h = torch.exp(_minus_energy(core, v0, hs) - torch.logsumexp(_minus_energy(core, v0, hs), 0))
    joint = _minus_energy(core, vs[None, :, :], hs[:, None, :])  # (2^H, 2^D)
    p_v_given_h = torch.softmax(joint, 1)
    exact = (p_h[:, None] * p_v_given_h).reshape(-1)
    code = (out["h"] @ (2.0 ** torch.arange(H - 1, -1, -1, dtype=torch.float64))) * 2**D \
        + out["v"] @ (2.0 ** torch.arange(D - 1, -1, -1, dtype=torch.float64))
    freq = torch.bincount(code.long(), minlength=2**(D + H)).double() / n
    assert ((freq - exact).abs() <= 4 * (exact * (1 - exact) / n).sqrt() + 1e-3).all()


@torch.no_grad()
def test_chains_start_at_random_or_at_the_data_and_report_their_statistics() -> None:
    model = _rbm()
    torch.manual_seed(0)
    sites = model.gibbs_init(5)
    assert sites["v"].shape == (5, D) and sites["h"].shape == (5, H)
    assert set(sites["v"].unique().tolist()) <= {0.0, 1.0}
    x = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    start = model.gibbs_start(x)
    assert torch.equal(start["v"], x.double()) and start["h"].shape == (2, H)
    stats = model.chain_statistics(start)
    hs = _states(H)
    free = -torch.logsumexp(_minus_energy(model.core, x.double()[:, None, :], hs[None]), 1)
    assert torch.allclose(stats["free_energy"], free, atol=1e-10)
    assert torch.allclose(stats["energy"], -_minus_energy(model.core, x.double(), start["h"]), atol=1e-10)
    assert torch.allclose(stats["mean_visible"], torch.tensor([2 / 3, 1 / 3], dtype=torch.float64))
    assert torch.equal(stats["mean_hidden"], start["h"].mean(-1))
    one = model.chain_statistics({"v": start["v"][0], "h": start["h"][0]})  # one chain, no batch
    assert one["energy"].shape == (1,) and float(one["energy"]) == pytest.approx(float(stats["energy"][0]))
    gauss = _gbrbm()
    assert gauss.gibbs_init(3)["v"].dtype == torch.float64
