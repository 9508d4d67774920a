"""A fitted program stays an ordinary Pyro object: Pyro's Predictive and ArviZ's from_pyro take its model
and guide as they are, with Pyro's default settings, and what they draw is the fitted guide's."""

from __future__ import annotations

from pathlib import Path

import pyro
import pytest
import torch

import ppgen

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parent.parent


def test_predictive_and_from_pyro_on_a_fitted_program(tmp_path) -> None:
    settings = pyro.settings.get()
    run = ppgen.fit(ROOT / "models/factor_analysis.yaml", None, overrides=["data.limit=200"], epochs=1,
                    out=tmp_path / "run", progress=False)
    assert pyro.settings.get() == settings  # Pyro's defaults, as the user had them
    model = run.model
    x, _ = run.data.split("test")
    x = x[:7]
    torch.manual_seed(0)
    draws = 400
    posterior = pyro.infer.Predictive(model.model, guide=model.guide, num_samples=draws)(x)
    assert set(posterior) >= {"W", "b", "noise", "z", "x"}
    w = posterior["W"].reshape(draws, 64, 5)
    assert posterior["z"].shape == (draws, 7, 5) and posterior["x"].shape == (draws, 7, 64)
    # the global sites are drawn from the fitted AutoNormal guide: mean and spread of its q(W)
    loc = model.params.value("auto__W__loc").detach()
    scale = model.params.value("auto__W__scale").detach()
    se = scale / draws**0.5
    assert float(((w.mean(0) - loc).abs() / se).max()) < 5.5
    torch.testing.assert_close(w.std(0) / scale, torch.ones_like(scale), atol=0.25, rtol=0)
    prior = pyro.infer.Predictive(model.model, num_samples=50)(x)
    assert float(prior["W"].std()) > 0.8  # N(0, 1) prior draws, not the guide's
    import arviz as az

    idata = az.from_pyro(prior=prior, posterior_predictive={"x": posterior["x"]})
    assert {"prior", "posterior_predictive"} <= set(idata.groups())
    assert idata.posterior_predictive["x"].shape == (1, draws, 7, 64)
    assert idata.prior["W"].shape[:2] == (1, 50)
    # Pyro's own SVI, with its global parameter store, continues the fit: it sees and moves every parameter
    pyro.clear_param_store()
    try:
        before = {k: v.detach().clone() for k, v in model.named_parameters()}
        svi = pyro.infer.SVI(model.model, model.guide, pyro.optim.Adam({"lr": 0.01}),
                             pyro.infer.Trace_ELBO(max_plate_nesting=1))
        svi.step(x)
        moved = [k for k, v in model.named_parameters() if not torch.equal(v.detach(), before[k])]
        assert sorted(moved) == sorted(before)
    finally:
        pyro.clear_param_store()
