"""The general Boltzmann machine against exact answers: its Gibbs sampler's empirical distribution
against the enumerated Boltzmann distribution, AIS against enumeration, the learning rule against the
exact log-likelihood gradient, and a likelihood that normalizes."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pyro
import pytest
import torch

import ppgen
from ppgen.data.core import DataInfo
from ppgen.models.energy.bm_core import BMCore
from ppgen.models.energy.partition import all_binary_states
from ppgen.models.energy.rbm_core import RBMCore
from ppgen.inference.gibbs import GibbsKernel
from ppgen.plots import families


def tiny_bm(D: int, H: int, scale: float = 1.0, seed: int = 0, **kw: bool) -> BMCore:
    torch.manual_seed(seed)
    m = BMCore(D, H, weight_std=scale, **kw)
    with torch.no_grad():
        m.b.normal_(0, 1)
        m.c.normal_(0, 1)
    return m


@torch.no_grad()
def exact_distribution(m: BMCore) -> tuple[torch.Tensor, torch.Tensor]:
    states = all_binary_states(m.n_units, dtype=torch.float64)
    return states, torch.softmax(-m.double().energy(states), 0)


def codes(s: torch.Tensor) -> torch.Tensor:
    n = s.shape[-1]
    return (s.reshape(-1, n).long() * (2 ** torch.arange(n - 1, -1, -1))).sum(-1)


def test_coupling_is_symmetric_with_zero_diagonal_and_energy_is_pairwise() -> None:
    m = tiny_bm(3, 2, scale=1.0).requires_grad_(False)
    K = m.coupling()
    assert torch.equal(K, K.t()) and torch.all(K.diagonal() == 0)
    s = torch.tensor([[1.0, 0, 1, 1, 0]])
    pairs = sum(K[i, j] * s[0, i] * s[0, j] for i in range(5) for j in range(i + 1, 5))
    assert float(m.energy(s)) == pytest.approx(float(-pairs - s[0] @ m.bias()), abs=1e-6)


def test_without_lateral_connections_it_is_an_rbm() -> None:
    bm = tiny_bm(6, 4, scale=0.8, visible_visible=False, hidden_hidden=False)
    r = RBMCore(6, 4)
    r.load_state_dict(bm.state_dict())
    assert bm.log_z_exact() == pytest.approx(r.log_z_exact(), abs=1e-5)
    v = all_binary_states(6)
    assert torch.allclose(bm.log_unnormalized_visible(v).float(), -r.free_energy(v).detach(), atol=1e-5)


def test_gibbs_sampler_matches_the_exact_boltzmann_distribution() -> None:
    """The issue's check: a small general BM (4 visible, 3 hidden, every pair coupled) sampled by
    sequential Gibbs sweeps; the empirical distribution over its 128 states matches enumeration."""
    m = tiny_bm(4, 3, scale=1.0, seed=1)
    states, p = exact_distribution(m)
    m = m.float()
    torch.manual_seed(0)
    s = m.random_states(2000)
    K = m.coupling().detach()
    with torch.no_grad():
        for _ in range(30):  # burn-in
            m.sweep(s, None, K)
        counts = torch.zeros(128, dtype=torch.float64)
        for _ in range(60):
            m.sweep(s, None, K)
            counts += torch.bincount(codes(s), minlength=128).double()
    freq = counts / counts.sum()
    assert 0.5 * float((freq - p).abs().sum()) < 0.015
    # a chi-square check on the well-populated states, counting each chain's 60 draws as ~15 effective
    big = p > 0.005
    n_eff = 2000 * 15
    chi2 = float(((freq[big] - p[big]) ** 2 / p[big]).sum()) * n_eff
    assert chi2 < 2 * int(big.sum()) + 30


def test_pyro_mcmc_on_the_bm_family_and_arviz_conversion() -> None:
    import arviz as az

    spec = ppgen.load_spec({"family": "bm", "hidden": 2, "data": {"name": "digits"}})
    model = ppgen.build(spec, DataInfo((3,), "binary"))
    torch.manual_seed(3)
    with torch.no_grad():
        for p in model.core.parameters():
            p.normal_(0, 1)
    states, p = exact_distribution(model.core)
    model.core.float()
    torch.manual_seed(0)
    mcmc = pyro.infer.MCMC(GibbsKernel(model, parallel=300), num_samples=120, warmup_steps=20, disable_progbar=True)
    mcmc.run()
    s = mcmc.get_samples()
    freq = torch.bincount(codes(torch.cat([s["v"], s["h"]], -1)), minlength=32).double()
    freq /= freq.sum()
    assert 0.5 * float((freq - p).abs().sum()) < 0.02
    idata = az.from_pyro(mcmc, log_likelihood=False)
    assert set(idata.posterior.data_vars) == {"v", "h"}
    with torch.no_grad():
        tr = pyro.poutine.trace(model.joint_model).get_trace(4)
        s4 = torch.cat([tr.nodes["v"]["value"], tr.nodes["h"]["value"]], -1)
        assert float(tr.log_prob_sum()) == pytest.approx(float(-model.core.energy(s4).sum() - 4 * 5 * math.log(2)), abs=1e-4)


def test_ais_for_a_bm_and_for_the_clamped_sum_over_hidden_units() -> None:
    m = tiny_bm(8, 6, scale=0.8, seed=2)
    exact = m.log_z_exact()
    torch.manual_seed(0)
    est = m.ais_log_z(runs=100, steps=500)
    assert abs(est.value - exact) < 0.1
    v = torch.bernoulli(torch.full((4, 8), 0.5))
    lu = m.log_unnormalized_visible(v)
    ais, se = m.ais_log_unnormalized_visible(v, runs=100, steps=1000)
    assert torch.all(se < 0.05)
    assert torch.all((ais - lu).abs() < 4 * se + 0.01)


def test_float64_bm_ais_and_training_step() -> None:
    """A float64 BM runs AIS from its default base in float64 (against enumeration), the clamped AIS,
    and a PCD update from fresh chains."""
    m = tiny_bm(7, 5, scale=0.8, seed=4).double()
    torch.manual_seed(0)
    est = m.ais_log_z(runs=100, steps=500)
    assert abs(est.value - m.log_z_exact()) < 0.1
    v = torch.bernoulli(torch.full((3, 7), 0.5, dtype=torch.float64))
    ais, se = m.ais_log_unnormalized_visible(v, runs=100, steps=500)
    assert torch.all((ais - m.log_unnormalized_visible(v)).abs() < 4 * se + 0.01)
    pos = m.positive_phase(v, 2)
    neg, _ = m.negative_phase(m.init_chains(4), 2)
    m.set_gradients(pos, neg)
    assert m.W.grad.dtype == torch.float64 and bool(m.W.grad.abs().sum() > 0)


def test_learning_rule_estimates_the_exact_log_likelihood_gradient() -> None:
    """With clamped states drawn from the exact p(h | v) and free states from the exact p(s), the
    routine's gradient, <s s^T>_free - <s s^T>_clamped, estimates minus the exact gradient of the mean
    log-likelihood (computed by autograd through enumeration)."""
    m = tiny_bm(3, 2, scale=1.0, seed=4).double()
    data = torch.tensor([[1.0, 0, 1], [0, 1, 1], [1, 1, 0]], dtype=torch.float64)
    # exact gradient of the mean log-likelihood
    Hs = all_binary_states(2, dtype=torch.float64)
    joint = torch.cat([data.repeat_interleave(4, 0), Hs.repeat(3, 1)], 1)
    log_unnorm = torch.logsumexp(-m.energy(joint).view(3, 4), 1)
    ll = log_unnorm.mean() - torch.logsumexp(-m.energy(all_binary_states(5, dtype=torch.float64)), 0)
    ll.backward()
    exact = {n: -p.grad.clone() for n, p in m.named_parameters()}
    for p in m.parameters():
        p.grad = None
    # exact distributions to sample from
    states, p_all = exact_distribution(m)
    torch.manual_seed(0)
    n = 60_000
    free = states[torch.multinomial(p_all.float(), n, replacement=True)]
    clamped = []
    with torch.no_grad():
        for v in data:
            s = torch.cat([v.expand(4, -1), Hs], 1)
            w = torch.softmax(-m.energy(s), 0)
            clamped.append(s[torch.multinomial(w.float(), n // 3, replacement=True)])
    m.set_gradients({"s": torch.cat(clamped)}, {"s": free})
    for name, p in m.named_parameters():
        mask = torch.triu(torch.ones_like(p), 1).bool() if name in ("L", "J") else torch.ones_like(p).bool()
        assert torch.allclose(p.grad[mask], exact[name][mask], atol=0.02), name


def test_bm_likelihood_normalizes_and_fit_runs(tmp_path: object) -> None:
    spec = ppgen.load_spec({"family": "bm", "hidden": 3, "data": {"name": "digits"}})
    model = ppgen.build(spec, DataInfo((2, 2), "binary"))
    torch.manual_seed(5)
    with torch.no_grad():
        for p in model.core.parameters():
            p.normal_(0, 1)
    V = all_binary_states(4).reshape(16, 2, 2)
    ll, se = model.log_likelihood(V)
    assert float(torch.logsumexp(ll, 0)) == pytest.approx(0.0, abs=1e-5) and torch.all(se == 0)

    from ppgen.evaluation.evaluate import evaluate

    spec = {"family": "bm", "hidden": 4, "data": {"name": "digits", "batch_size": 20, "limit": 100},
            "sampling": {"steps": 5, "chains": 2, "warmup": 5, "draws": 10}, "ais": {"runs": 20, "steps": 50}}
    run = ppgen.fit(spec, {"routine": "pcd", "k": 1, "positive_sweeps": 2}, epochs=1, out=tmp_path / "bm", progress=False)
    res = evaluate(run, write=False, limit=40)
    assert res["log_z_method"] == "ais" and math.isfinite(res["test_nll_nats"]) and res["test_nll_mc_stderr"] > 0
    assert res["test_nll_nats"] < 64 * math.log(2)
    idata = run.model.inference_data(run.data, run.metrics)
    assert "posterior" not in idata.groups() and idata.sample_stats["energy"].shape == (2, 10)
    figs = families.figures(run.model, tmp_path / "figs", run.data)
    assert all(p.exists() for p in figs.values())


def test_extending_a_bm_run_equals_fitting_it_straight(tmp_path: Path) -> None:
    """3 epochs straight = 1 epoch, then ``--resume --epochs 3``, bit for bit, with the shipped PCD recipe
    (persistent chains, a linear decay whose length the recipe declares)."""
    from test_rbm import assert_same_run

    spec = {"family": "bm", "hidden": 4, "data": {"name": "digits", "batch_size": 20, "limit": 100}}
    recipe = ppgen.load_recipe(Path(__file__).parents[1] / "inference" / "pcd.yaml").model_dump(mode="json")
    recipe.update(positive_sweeps=2, log_every=2)
    straight = ppgen.fit(spec, recipe, epochs=3, out=tmp_path / "a", progress=False)
    one = ppgen.fit(spec, recipe, epochs=1, out=tmp_path / "b", progress=False)
    lateral = one.checkpoint["model"]["core.L"].clone()
    extended = ppgen.fit(tmp_path / "b", None, epochs=3, resume=True, progress=False)
    assert_same_run(straight, extended)
    assert not torch.equal(lateral, extended.checkpoint["model"]["core.L"])


def test_bm_spec_errors() -> None:
    with pytest.raises(ppgen.SpecError, match="binary"):
        ppgen.load_spec({"family": "bm", "data": {"name": "digits", "binarize": "none"}})
    with pytest.raises(ppgen.SpecError, match="1024"):
        ppgen.build({"family": "bm", "hidden": 300, "data": {"name": "mnist"}}, DataInfo((1, 28, 28), "binary"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ppgen.load_spec(Path(__file__).parents[1] / "models" / "bm.yaml")
