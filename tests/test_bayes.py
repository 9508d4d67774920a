"""The Bayesian workflow against truth: NUTS on a conjugate model matches the exact posterior, NUTS in
blocks resumes exactly, relabelling undoes label switching (and makes R-hat meaningful), InferenceData
carries the pointwise log-likelihood that PSIS-LOO needs, and LOO picks the true number of components
of simulated data."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.mcmc.util import initialize_model
from pyro.nn import PyroModule
from pyro.ops.stats import split_gelman_rubin

import ppgen
from ppgen.arviz_data import arviz
from ppgen.models.bayesian.relabel import permute_labels, relabel
from ppgen.models.bayesian.stores import Site
from ppgen.inference.base import Plan
from ppgen.inference.nuts import NUTSConfig, NUTSRoutine
from ppgen.spec import SpecError
from ppgen.diagnostics import workflow
from ppgen.plots import bayesian as plots_bayesian
from ppgen.plots import families


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------- NUTS against exact posteriors


class NormalMean(PyroModule):
    """mu ~ Normal(m0, s0), x_i ~ Normal(mu, sigma) with sigma known: the posterior of mu is Normal with
    precision 1/s0^2 + n/sigma^2 and mean (m0/s0^2 + sum x / sigma^2) / precision."""

    m0, s0, sigma = 1.0, 2.0, 1.5
    bayesian = True  # its one sample site, mu, is a global parameter with a prior
    max_plate_nesting = 1

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        mu = pyro.sample("mu", dist.Normal(self.m0, self.s0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, self.sigma), obs=x)


def test_nuts_matches_the_exact_normal_posterior() -> None:
    torch.manual_seed(0)
    x = 3.0 + 1.5 * torch.randn(12)
    model = NormalMean()
    routine = NUTSRoutine(NUTSConfig(chains=2, warmup=150, draws_per_epoch=400, init="prior"))
    state = routine.init(model, Plan(x, None, 12, 12, 1, 1))
    state, info = routine.step(state, (x, None))
    draws = state.extra["draws"]["mu"].double()  # (chain, draw)
    assert draws.shape == (2, 400)
    prec = 1 / NormalMean.s0**2 + len(x) / NormalMean.sigma**2
    mean = (NormalMean.m0 / NormalMean.s0**2 + float(x.sum()) / NormalMean.sigma**2) / prec
    sd = prec**-0.5
    se = sd / math.sqrt(draws.numel() / 3)  # allow for autocorrelation: ESS >= a third of the draws
    assert abs(float(draws.mean()) - mean) < 4 * se, (float(draws.mean()), mean)
    assert abs(float(draws.std()) / sd - 1) < 0.15
    assert float(split_gelman_rubin(draws)) < 1.05
    # The loss is minus the log joint per example, averaged over draws.
    lj = [dist.Normal(NormalMean.m0, NormalMean.s0).log_prob(m) + dist.Normal(m, NormalMean.sigma).log_prob(x).sum()
          for m in draws.reshape(-1)[torch.linspace(0, 799, 20).long()].float()]
    assert abs(info["loss"] + float(torch.stack(lj).mean()) / len(x)) < 1e-3
    assert info["divergences"] == 0 and 0.5 < info["accept_rate"] <= 1


def test_enumerated_and_marginal_potentials_agree() -> None:
    """NUTS with likelihood: enumerated lets Pyro sum the assignments out inside the potential energy;
    it is the same function as the marginal model's."""
    data = ppgen.data.load(name="toymix", distribution="duo1d", n=50)
    model = ppgen.build({"family": "gmm", "components": 2, "data": {"name": "toymix", "distribution": "duo1d", "n": 50}})
    x = data.train_x
    init, pot_marginal, _, _ = initialize_model(model.marginal_model, (x,), max_plate_nesting=1)
    _, pot_enum, _, _ = initialize_model(model.model, (x,), max_plate_nesting=1)
    for shift in (0.0, 0.3, -0.7):
        z = {k: v.detach() + shift for k, v in init.items()}
        torch.testing.assert_close(pot_enum(z), pot_marginal(z), rtol=1e-5, atol=1e-3)


