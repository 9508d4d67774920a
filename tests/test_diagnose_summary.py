"""The summary and figures of ``ppgen diagnose``: R-hat and the ESS only for Markov chains (never for draws
that their InferenceData declares independent), a cut table that says so and a full one on disk, row
labels that name the dim of each index, and a GAN's figures (its replicated data and per-pixel means) like
every other family's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import ppgen
from ppgen.arviz_data import arviz, declare_independent, independent_draws, markov_chains
from ppgen.cli import main
from ppgen.diagnostics.diagnose import MAX_ROWS, diagnose, summary

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DIGITS = {"name": "digits", "limit": 40, "batch_size": 20}


def _fit(spec: dict[str, Any], tmp_path: Path, recipe: Any = None) -> Any:
    return ppgen.fit(spec, recipe, epochs=1, out=tmp_path / "run", progress=False)


def _png_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


# ------------------------------------------------------------------ R-hat only for Markov chains


def _draws(independent: bool, group: str = "posterior") -> Any:
    rng = np.random.default_rng(0)
    idata = arviz().from_dict(**{group: {"z": rng.normal(size=(4, 50, 3))}}, dims={"z": ["latent"]})
    return declare_independent(idata, group) if independent else idata


@pytest.mark.parametrize("group", ["posterior", "prior"])
def test_independent_draws_are_summarised_without_r_hat_or_ess(group: str) -> None:
    markov = summary(_draws(False, group))
    assert {"r_hat", "ess_bulk", "ess_tail"} <= set(markov.columns)  # several Markov chains: diagnostics
    assert markov.notes == []
    table = summary(_draws(True, group))
    assert not {"r_hat", "ess_bulk", "ess_tail", "mcse_mean"} & set(table.columns)
    assert {"mean", "sd", "hdi_3%", "hdi_97%"} <= set(table.columns)
    np.testing.assert_allclose(table["mean"].values, markov["mean"].values)
    assert any("200 independent draws" in n and "R-hat" in n for n in table.notes)
    assert "independent draws" in repr(table)


def test_the_declaration_survives_the_netcdf_file(tmp_path: Path) -> None:
    idata = _draws(True)
    assert independent_draws(idata, "posterior") and not markov_chains(idata, "posterior")
    idata.to_netcdf(str(tmp_path / "idata.nc"))
    back = arviz().from_netcdf(str(tmp_path / "idata.nc"))
    assert independent_draws(back, "posterior") and not markov_chains(back, "posterior")
    assert markov_chains(_draws(False), "posterior") and not independent_draws(_draws(False), "posterior")


def test_a_predictive_summary_of_independent_replicates_has_no_r_hat() -> None:
    rng = np.random.default_rng(1)
    idata = arviz().from_dict(posterior_predictive={"x": rng.normal(size=(4, 5, 10, 3))},
                              observed_data={"x": rng.normal(size=(10, 3))}, dims={"x": ["obs", "value"]})
    assert "r_hat" in summary(idata).columns  # undeclared chains are taken as Markov chains
    table = summary(declare_independent(idata, "posterior_predictive"))
    assert "r_hat" not in table.columns and "ess_bulk" not in table.columns
    np.testing.assert_allclose(table["mean"].values, idata.posterior_predictive["x"].values.mean((0, 1, 2)),
                               atol=2e-3)
    assert any("independent" in n for n in table.notes)


GAN2D = {"family": "gan", "latent": {"dim": 2}, "generator": {"hidden": [8]}, "discriminator": {"hidden": [8]},
         "data": {"name": "toy2d", "distribution": "ring8", "n": 100, "batch_size": 40}}
GAN_IMAGES = {"family": "gan", "latent": {"dim": 4}, "generator": {"hidden": [16]},
              "discriminator": {"hidden": [16]}, "data": {**DIGITS, "binarize": "none"}}
VAE = {"family": "vae", "latent": {"dim": 4}, "encoder": {"hidden": [8]}, "decoder": {"hidden": [8]}, "data": DIGITS}
PIXELCNN = {"family": "pixelcnn", "conditional": True, "net": {"channels": 4, "blocks": 1, "head": 4},
            "data": {**DIGITS, "binarize": "static"}}


@pytest.mark.parametrize("spec,groups", [
    (GAN2D, ("prior", "posterior_predictive")),
    (VAE, ("posterior", "posterior_predictive")),
    (PIXELCNN, ("posterior",)),
], ids=["gan", "vae", "pixelcnn-conditional"])
def test_families_with_independent_draws_declare_them_and_diagnose_reports_no_r_hat(
        spec: dict[str, Any], groups: tuple[str, ...], tmp_path: Path) -> None:
    report = diagnose(_fit(spec, tmp_path))
    idata = arviz().from_netcdf(report["idata"])
    for group in groups:
        assert independent_draws(idata, group), group
    table = report["summary"]
    assert "r_hat" not in table.columns and "ess_bulk" not in table.columns
    assert any("independent draws, not Markov chains" in n for n in table.notes)


# ------------------------------------------------------------------ a cut table says so


def test_a_cut_summary_says_how_many_rows_and_where_the_full_table_is(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    run = _fit(VAE, tmp_path)  # z of 16 examples x 4 dimensions: 64 rows
    report = diagnose(run)
    table, csv = report["summary"], report["summary_csv"]
    assert len(table) == MAX_ROWS
    assert csv == Path(run.path) / "summary.csv" and csv.exists()
    full = pd.read_csv(csv, index_col="variable")
    assert len(full) == 16 * 4
    assert list(full.index[:MAX_ROWS]) == list(table.index)
    np.testing.assert_allclose(full["mean"].values[:MAX_ROWS], table["mean"].values, atol=1e-3)
    assert f"showing the first {MAX_ROWS} of 64 rows" in table.notes
    assert f"the full table (64 rows): {csv}" in table.notes
    assert main(["diagnose", str(run.path)]) == 0
    out = capsys.readouterr().out
    assert f"showing the first {MAX_ROWS} of 64 rows" in out and str(csv) in out


def test_an_uncut_summary_has_no_cut_note(tmp_path: Path) -> None:
    report = diagnose(_fit({**VAE, "latent": {"dim": 2}}, tmp_path))  # 16 x 2 = 32 rows
    assert len(report["summary"]) == 32
    assert not any("showing" in n or "full table" in n for n in report["summary"].notes)
    assert len(pd.read_csv(report["summary_csv"])) == 32


def test_a_cut_predictive_summary_names_what_it_shows(tmp_path: Path) -> None:
    report = diagnose(_fit(GAN_IMAGES, tmp_path))  # 64 pixels
    table = report["summary"]
    assert len(table) == MAX_ROWS
    assert f"showing {MAX_ROWS} of 64 values (those that vary most in the observed data)" in table.notes
    assert len(pd.read_csv(report["summary_csv"])) == 64


# ------------------------------------------------------------------ a GAN's figures


def test_diagnose_of_a_gan_on_images_draws_its_replicates_and_pixel_means(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    run = _fit(GAN_IMAGES, tmp_path)
    report = diagnose(run)
    figures = report["figures"]
    assert {"predictive", "pixel_means"} <= set(figures)
    for path in figures.values():
        assert path.exists() and max(_png_size(path)) < 2000
    assert main(["diagnose", str(run.path)]) == 0
    out = capsys.readouterr().out
    assert f"predictive: {figures['predictive']}" in out and f"pixel_means: {figures['pixel_means']}" in out


def test_the_pixel_means_figure_shows_the_means_of_draws_and_data(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import ppgen.plots.predictive as predictive

    drawn: dict[str, Any] = {}
    monkeypatch.setattr(predictive, "save_figure", lambda fig, path: drawn.setdefault("fig", fig) and Path(path))
    rng = np.random.default_rng(0)
    reps, obs = rng.uniform(size=(2, 3, 5, 12)), rng.uniform(size=(5, 12))
    idata = arviz().from_dict(posterior_predictive={"x": reps}, observed_data={"x": obs},
                              dims={"x": ["obs", "value"]})
    predictive.pixel_means_figure(idata, tmp_path / "m.png", (1, 3, 4))
    fig = drawn["fig"]
    images = [np.asarray(ax.images[0].get_array()) for ax in fig.axes if ax.images]
    np.testing.assert_allclose(images[0], reps.reshape(-1, 12).mean(0).reshape(3, 4))
    np.testing.assert_allclose(images[1], obs.mean(0).reshape(3, 4))
    np.testing.assert_allclose(images[2], images[0] - images[1])
    assert all(ax.get_xlabel() == "column" for ax in fig.axes if ax.images)


def test_diagnose_of_a_gan_on_points_draws_its_replicates_over_the_data(tmp_path: Path) -> None:
    report = diagnose(_fit(GAN2D, tmp_path))
    assert "predictive" in report["figures"] and report["figures"]["predictive"].exists()
    assert "pixel_means" not in report["figures"]


# ------------------------------------------------------------------ row labels name their dims


def _label_selection(label: str) -> tuple[str, dict[str, int]]:
    """``z[obs: 3, latent: 1]`` -> ("z", {"obs": 3, "latent": 1}); a scalar ``w`` -> ("w", {})."""
    import re

    found = re.fullmatch(r"([^\[\]]+?)(?:\[(.*)\])?", label)
    assert found is not None, label
    name, inside = found.groups()
    sel = {}
    for part in (inside.split(", ") if inside else []):
        dim, _, value = part.partition(": ")
        assert dim and value, f"{label}: {part!r} names no dim"
        sel[dim] = int(value)
    return name, sel


GMM = {"family": "gmm", "components": 2, "data": {"name": "toymix", "distribution": "duo1d", "n": 60, "batch_size": 1000}}
HMM = {"family": "hmm", "states": 2, "data": {"name": "toyseq", "n": 12, "batch_size": 1000}}
PROGRAM = {"family": "program", "data": DIGITS,
           "networks": {"decoder": {"kind": "mlp", "inputs": ["z"], "hidden": [8]},
                        "encoder": {"kind": "mlp", "inputs": ["x"], "hidden": [8]}},
           "model": {"z": {"dist": "Normal", "loc": 0.0, "scale": 1.0, "shape": [3]},
                     "x": {"dist": "Bernoulli", "logits": "decoder", "observed": "x"}},
           "guide": {"z": {"dist": "Normal", "loc": "encoder.loc", "scale": "softplus(encoder.scale)"}}}


@pytest.mark.parametrize("spec,dims", [
    ({**VAE, "latent": {"dim": 3}}, {"z": ("obs", "latent")}),
    (GMM, {"weights": ("component",), "locs": ("component", "dim"), "scales": ("component", "dim")}),
    (HMM, {"initial": ("state",), "transition": ("state", "state_to"), "locs": ("state", "dim"),
           "scales": ("state", "dim")}),
    (PROGRAM, {"z": ("obs", "z_dim")}),
], ids=["vae", "gmm", "hmm", "program"])
def test_summary_rows_name_the_dim_of_each_index(spec: dict[str, Any], dims: dict[str, tuple[str, ...]],
                                                  tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Every row of the printed and the full table names the dims of its indices (which is the example,
    which the latent dimension or the component), and holds the summary of exactly that entry of the
    InferenceData: the label read as a selection gives back the row's value."""
    run = _fit(spec, tmp_path)
    report = diagnose(run)
    idata = arviz().from_netcdf(report["idata"])
    full = pd.read_csv(report["summary_csv"], index_col="variable")
    assert list(full.index[: len(report["summary"])]) == list(report["summary"].index)
    column = "mean" if "mean" in full.columns else full.columns[0]  # a point estimate: its one column
    seen = set()
    for label, value in full[column].items():
        name, sel = _label_selection(label)
        assert tuple(sel) == dims[name], label
        seen.add(name)
        entry = idata.posterior[name].sel(sel)
        np.testing.assert_allclose(value, float(entry.mean()), atol=2e-3, err_msg=label)
    assert seen == set(dims)
    assert main(["diagnose", str(run.path)]) == 0
    out = capsys.readouterr().out
    first = full.index[0]
    assert first in out and all(f"{d}: 0" in first for d in dims[_label_selection(first)[0]])


