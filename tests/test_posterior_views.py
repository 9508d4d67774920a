"""What ``ppgen diagnose`` gives each family, in ArviZ's conventions: draws from q(z|x) as several chains
with R-hat and the ESS, Gibbs-chain statistics in ``sample_stats`` (not ``posterior``), point estimates
shown as such, and for families without a posterior the predictive draws and per-pixel log-likelihoods."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ppgen
from ppgen.arviz_data import arviz
from ppgen.diagnostics import diagnose

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DIGITS = {"name": "digits", "limit": 40, "batch_size": 20}


def _fit(spec: dict[str, Any], tmp_path: Path, recipe: Any = None, epochs: int = 1) -> Any:
    return ppgen.fit(spec, recipe, epochs=epochs, out=tmp_path / "run", progress=False)


def test_vae_posterior_draws_are_several_chains_with_r_hat_and_ess(tmp_path: Path) -> None:
    run = _fit({"family": "vae", "latent": {"dim": 2}, "encoder": {"hidden": [8]}, "decoder": {"hidden": [8]},
                "data": DIGITS}, tmp_path)
    report = diagnose(run)
    idata = arviz().from_netcdf(report["idata"])
    post = idata.posterior
    assert post.sizes["chain"] >= 2 and post.sizes["chain"] * post.sizes["draw"] == 200
    assert idata.posterior_predictive.sizes["chain"] == post.sizes["chain"]
    table = arviz().summary(idata, var_names=["z"], kind="diagnostics")
    assert len(table) == post.sizes["obs"] * post.sizes["latent"]
    # independent draws from q: R-hat near 1, bulk ESS near the number of draws
    assert np.isfinite(table["r_hat"]).all() and (table["r_hat"] < 1.05).all()
    assert (table["ess_bulk"] > 100).all()
    # the diagnose summary reports them
    assert {"r_hat", "ess_bulk"} <= set(report["summary"].columns)
    assert np.isfinite(report["summary"]["r_hat"]).all()
