"""What ``ppgen diagnose`` gives each family, in ArviZ's conventions: draws from q(z|x) as several chains,
declared independent (no R-hat or ESS in the summary), Gibbs-chain statistics in ``sample_stats`` (not ``posterior``), point estimates
shown as such, and for families without a posterior the predictive draws and per-pixel log-likelihoods."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ppgen
from ppgen.arviz_data import arviz
from ppgen.diagnostics.diagnose import diagnose

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DIGITS = {"name": "digits", "limit": 40, "batch_size": 20}


def _fit(spec: dict[str, Any], tmp_path: Path, recipe: Any = None, epochs: int = 1) -> Any:
    return ppgen.fit(spec, recipe, epochs=epochs, out=tmp_path / "run", progress=False)


def test_vae_posterior_draws_are_several_independent_chains(tmp_path: Path) -> None:
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
    # independent draws, declared so: the diagnose summary gives their moments and says why there is no R-hat
    assert idata.posterior.attrs["draws"] == "independent"
    assert not {"r_hat", "ess_bulk"} & set(report["summary"].columns)
    assert np.isfinite(report["summary"]["mean"]).all()
    assert any("independent draws" in note for note in report["summary"].notes)


ENERGY = {"ais": {"runs": 4, "steps": 20},
          "sampling": {"steps": 3, "chains": 3, "warmup": 2, "draws": 12, "quality_samples": 10}}


@pytest.mark.parametrize("spec,recipe", [
    ({"family": "rbm", "hidden": 5}, None),
    ({"family": "bm", "hidden": 4}, None),
    ({"family": "dbn", "hidden": [5, 4], "bound": {"samples": 4}}, {"routine": "layerwise", "layer_epochs": 1}),
])
def test_gibbs_chain_statistics_are_sample_stats_not_a_posterior(spec: dict[str, Any], recipe: Any,
                                                                  tmp_path: Path) -> None:
    run = _fit({**spec, "data": DIGITS, **ENERGY}, tmp_path, recipe, epochs=2 if spec["family"] == "dbn" else 1)
    report = diagnose(run)
    idata = arviz().from_netcdf(report["idata"])
    assert "posterior" not in idata.groups()
    stats = idata.sample_stats
    assert {"free_energy", "energy", "mean_visible", "mean_hidden"} <= set(stats.data_vars)
    assert stats.sizes["chain"] == 3 and stats.sizes["draw"] == 12
    assert "free_energy" in idata.attrs["chain_statistics"]
    # diagnose reports R-hat and the ESS of the chain statistics
    table = report["summary"]
    assert {"r_hat", "ess_bulk"} <= set(table.columns)
    assert "free_energy" in table.index and math.isfinite(table.loc["free_energy", "r_hat"])
    assert {"trace", "rank"} <= set(report["figures"])


def _png_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


GMM = {"family": "gmm", "components": 2, "data": {"name": "toymix", "distribution": "duo1d", "n": 60, "batch_size": 1000}}
HMM = {"family": "hmm", "states": 2, "data": {"name": "toyseq", "n": 12, "batch_size": 1000}}


@pytest.mark.parametrize("spec,recipe,estimate", [
    (GMM, None, "MAP"),
    (HMM, None, "MAP"),
    (GMM, {"routine": "em", "restarts": 2}, "MAP"),
    (GMM, {"routine": "em", "restarts": 2, "prior": "flat"}, "ML"),
])
def test_a_point_estimate_is_shown_as_one_draw_with_its_log_likelihood(spec: dict[str, Any], recipe: Any,
                                                                       estimate: str, tmp_path: Path) -> None:
    import torch

    from ppgen.diagnostics.workflow import compare
    from ppgen.spec import SpecError

    run = _fit(spec, tmp_path, recipe, epochs=2)
    report = diagnose(run)
    idata = arviz().from_netcdf(report["idata"])
    model = run.model
    post = idata.posterior
    assert post.sizes["chain"] == 1 and post.sizes["draw"] == 1
    assert post.attrs["point_estimate"] == estimate
    point = {k: v.detach() for k, v in model.point.values().items()}
    assert set(post.data_vars) == set(point)
    for name, value in point.items():
        np.testing.assert_allclose(post[name].values[0, 0], value.detach().double().numpy(), rtol=1e-6)
    # log p(x_n | theta_hat) per example: the plug-in likelihood, exact
    x, _ = run.data.split("train")
    ll = idata.log_likelihood["x"].values
    assert ll.shape == (1, 1, x.shape[0])
    exact, se = model.log_likelihood(x)
    np.testing.assert_allclose(ll[0, 0], exact.double().numpy(), rtol=1e-5)
    assert bool((se == 0).all())
    # replicated data from the plug-in predictive, several chains
    pp = idata.posterior_predictive["x"]
    assert pp.sizes["chain"] >= 2 and pp.shape[2:] == tuple(x.shape)
    assert "plug-in" in idata.posterior_predictive.attrs["predictive"]
    # the summary prints the values, without moments, R-hat or ESS
    table = report["summary"]
    assert list(table.columns) == [estimate]
    first = next(iter(post.data_vars))
    assert table.index[0].startswith(first)
    np.testing.assert_allclose(table[estimate].iloc[0], float(point[first].reshape(-1)[0]), atol=1e-3)
    # one figure, small
    fig = report["figures"]["point_estimate"]
    assert fig.exists() and max(_png_size(fig)) < 2000
    # a point estimate has no LOO: compare refuses it, saying why
    with pytest.raises(SpecError, match="holds a point estimate") as err:
        compare({"a": idata, "b": idata})
    assert "fit it with --inference nuts" in str(err.value) and "inference/" not in str(err.value)
    assert torch.isfinite(exact).all()


@pytest.mark.parametrize("spec", [
    {"family": "pixelcnn", "net": {"channels": 4, "blocks": 1, "head": 4}},
    {"family": "pixelrnn", "net": {"hidden": 2, "channels": 4, "layers": 1, "head": 4}},
])
def test_an_autoregressive_model_gets_pixel_log_likelihoods_and_predictive_draws(
        spec: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from ppgen.plots import predictive as plots

    drawn: dict[str, Any] = {}
    save = plots.save_figure

    def keep(fig: Any, path: Any) -> Path:
        drawn[Path(path).stem] = fig
        return save(fig, path)

    monkeypatch.setattr(plots, "save_figure", keep)
    run = _fit({**spec, "data": DIGITS}, tmp_path)
    report = diagnose(run)
    idata = arviz().from_netcdf(report["idata"])
    assert "posterior" not in idata.groups()
    x = run.data.split("test")[0][:16]
    n = x.shape[0]
    # the per-pixel log-likelihoods add up to the exact log p(x) of each image
    ll = idata.log_likelihood["x"]
    assert ll.dims == ("chain", "draw", "obs", "pixel") and ll.shape == (1, 1, n, 64)
    assert (int(ll.attrs["height"]), int(ll.attrs["width"])) == (8, 8)
    with torch.no_grad():
        exact = run.model.log_prob(x).double().numpy()
    np.testing.assert_allclose(ll.values[0, 0].sum(-1), exact, rtol=1e-5)
    assert (ll.values <= 0).all()  # probabilities of binary pixels
    # replicated data sets drawn from the model, several chains, binary like the data
    pp = idata.posterior_predictive["x"]
    assert pp.sizes["chain"] >= 2 and pp.shape[2:] == (n, 64)
    assert set(np.unique(pp.values)) <= {0.0, 1.0}
    np.testing.assert_array_equal(idata.observed_data["x"].values, x.reshape(n, -1).numpy())
    # the summary: log p(x) of each test image
    table = report["summary"]
    np.testing.assert_allclose(table["log_lik_nats"].values, exact[: len(table)], atol=1e-3)
    # the mean per-pixel NLL as an image, with a colour bar in nats, small
    path = report["figures"]["pixel_nll"]
    assert path.exists() and max(_png_size(path)) < 2000
    fig = drawn["pixel_nll"]
    image = fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(np.asarray(image).reshape(-1), -ll.values[0, 0].mean(0), rtol=1e-6)
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert any("nats" in label for label in labels)
    assert fig.axes[0].get_xlabel() == "column" and fig.axes[0].get_ylabel() == "row"


def test_a_gan_summary_sets_replicated_data_against_the_observed(tmp_path: Path) -> None:
    run = _fit({"family": "gan", "latent": {"dim": 2}, "generator": {"hidden": [8]}, "discriminator": {"hidden": [8]},
                "data": {"name": "toy2d", "distribution": "ring8", "n": 100, "batch_size": 40}}, tmp_path)
    report = diagnose(run)
    idata = arviz().from_netcdf(report["idata"])
    assert "posterior" not in idata.groups() and "prior_predictive" not in idata.groups()
    pp = idata.posterior_predictive["x"]
    assert pp.sizes["chain"] == 4 and pp.sizes["chain"] * pp.sizes["draw"] == 20
    table = report["summary"]
    # one row per value: the mean of a replicated data set beside the observed mean; the replicates are
    # independent draws, so neither R-hat nor the ESS
    assert len(table) == 2 and {"observed", "mean", "sd"} <= set(table.columns)
    assert not {"r_hat", "ess_bulk"} & set(table.columns)
    obs = idata.observed_data["x"].values.mean(0)
    np.testing.assert_allclose(table["observed"].values, obs, atol=1e-3)
    means = pp.values.mean(2).reshape(-1, 2).mean(0)
    np.testing.assert_allclose(table["mean"].values, means, atol=2e-3)
    assert np.isfinite(table["sd"]).all() and (table["sd"] > 0).all()


def test_the_predictive_summary_of_images_shows_the_values_that_vary() -> None:
    from ppgen.diagnostics.diagnose import summary

    rng = np.random.default_rng(0)
    obs = np.zeros((10, 6))
    obs[:, [1, 4]] = rng.normal(size=(10, 2))  # only values 1 and 4 vary
    obs[:, 2] = 0.1 * rng.normal(size=10)
    idata = arviz().from_dict(posterior_predictive={"x": rng.normal(size=(4, 5, 10, 6))},
                              observed_data={"x": obs}, dims={"x": ["obs", "value"]})
    table = summary(idata, max_vars=2)
    assert [str(i) for i in table.index] == ["mean x[value: 1]", "mean x[value: 4]"]


def test_the_point_estimate_figure_labels_every_panel_and_stays_small(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from ppgen.plots import predictive as plots
    from ppgen.plots.predictive import point_estimate_figure

    drawn: list[Any] = []
    save = plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: (drawn.append(fig), save(fig, path))[1])
    rng = np.random.default_rng(0)
    idata = arviz().from_dict(
        posterior={"locs": rng.normal(size=(1, 1, 40, 3)), "weights": np.full((1, 1, 2), 0.5)},
        log_likelihood={"x": rng.normal(size=(1, 1, 30))},
        posterior_predictive={"x": rng.normal(size=(4, 25, 30))},
        observed_data={"x": rng.normal(size=30)},
        dims={"x": ["obs"]}, attrs={"unit": "data point"})
    idata.posterior.attrs["point_estimate"] = "MAP"
    path = point_estimate_figure(idata, tmp_path / "p.png")
    assert max(_png_size(path)) < 2000
    (fig,) = drawn
    shown = [ax for ax in fig.axes if ax.axison]
    assert len(shown) == 4  # two variables, the log-likelihood, the predictive
    assert all(ax.get_xlabel() and ax.get_title() for ax in shown)
    # a variable with many entries shows its first ones and says so
    assert "first 16 of 120" in shown[0].get_title() and len(shown[0].get_yticks()) == 16
