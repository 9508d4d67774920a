"""The general Boltzmann machine family (ppgen.models.energy.bm) on machines of 3 visible and 2 hidden units,
against sums written out from the energy -E(v, h) = b.v + c.h + v W h + sum_{i<j} L_ij v_i v_j +
sum_{i<j} J_ij h_i h_j: the spec's and the size's checks, the Pyro model (the hidden units as latent sites
over a uniform base, weight decay on the couplings only), the joint model, the exact log partition and
log p(x), the AIS paths (forced) and the Monte Carlo error they report, the Gibbs sweep's visible means as
the exact conditionals, and the chain statistics."""

from __future__ import annotations

import itertools
import math

import pyro.distributions as dist
import pytest
import torch
from pydantic import ValidationError
from pyro import poutine

from ppgen.data.core import DataInfo
from ppgen.models.energy import bm as bm_module
from ppgen.models.energy.bm import BM, BMSpec, ConnectionsSpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")

D, H = 3, 2


def _bm(seed: int = 0, weight_decay: float = 0.0, **connections: bool) -> BM:
    spec = BMSpec(hidden=H, data={"name": "digits"}, prior={"weight_decay": weight_decay},
                  connections=ConnectionsSpec(**connections))
    model = BM(spec, DataInfo((D,), "binary"))
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.core.parameters():
            p.normal_(0, 1.0)
    return model.double()


def _states(n: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=torch.float64)