def test_nuts_refuses_minibatches() -> None:
    spec = {"family": "gmm", "components": 2, "data": {"name": "toymix", "distribution": "duo1d", "n": 100, "batch_size": 10}}
    with pytest.raises(SpecError, match="set data.batch_size to at least 80"):
        spec = ppgen.load_spec(spec)
        NUTSRoutine(NUTSConfig()).init(ppgen.build(spec), Plan.of(ppgen.data.load(spec.data), spec.data.batch_size, 4))
    with pytest.raises(SpecError, match="chains: Input should be greater than or equal to 2"):
        ppgen.load_recipe({"routine": "nuts", "chains": 1})


# --------------------------------------------------------------------------- a small NUTS run, resumed


SPEC = {"family": "gmm", "components": 2, "prior": {"loc": {"std": 5.0}},
        "data": {"name": "toymix", "distribution": "duo1d", "n": 60, "batch_size": 100}}
RECIPE = {"routine": "nuts", "warmup": 40, "draws_per_epoch": 40, "chains": 2, "jit": True}


@pytest.fixture(scope="module")
def nuts_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("nuts") / "run"
    return ppgen.fit(SPEC, {**RECIPE, "epochs": 2}, out=out, seed=3, progress=False)


def test_nuts_resume_continues_the_chains_exactly(nuts_run, tmp_path) -> None:
    """Two epochs in one go equal one epoch and a resumed second: draws, positions, adapted step sizes."""
    part = tmp_path / "part"
    ppgen.fit(SPEC, {**RECIPE, "epochs": 1}, out=part, seed=3, progress=False)
    resumed = ppgen.fit(SPEC, {**RECIPE, "epochs": 2}, out=part, seed=3, resume=True, progress=False)
    a, b = nuts_run.model.posterior.draws(), resumed.model.posterior.draws()
    assert a.keys() == b.keys() and a["locs"].shape == (2, 80, 2, 1)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ra, rb = nuts_run.checkpoint["routine"]["extra"], resumed.checkpoint["routine"]["extra"]
    assert torch.equal(ra["step_size"], rb["step_size"])
    for k in ra["position"]:
        assert torch.equal(ra["position"][k], rb["position"][k])
    # The second block continued the first: same step size in both epochs' records.
    records = [m for m in nuts_run.metrics if m["kind"] == "train"]
    assert [m["draws"] for m in records] == [40, 80]
    assert records[0]["step_size"] == records[1]["step_size"]


def test_inference_data_has_the_pointwise_log_likelihood(nuts_run, tmp_path) -> None:
    model, data = nuts_run.model, nuts_run.data
    idata = model.inference_data(data, nuts_run.metrics)
    for group in ("posterior", "log_likelihood", "posterior_predictive", "observed_data", "sample_stats"):
        assert group in idata.groups(), group
    x = data.train_x
    ll = idata.log_likelihood["x"].values  # (chain, draw, obs)
    assert ll.shape == (2, 80, x.shape[0])
    # Each entry is log p(x_n | theta) at that draw (relabelling does not change it).
    draws = model.posterior.draws()
    flat = {k: v.reshape(-1, *v.shape[2:]) for k, v in draws.items()}
    mix = dist.MixtureSameFamily(dist.Categorical(flat["weights"]), dist.Normal(flat["locs"][..., 0], flat["scales"][..., 0]))
    expected = mix.log_prob(x[:, 0][:, None]).T.reshape(2, 80, -1)
    np.testing.assert_allclose(ll, expected.double().numpy(), rtol=1e-5, atol=1e-5)
    # lp is the log joint: log prior + summed log-likelihood.
    lp = idata.sample_stats["lp"].values.reshape(-1)
    np.testing.assert_allclose(lp, (model.log_prior(flat) + mix.log_prob(x[:, 0][:, None]).sum(0)).double().numpy(), rtol=1e-5)
    assert idata.posterior["locs"].dims == ("chain", "draw", "component", "dim")
    assert idata.posterior_predictive["x"].shape == (2, 80, x.shape[0], 1)
    np.testing.assert_allclose(idata.observed_data["x"].values, x.double().numpy())
    # Relabelled: component 0 has the smaller mean in every draw.
    locs = idata.posterior["locs"].values[..., 0]
    assert np.all(locs[..., 0] < locs[..., 1])
    table = workflow.summary(idata)
    assert {"r_hat", "ess_bulk", "ess_tail"} <= set(table.columns)
    assert table.loc["locs[component: 0, dim: 0]", "r_hat"] < 1.1
    result = workflow.loo(idata)
    assert result.pareto_k.shape == (x.shape[0],) and math.isfinite(result.elpd_loo)
    # Round trip through netCDF, as ppgen diagnose writes it.
    idata.to_netcdf(str(tmp_path / "idata.nc"))
    again = arviz().from_netcdf(str(tmp_path / "idata.nc"))
    np.testing.assert_allclose(again.log_likelihood["x"].values, ll)


