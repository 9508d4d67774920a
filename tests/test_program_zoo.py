"""The zoo's programs fit, evaluate and diagnose: each spec written in the model language runs one epoch
on small data, reports a test log-likelihood with its standard error and the ELBO, and writes idata.nc
with its latent sites in the posterior."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ppgen
from ppgen.diagnostics.diagnose import diagnose
from ppgen.evaluation.evaluate import evaluate

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parent.parent

SMALL_DIGITS = ["data.name=digits", "data.limit=200"]
ZOO = {
    "vae_program": (SMALL_DIGITS, ["z"]),
    "vae_laplace": (SMALL_DIGITS, ["z"]),
    "vae_mixture_prior": (SMALL_DIGITS, ["z"]),
    "vae_studentt": (["data.n=500"], ["z"]),
    "cvae": (SMALL_DIGITS, ["z"]),
    "vae_2layer": (SMALL_DIGITS, ["z1", "z2"]),
    "factor_analysis": (["data.limit=200"], ["W", "b", "noise", "z"]),
}


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_program_fits_evaluates_and_diagnoses(name: str, tmp_path) -> None:
    overrides, latents = ZOO[name]
    run = ppgen.fit(ROOT / f"models/{name}.yaml", None, overrides=overrides, epochs=1, out=tmp_path / "run",
                    progress=False)
    epochs = [m for m in run.metrics if m["kind"] == "epoch"]
    assert len(epochs) == 1 and np.isfinite(epochs[0]["loss"]) and np.isfinite(epochs[0]["val_loss"])
    result = evaluate(run, k=20, limit=30)
    for key in ("test_nll_nats", "test_nll_stderr", "elbo"):
        assert np.isfinite(result[key]), (key, result)
    # the estimate of log p(x) is at least the ELBO, up to its Monte Carlo error
    assert -result["test_nll_nats"] >= result["elbo"] - 4 * result["test_nll_mc_stderr"] * np.sqrt(30) - 0.5
    out = diagnose(run)
    assert out["idata"].exists()
    idata = run.idata
    for site in latents:
        assert site in idata.posterior
    assert "x" in idata.posterior_predictive and "x" in idata.log_likelihood
    figures = run.model.figures(run.path / "figures", run.data)
    assert "samples" in figures and all(p.exists() for p in figures.values())


def test_factor_analysis_posterior_holds_the_weights(tmp_path) -> None:
    run = ppgen.fit(ROOT / "models/factor_analysis.yaml", None, overrides=["data.limit=300"], epochs=2,
                    out=tmp_path / "run", progress=False)
    out = diagnose(run)
    idata = run.idata
    w = idata.posterior["W"]
    assert w.dims == ("chain", "draw", "W_dim_0", "W_dim_1") and w.shape[2:] == (64, 5)
    assert float(w.std("draw").mean()) > 0  # draws from q(W), not a point
    assert any(str(i).startswith("W[") for i in out["summary"].index)
    # the draws from q as 4 independent chains: ArviZ reports R-hat and the ESS of the global weights
    assert w.sizes["chain"] == 4 and w.sizes["draw"] == 50
    assert idata.posterior["z"].sizes["chain"] == 4 and idata.log_likelihood["x"].sizes["chain"] == 4
    import arviz as az

    table = az.summary(idata, var_names=["W"], kind="diagnostics")
    assert len(table) == 64 * 5
    assert table["r_hat"].between(0.95, 1.1).all(), table["r_hat"].describe()
    assert (table["ess_bulk"] > 50).all() and table["ess_bulk"].median() > 150, table["ess_bulk"].describe()
    # the diagnose summary: independent draws from q, declared so, summarised without R-hat or the ESS
    assert idata.posterior.attrs["draws"] == "independent"
    rows = out["summary"].loc[[i for i in out["summary"].index if str(i).startswith("W[")]]
    assert not {"r_hat", "ess_bulk"} & set(rows.columns) and rows["mean"].notna().all()


def test_cvae_samples_a_given_class_and_sums_labels_out(tmp_path) -> None:
    run = ppgen.fit(ROOT / "models/cvae.yaml", None, overrides=SMALL_DIGITS, epochs=1, out=tmp_path / "run",
                    progress=False)
    model = run.model
    torch.manual_seed(0)
    sites = model.sample_sites(6, given={"y": 3})
    assert torch.equal(sites["y"], torch.full((6,), 3))
    assert sites["x"].shape == (6, 1, 8, 8)
    x, y = run.data.split("test")
    x, y = x[:5], y[:5]
    torch.manual_seed(1)
    per_class = model.class_log_likelihoods(x, k=50)
    torch.manual_seed(1)
    total, se = model.log_likelihood(x, k=50)
    torch.testing.assert_close(total, torch.logsumexp(per_class, 1))
    assert torch.all(se > 0)
    with pytest.raises(ppgen.SpecError, match="out of range"):
        model.sample(2, given={"y": 10})
    with pytest.raises(ppgen.SpecError, match="no site 'label'"):
        model.sample(2, given={"label": 1})


def test_zoo_program_through_the_command_line(tmp_path) -> None:
    run = tmp_path / "run"
    env_cmd = [sys.executable, "-m", "ppgen.cli"]

    def ppgen_cli(*args: str) -> str:
        out = subprocess.run([*env_cmd, *args], capture_output=True, text=True, cwd=ROOT, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout

    ppgen_cli("fit", "models/vae_laplace.yaml", "--epochs", "1", "--set", "data.name=digits", "--set", "data.limit=200",
              "--out", str(run))
    result = json.loads(ppgen_cli("evaluate", str(run), "--json", "--k", "10", "--limit", "20"))
    assert {"test_nll_nats", "test_nll_stderr", "elbo"} <= set(result)
    ppgen_cli("diagnose", str(run))
    assert (run / "idata.nc").exists()


def test_a_program_resumes_exactly(tmp_path) -> None:
    """Fitting two epochs equals fitting one and resuming for one: the program's parameters and its
    guide's live in the checkpoint like any family's."""
    spec = ROOT / "models/factor_analysis.yaml"
    over = ["data.limit=200"]
    full = ppgen.fit(spec, None, overrides=over, epochs=2, out=tmp_path / "full", progress=False)
    ppgen.fit(spec, None, overrides=over, epochs=1, out=tmp_path / "half", progress=False)
    resumed = ppgen.fit(tmp_path / "half", None, epochs=2, resume=True, progress=False)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and any("auto__W__loc" in k for k in a)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