def test_the_log_likelihood_and_predictive_tables_name_their_dims(tmp_path: Path) -> None:
    """The per-example log-likelihood rows (a PixelCNN) and the per-value predictive rows (a GAN) are
    labelled as az.summary labels the others: the dim named."""
    report = diagnose(_fit(GAN2D, tmp_path))
    assert list(report["summary"].index) == ["mean x[value: 0]", "mean x[value: 1]"]
    rng = np.random.default_rng(0)
    ll = arviz().from_dict(log_likelihood={"x": rng.normal(size=(1, 1, 3, 4))}, dims={"x": ["obs", "pixel"]})
    table = summary(ll)
    assert list(table.index) == ["x[obs: 0]", "x[obs: 1]", "x[obs: 2]"]
    np.testing.assert_allclose(table["log_lik_nats"].values, ll.log_likelihood["x"].values[0, 0].sum(-1), atol=1e-3)


# ------------------------------------------------------------------ the loss trace says which loss


@pytest.mark.parametrize("spec,loss", [(VAE, "minus the ELBO"), (PIXELCNN, "minus the log-likelihood, exact"),
                                       (PROGRAM, "minus the ELBO")], ids=["vae", "pixelcnn", "program"])
def test_the_loss_trace_names_the_runs_loss(spec: dict[str, Any], loss: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """loss_trace.png called every family's loss "loss (nats per example)" and had no title: its axis and
    title say what the run's loss is (the generic figures of a VAE, a PixelCNN's, a program's)."""
    import ppgen.plots.curves as curves
    from ppgen.plots.metric_labels import metric_labels

    drawn: dict[str, Any] = {}
    save = curves.save_figure
    monkeypatch.setattr(curves, "save_figure", lambda fig, path: (drawn.setdefault(Path(path).name, fig),
                                                                  save(fig, path))[1])
    run = _fit(spec, tmp_path, {"routine": "svi", "log_every": 1})  # every step recorded
    report = diagnose(run)
    assert "loss_trace" in report["figures"]
    (ax,) = drawn["loss_trace.png"].axes
    ylabel = ax.get_ylabel().replace("\n", " ")
    assert ylabel == metric_labels(run.recipe, run.spec)["loss"] and ylabel.startswith(loss), ylabel
    assert "(nats per example)" in ylabel
    assert ax.get_title() and loss in ax.get_title(), ax.get_title()


def test_an_image_gans_values_are_pixels(tmp_path: Path) -> None:
    """A GAN on images named its flattened pixels ``value`` (rows read "mean x[value: 155]"): they are
    ``pixel``, as in the other families' InferenceData, in the data and in the summary's rows; a GAN on
    points keeps ``value`` (test_the_log_likelihood_and_predictive_tables_name_their_dims)."""
    report = diagnose(_fit(GAN_IMAGES, tmp_path))
    idata = arviz().from_netcdf(report["idata"])
    assert idata.observed_data["x"].dims == ("obs", "pixel")
    assert idata.posterior_predictive["x"].dims == ("chain", "draw", "obs", "pixel")
    assert "value" not in idata.posterior_predictive.dims and "value" not in idata.observed_data.dims
    full = pd.read_csv(report["summary_csv"], index_col="variable")
    assert len(full) == 64
    assert all(_label_selection(label) == ("mean x", {"pixel": i}) for i, label in enumerate(full.index)), full.index
    assert all(label.startswith("mean x[pixel: ") for label in report["summary"].index)
    # each row is the mean of that pixel over a replicated data set, beside the observed images' mean of it
    obs = idata.observed_data["x"].values
    np.testing.assert_allclose(full["observed"].values, obs.mean(0), atol=1e-3)