def test_diagnose_writes_idata_and_the_workflow_figures(nuts_run) -> None:
    from ppgen.diagnostics.diagnose import diagnose

    out = diagnose(nuts_run)
    assert out["idata"].exists()
    assert {"trace", "pair", "ppc", "khat", "loo_pit"} <= set(out["figures"])
    assert all(p.exists() for p in out["figures"].values())
    assert "r_hat" in out["summary"].columns
    figs = families.figures(nuts_run.model, nuts_run.path / "figures", nuts_run.data)
    assert figs["fit"].exists()


def test_cli_evaluate_and_diagnose(nuts_run, capsys) -> None:
    import json

    from ppgen.cli import main

    assert main(["evaluate", str(nuts_run.path), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["nll_unit"] == "nats per data point" and math.isfinite(res["test_nll_nats"])
    assert main(["diagnose", str(nuts_run.path)]) == 0
    out = capsys.readouterr().out
    assert "r_hat" in out and "idata.nc" in out


def test_evaluate_reports_the_posterior_predictive_density(nuts_run) -> None:
    from ppgen.evaluation.evaluate import evaluate

    res = evaluate(nuts_run, write=False)
    assert res["nll_unit"] == "nats per data point" and "160 posterior draws" in res["likelihood"]
    x, _ = nuts_run.data.split("test")
    ll = nuts_run.model.pointwise_log_lik(x, nuts_run.model.theta()).double()  # (S, N)
    expected = -(torch.logsumexp(ll, 0) - math.log(ll.shape[0])).mean()
    assert math.isclose(res["test_nll_nats"], float(expected), rel_tol=1e-6)
    assert res["test_nll_mc_stderr"] > 0


# --------------------------------------------------------------------------- relabelling


def _fake_sites() -> list[Site]:
    from torch.distributions import constraints

    return [Site("weights", (3,), constraints.simplex, ("component",), (0,)),
            Site("locs", (3, 1), constraints.real, ("component", "dim"), (0,)),
            Site("transition", (3, 3), constraints.real, ("component", "to"), (0, 1))]


def test_relabel_undoes_label_switching() -> None:
    """Draws around one configuration with the labels permuted (each chain stuck in another labelling,
    one switching): relabelling restores one labelling everywhere and R-hat drops to about 1."""
    g = torch.Generator().manual_seed(0)
    chains, n = 4, 200
    locs = torch.tensor([[-3.0], [0.5], [4.0]]) + 0.2 * torch.randn(chains * n, 3, 1, generator=g)
    weights = torch.softmax(torch.tensor([0.1, 0.5, 0.2]) + 0.05 * torch.randn(chains * n, 3, generator=g), -1)
    trans = torch.arange(9.0).reshape(3, 3).expand(chains * n, 3, 3)
    # Each chain sits in its own labelling; the last one switches labels halfway and switches randomly
    # in its last 20 draws.
    fixed = [torch.tensor(p) for p in ([2, 0, 1], [0, 1, 2], [1, 2, 0], [0, 2, 1])]
    perms = torch.stack([fixed[i // n] for i in range(chains * n)])
    perms[-n // 2 :] = torch.tensor([2, 1, 0])
    perms[-20:] = torch.stack([torch.randperm(3, generator=g) for _ in range(20)])
    switched = {"weights": permute_labels(weights, perms, (0,)), "locs": permute_labels(locs, perms, (0,)),
                "transition": permute_labels(trans, perms, (0, 1))}
    draws = {k: v.reshape(chains, n, *v.shape[1:]) for k, v in switched.items()}
    assert float(split_gelman_rubin(draws["locs"][..., 0, 0])) > 1.5
    fixed, found = relabel(draws, _fake_sites(), lambda th: th["locs"])
    flat = {k: v.reshape(chains * n, *v.shape[2:]) for k, v in fixed.items()}
    torch.testing.assert_close(flat["locs"], locs)  # sorted by mean, as generated
    torch.testing.assert_close(flat["weights"], weights)
    torch.testing.assert_close(flat["transition"], trans)  # rows and columns permuted back together
    assert float(split_gelman_rubin(fixed["locs"][..., 0, 0])) < 1.05


def test_permute_labels_moves_rows_and_columns_of_a_transition_matrix() -> None:
    a = torch.tensor([[[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.0, 0.5, 0.5]]])
    perm = torch.tensor([[2, 0, 1]])
    out = permute_labels(a, perm, (0, 1))[0]
    for i in range(3):
        for j in range(3):
            assert out[i, j] == a[0, perm[0, i], perm[0, j]]


def test_choose_prefers_the_simplest_model_within_one_standard_error() -> None:
    table = pd.DataFrame({"elpd_loo": [-100.0, -100.5, -130.0], "elpd_diff": [0.0, 0.5, 30.0],
                          "dse": [0.0, 1.2, 5.0], "p_loo": [9.0, 6.0, 3.0]}, index=["K=4", "K=3", "K=2"])
    assert workflow.choose(table, rule="best") == "K=4"
    assert workflow.choose(table) == "K=3"  # within dse of the best, and fewer effective parameters
    assert workflow.choose(table, complexity={"K=4": 4, "K=3": 3, "K=2": 2}) == "K=3"
    with pytest.raises(SpecError, match="rule must be"):
        workflow.choose(table, rule="bic")


# --------------------------------------------------------------------------- model comparison


@pytest.mark.slow
@pytest.mark.parametrize("n,true_k", [(400, 3), (300, 2)])
def test_loo_picks_the_true_number_of_components(tmp_path, n: int, true_k: int) -> None:
    """Data from a mixture of ``true_k`` components; NUTS posteriors for K = true_k - 1, true_k,
    true_k + 1; PSIS-LOO (az.compare) rejects the smaller model decisively and the parsimony rule picks
    the true one. The Dirichlet concentration 0.5 is below d/2 (d = 2 parameters per component), under
    which the posterior empties superfluous components (Rousseau & Mengersen 2011), so that the bigger
    model predicts about as well as the true one and no better. (The default test run checks the same
    on 120 points through examples/bayesian_workflow.ipynb.)"""
    runs = {}
    ks = (true_k - 1, true_k, true_k + 1)
    for k in ks:
        spec = {"family": "gmm", "components": k, "prior": {"loc": {"std": 5.0}, "weights_concentration": 0.5},
                "data": {"name": "toymix", "distribution": {3: "trio1d", 2: "duo1d"}[true_k], "n": n, "batch_size": 1000}}
        recipe = {"routine": "nuts", "warmup": 300, "draws_per_epoch": 300, "epochs": 1, "jit": True}
        runs[f"K={k}"] = ppgen.fit(spec, recipe, out=tmp_path / f"k{k}", progress=False)
    table = workflow.compare(runs)
    assert list(table.columns[:3]) == ["rank", "elpd_loo", "p_loo"]
    small = f"K={true_k - 1}"
    assert table.loc[small, "elpd_diff"] > 4 * table.loc[small, "dse"]  # underfitting is clearly worse
    assert workflow.choose(table, complexity={f"K={k}": k for k in ks}) == f"K={true_k}"


def test_diagnose_of_a_nuts_mixture_of_two_dimensional_data_draws_one_check_per_coordinate(tmp_path,
                                                                                           monkeypatch) -> None:
    """The posterior predictive check of 2-D data has one panel per coordinate (it passed one axis for two
    and failed with exit 1)."""
    from ppgen.diagnostics.diagnose import diagnose
    from ppgen.store.folder import open_run

    run = ppgen.fit({"family": "gmm", "components": 2,
                     "data": {"name": "toymix", "distribution": "blobs3", "n": 60, "batch_size": 1000}},
                    {"routine": "nuts", "warmup": 20, "draws_per_epoch": 40, "chains": 2, "max_tree_depth": 3,
                     "epochs": 1}, out=tmp_path / "run", progress=False)
    drawn: dict[str, Any] = {}
    save = plots_bayesian.save_figure

    def keep(fig: Any, path: Any) -> Any:
        drawn[Path(path).name] = fig
        return save(fig, path)

    monkeypatch.setattr(plots_bayesian, "save_figure", keep)
    result = diagnose(open_run(run.path), quiet=True)
    assert "ppc" in result["figures"]
    panels = [ax for ax in drawn["ppc.png"].axes if ax.get_visible() and ax.has_data()]
    assert len(panels) == 2 and all(ax.get_ylabel() == "density" for ax in panels)