def _minus_energy(model: BM, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    core = model.core
    out = v @ core.b + h @ core.c + torch.einsum("...i,ij,...j->...", v, core.W, h)
    if core.L is not None:
        out = out + torch.einsum("...i,ij,...j->...", v, torch.triu(core.L, 1), v)
    if core.J is not None:
        out = out + torch.einsum("...i,ij,...j->...", h, torch.triu(core.J, 1), h)
    return out


def _table(model: BM) -> torch.Tensor:
    """-E over every (v, h): shape (2^D, 2^H)."""
    return _minus_energy(model, _states(D)[:, None, :], _states(H)[None, :, :])


# --------------------------------------------------------------------------- specs and sizes


def test_specs_and_sizes_are_checked() -> None:
    with pytest.raises(ValidationError, match="gbrbm"):
        BMSpec(data={"name": "toy1d", "binarize": "none"})
    with pytest.raises(ValidationError, match="binarize"):
        BMSpec(data={"name": "digits", "binarize": "none"})
    with pytest.raises(ValidationError):
        BMSpec(hidden=513, data={"name": "digits"})
    spec = BMSpec(hidden=H, data={"name": "digits"})
    with pytest.raises(ValueError, match="needs binary data"):
        BM(spec, DataInfo((D,), "continuous"))
    with pytest.raises(ValueError, match="more than 1024 units"):
        BM(BMSpec(hidden=10, data={"name": "digits"}), DataInfo((bm_module.MAX_UNITS - 9,), "binary"))
    BM(BMSpec(hidden=10, data={"name": "digits"}), DataInfo((bm_module.MAX_UNITS - 10,), "binary"))  # at the limit
    # the BM's own defaults: a long AIS and short chains with a long warm-up
    assert (spec.ais.runs, spec.ais.steps) == (100, 1000)
    assert (spec.sampling.steps, spec.sampling.chains, spec.sampling.warmup, spec.sampling.draws) == (200, 4, 200, 500)


def test_connections_decide_which_lateral_couplings_exist() -> None:
    full = _bm()
    assert full.core.L is not None and full.core.J is not None
    rbm_like = _bm(visible_visible=False, hidden_hidden=False)
    assert rbm_like.core.L is None and rbm_like.core.J is None
    assert _bm(hidden_hidden=False).core.J is None and _bm(hidden_hidden=False).core.L is not None
    assert full.first_layer() is full.core and full.filter_weights() is full.core.W


# --------------------------------------------------------------------------- Pyro models


@torch.no_grad()
def test_the_model_with_the_hidden_units_given_is_minus_the_energy() -> None:
    model = _bm()
    x = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
    h = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    trace = poutine.trace(poutine.condition(model.model, data={"h": h})).get_trace(x)
    assert float(trace.log_prob_sum()) == pytest.approx(float(_minus_energy(model, x, h).sum()), abs=1e-10)
    # summed over h, each example's factor is its log sum_h exp(-E(x, h))
    total = 0.0
    for hs in itertools.product(_states(H), repeat=2):
        hh = torch.stack(hs)
        t = poutine.trace(poutine.condition(model.model, data={"h": hh})).get_trace(x)
        total += math.exp(float(t.log_prob_sum()))
    per = torch.logsumexp(_minus_energy(model, x[:, None, :], _states(H)[None]), 1)
    assert math.log(total) == pytest.approx(float(per.sum()), abs=1e-10)


@torch.no_grad()
def test_weight_decay_is_a_prior_on_the_couplings_not_on_the_diagonal() -> None:
    lam = 0.5
    model = _bm(weight_decay=lam)
    x = torch.tensor([[1.0, 0.0, 1.0]] * 3, dtype=torch.float64)
    trace = poutine.trace(model.model).get_trace(x)
    trace.compute_log_prob()
    core = model.core

    def log_normal(w: torch.Tensor) -> float:
        return float((0.5 * math.log(lam / (2 * math.pi)) - lam * w**2 / 2).sum())

    iu_v, iu_h = torch.triu_indices(D, D, 1), torch.triu_indices(H, H, 1)
    assert trace.nodes["W"]["value"].shape == (D, H)
    assert trace.nodes["L"]["value"].shape == (D * (D - 1) // 2,)
    assert trace.nodes["J"]["value"].shape == (H * (H - 1) // 2,)
    assert float(trace.nodes["W"]["log_prob_sum"]) == pytest.approx(3 * log_normal(core.W), abs=1e-10)
    assert float(trace.nodes["L"]["log_prob_sum"]) == pytest.approx(3 * log_normal(core.L[iu_v[0], iu_v[1]]), abs=1e-10)
    assert float(trace.nodes["J"]["log_prob_sum"]) == pytest.approx(3 * log_normal(core.J[iu_h[0], iu_h[1]]), abs=1e-10)
    bare = _bm(weight_decay=lam, visible_visible=False, hidden_hidden=False)
    assert {"L", "J"}.isdisjoint(poutine.trace(bare.model).get_trace(x).nodes)


@torch.no_grad()
def test_the_guide_draws_each_hidden_unit_from_its_input_given_v() -> None:
    model = _bm()
    x = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    node = poutine.trace(model.guide).get_trace(x).nodes["h"]
    fn = node["fn"].base_dist if isinstance(node["fn"], dist.Independent) else node["fn"]
    assert torch.allclose(fn.logits, x @ model.core.W + model.core.c)


@torch.no_grad()
def test_the_joint_model_is_the_boltzmann_distribution_over_uniform_base_measures() -> None:
    model = _bm()
    v = _states(D).repeat_interleave(2**H, 0)
    h = _states(H).repeat(2**D, 1)
    trace = poutine.trace(poutine.condition(model.joint_model, data={"v": v, "h": h})).get_trace(v.shape[0])
    trace.compute_log_prob()
    per_state = sum(trace.nodes[n]["log_prob"] for n in ("v", "h", "energy"))
    assert torch.allclose(per_state, _minus_energy(model, v, h) - (D + H) * math.log(2), atol=1e-10)


# --------------------------------------------------------------------------- likelihood


@torch.no_grad()
def test_exact_log_partition_and_log_likelihood_equal_enumeration() -> None:
    model = _bm()
    table = _table(model)
    log_z = float(torch.logsumexp(table.reshape(-1), 0))
    lz = model.log_partition()
    assert lz.method == "exact" and lz.stderr == 0.0
    assert lz.value == pytest.approx(log_z, abs=1e-10)
    ll, se = model.log_likelihood(_states(D))
    assert torch.allclose(ll, torch.logsumexp(table, 1) - log_z, atol=1e-10)
    assert float(torch.logsumexp(ll, 0)) == pytest.approx(0.0, abs=1e-10)
    assert torch.equal(se, torch.zeros(2**D, dtype=torch.float64))
    model.evaluation_setup(None)
    model.log_likelihood(_states(D)[:4])
    extra = model.evaluate_extra(_states(D)[:4], None)
    assert extra["test_nll_mc_stderr"] == 0.0
    assert "test_recon_error" in extra and "test_loss" not in extra


@torch.no_grad()
def test_forced_ais_paths_estimate_the_same_numbers_and_report_their_error(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _bm()
    table = _table(model)
    log_z = float(torch.logsumexp(table.reshape(-1), 0))
    x = _states(D)[[1, 5, 6]]

    class Train:  # the one method of a data set that log_partition calls
        def split(self, part: str) -> tuple[torch.Tensor, None]:
            return x.float(), None

    torch.manual_seed(0)
    lz = model.log_partition(Train(), runs=200, steps=300, method="ais")
    assert lz.method == "ais" and (lz.runs, lz.steps) == (200, 300)
    assert abs(lz.value - log_z) < max(0.05, 4 * lz.stderr)
    # the clamped sum over h by AIS, as for a machine with more than EXACT_HIDDEN hidden units
    monkeypatch.setattr(bm_module, "EXACT_HIDDEN", 0)
    model.evaluation_setup(Train(), ais_runs=200, ais_steps=300, log_z_method="ais")
    ll, se = model.log_likelihood(x, ais_runs=200, ais_steps=300)
    exact = torch.logsumexp(table[[1, 5, 6]], 1) - log_z
    assert ((ll - exact).abs() < 0.05 + 4 * se + 4 * model._log_z.stderr).all()
    assert (se > 0).all()
    extra = model.evaluate_extra(x, None)
    expected = math.sqrt(float(se.pow(2).mean()) / 3 + model._log_z.stderr**2)
    assert extra["test_nll_mc_stderr"] == pytest.approx(expected, rel=1e-6)


# --------------------------------------------------------------------------- Gibbs sampling


@torch.no_grad()
def test_a_sweeps_visible_means_are_the_exact_conditionals_of_its_final_state() -> None:
    model = _bm()
    torch.manual_seed(1)
    sites = model.gibbs_init(6)
    assert sites["v"].shape == (6, D) and sites["h"].shape == (6, H)
    out = model.gibbs_sweep(sites)
    assert set(out) == {"v", "h", "_mean"}
    for n in range(6):
        v, h = out["v"][n], out["h"][n]
        for i in range(D):
            on, off = v.clone(), v.clone()
            on[i], off[i] = 1.0, 0.0
            p_on = torch.sigmoid(_minus_energy(model, on, h) - _minus_energy(model, off, h))
            assert float(out["_mean"][n, i]) == pytest.approx(float(p_on), abs=1e-10)


@torch.no_grad()
def test_chains_from_the_data_keep_it_and_report_their_statistics() -> None:
    model = _bm()
    x = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    sites = model.gibbs_start(x)
    assert torch.equal(sites["v"], x) and sites["h"].shape == (2, H)
    stats = model.chain_statistics(sites)
    assert torch.allclose(stats["energy"], -_minus_energy(model, x, sites["h"]), atol=1e-10)
    free = -torch.logsumexp(_minus_energy(model, x[:, None, :], _states(H)[None]), 1)
    assert torch.allclose(stats["free_energy"].double(), free, atol=1e-5)
    assert torch.equal(stats["mean_visible"], x.mean(-1)) and torch.equal(stats["mean_hidden"], sites["h"].mean(-1))
    one = model.chain_statistics({"v": x[0], "h": sites["h"][0]})
    assert one["energy"].shape == (1,)
    # v and h are copies: a sweep in place does not change the sites it was given
    before = sites["v"].clone()
    model.gibbs_sweep(sites)
    assert torch.equal(sites["v"], before)
