"""The GAN's figures drawn with the object API: the generator against the exact inverse CDF of a 1-D toy
target (its KS distance computed on the samples drawn), the discriminator's scores and mode circles over
2-D data, the files drawn for each kind of data, and the diagnostic loss panels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ppgen
from ppgen.data.core import DataInfo, Dataset
from ppgen.data.toy import TOY2D, toy1d
from ppgen.plots import gan as gan_plots
from ppgen.plots.common import subplots


def _gan(data: dict, event: tuple[int, ...], z: dict):
    spec = {"family": "gan", "data": data, "latent": z,
            "generator": {"hidden": [8]}, "discriminator": {"hidden": [8]}}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return ppgen.build(spec, DataInfo(event, "continuous"))


def _gan1d():
    return _gan({"name": "toy1d", "distribution": "normal"}, (1,), {"dim": 1, "prior": "uniform", "low": 0.0, "high": 1.0})


def _ring():
    return _gan({"name": "toy2d", "distribution": "ring8"}, (2,), {"dim": 2})


def _ks(x: torch.Tensor, cdf) -> float:
    x = x.double().reshape(-1).sort().values
    n = x.numel()
    f = cdf(x)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(torch.maximum(i / n - f, f - (i - 1) / n).max())


def test_plot_generator_draws_the_map_against_both_inverse_cdfs_and_returns_the_ks_distance():
    model = _gan1d()
    fig, axes = subplots(1, 2)
    torch.manual_seed(3)
    ks = gan_plots.plot_generator(model, list(axes), n=500)
    torch.manual_seed(3)
    with torch.no_grad():
        x = model.sample(500)
    assert ks == pytest.approx(_ks(x, toy1d("normal").cdf), abs=1e-12)
    assert axes[0].get_title() == f"500 samples, KS = {ks:.4f}"
    assert sorted(t.get_text() for t in axes[0].get_legend().get_texts()) == ["G(z)", "exact normal density"]
    lines = axes[1].get_lines()
    assert [ln.get_label() for ln in lines] == ["G(z)", "exact F^-1(F_z(z))", "exact F^-1(1 - F_z(z))"]
    assert lines[2].get_linestyle() == "--" and axes[1].get_xlabel() == "z"
    z = lines[0].get_xdata()
    assert len(z) == 999 and 0 < z.min() < 0.001 and 0.999 < z.max() < 1  # the Uniform(0, 1) prior's quantiles


def test_plot_discriminator_draws_scores_samples_and_the_modes_three_sigma_circles():
    model = _ring()
    fig, ax = subplots()
    ref = torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
    cov = gan_plots.plot_discriminator(model, ax, reference=ref, n=300)
    toy = TOY2D["ring8"]
    assert len(ax.patches) == 8
    np.testing.assert_allclose([p.get_radius() for p in ax.patches], 3 * toy.std)
    np.testing.assert_allclose(sorted(tuple(p.center) for p in ax.patches), sorted(map(tuple, toy.centres.tolist())))
    assert ax.get_title().startswith(f"300 samples: {cov['modes_covered']}/8 modes")
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("x[0]", "x[1]")
    assert len(ax.collections) == 3  # the score mesh, data and samples
    assert len(fig.axes) == 2  # and the colour bar


def test_figures_for_each_kind_of_data(tmp_path):
    x1 = torch.randn(20, 1)
    out = gan_plots.figures(_gan1d(), tmp_path / "a", Dataset("toy1d", x1, x1, x1))
    assert set(out) == {"samples", "generator"} and all(p.stat().st_size > 0 for p in out.values())
    x2 = torch.randn(20, 2)
    out = gan_plots.figures(_ring(), tmp_path / "b", Dataset("toy2d", x2, x2, x2))
    assert set(out) == {"samples", "discriminator"}


def test_diagnostic_losses_draw_one_panel_per_logged_number(tmp_path, monkeypatch):
    from ppgen.arviz_data import arviz

    saved = {}
    real = gan_plots.save_figure
    monkeypatch.setattr(gan_plots, "save_figure", lambda fig, path: saved.setdefault(path.name, fig) and real(fig, path))
    stats = {"loss": np.array([[1.0, 0.8, 0.7]]), "g_loss": np.array([[2.0, 1.5, 1.2]]),
             "step": np.array([[1, 2, 3]])}
    idata = arviz().from_dict(sample_stats=stats)
    out = gan_plots.diagnostic_figures(_ring(), idata, tmp_path)
    assert set(out) == {"losses"}
    axes = saved["losses.png"].axes
    assert [a.get_title() for a in axes] == ["discriminator loss", "generator loss"]
    np.testing.assert_allclose(axes[1].get_lines()[0].get_ydata(), [2.0, 1.5, 1.2])
    np.testing.assert_allclose(saved["losses.png"].get_size_inches(), [7.2, 3.0])


def _ticks_in_view(axis_ticks, lim) -> list[float]:
    return [float(t) for t in axis_ticks if min(lim) <= t <= max(lim)]


def test_losses_of_a_single_logged_step_are_markers_on_whole_steps(tmp_path, saved):
    """A 1-epoch run logs one step: each panel drew a line of one point (nothing to see) over an axis
    reading 9.6-10.4."""
    from ppgen.arviz_data import arviz

    stats = {k: np.array([[v]]) for k, v in
             {"loss": 1.3, "g_loss": 0.7, "d_real": 0.55, "d_fake": 0.45, "step": 10}.items()}
    gan_plots.diagnostic_figures(_ring(), arviz().from_dict(sample_stats=stats), tmp_path)
    (fig,) = saved  # losses.png
    assert len(fig.axes) == 4  # loss, g_loss, d_real, d_fake
    np.testing.assert_allclose(fig.get_size_inches(), [7.2, 6.0])  # two rows of two: four in a row read too wide
    for ax in fig.axes:
        (line,) = ax.get_lines()
        assert list(line.get_xdata()) == [10] and line.get_marker() not in (None, "None", "", " ")
        ticks = _ticks_in_view(ax.get_xticks(), ax.get_xlim())
        assert 10 in ticks and all(t.is_integer() for t in ticks), ticks
        assert ax.get_xlim()[1] - ax.get_xlim()[0] >= 2  # a step either side, not a fraction of one


def test_losses_draw_a_number_recorded_on_some_steps_only_at_those_steps(tmp_path, saved):
    """With n_critic > 1 the generator's loss is recorded every n-th step; the other steps are NaN in
    sample_stats, which broke its line into single points that drew nothing."""
    from ppgen.arviz_data import arviz

    nan = float("nan")
    stats = {"loss": np.array([[1.0, 0.9, 0.8, 0.7, 0.6, 0.5]]), "g_loss": np.array([[nan, nan, 2.0, nan, nan, 1.5]]),
             "step": np.array([[10, 20, 30, 40, 50, 60]])}
    gan_plots.diagnostic_figures(_ring(), arviz().from_dict(sample_stats=stats), tmp_path)
    (fig,) = saved  # losses.png
    g = fig.axes[1]  # g_loss
    (line,) = g.get_lines()
    np.testing.assert_allclose(line.get_xdata(), [30, 60])
    np.testing.assert_allclose(line.get_ydata(), [2.0, 1.5])
    assert line.get_marker() not in (None, "None", "", " ")
    ticks = _ticks_in_view(g.get_xticks(), g.get_xlim())
    assert ticks and all(t.is_integer() for t in ticks), ticks


def _gan_metrics() -> list[dict]:
    """The records of a short adversarial run with a gradient penalty: train records every 10 steps and
    one epoch record with the validation numbers."""
    train = [{"kind": "train", "epoch": 1, "step": s, "loss": 1.4 - 0.01 * s, "g_loss": 0.7 + 0.01 * s,
              "d_real": 0.5 + 0.001 * s, "d_fake": 0.5 - 0.001 * s, "gp": 0.1 / s} for s in (10, 20, 30)]
    epoch = {"kind": "epoch", "epoch": 1, "step": 30, "loss": 1.2, "g_loss": 0.9, "d_real": 0.52, "d_fake": 0.48,
             "gp": 0.005, "val_loss": 1.25, "val_d_real": 0.51, "val_d_fake": 0.47, "val_ks": 0.2, "time_s": 1.0}
    return train + [epoch]


@pytest.mark.parametrize("loss,unit", [("nonsaturating", "nats, binary cross-entropy"),
                                       ("wasserstein", "wasserstein loss, critic units")])
def test_gan_training_curves_name_every_panel_for_what_it_shows(tmp_path, saved, loss, unit):
    """The GAN's training_curves.png titled its panels with the recorded keys (d_fake, g_loss, loss)."""
    from ppgen.plots.curves import training_curves
    from ppgen.plots.metric_labels import metric_labels
    from ppgen.registry import load_recipe

    recipe = load_recipe({"routine": "adversarial", "loss": loss, "gradient_penalty": 1.0})
    training_curves(_gan_metrics(), tmp_path / "training_curves.png", labels=metric_labels(recipe))
    (fig,) = saved
    panels = {ax.get_label(): ax for ax in fig.axes if ax.axison}
    assert set(panels) == {"loss", "g_loss", "d_real", "d_fake", "gp", "val_ks"}
    raw = set(panels) | {f"val_{k}" for k in panels} | {"ks"}
    for key, ax in panels.items():
        title, ylabel = ax.get_title(), ax.get_ylabel().replace("\n", " ")
        words = set(f"{title} {ylabel}".replace("(", " ").replace(")", " ").split())
        assert title not in raw and ylabel not in raw and not words & (raw - {"loss"}), (key, title, ylabel)
    want = {"loss": "discriminator loss", "g_loss": "generator loss", "d_real": "mean D(x) on data",
            "d_fake": "mean D(G(z)) on samples", "gp": "gradient penalty"}
    for key, title in want.items():
        assert panels[key].get_title() == title
        assert panels[key].get_ylabel().replace("\n", " ").startswith(f"{title} (")  # and its unit
    assert f"({unit})" in panels["g_loss"].get_ylabel().replace("\n", " ")
    score = "probability" if loss == "nonsaturating" else "critic score"
    assert panels["d_fake"].get_ylabel().replace("\n", " ") == f"mean D(G(z)) on samples ({score})"
    # validation numbers without a training panel of their own say so
    assert "validation" in panels["val_ks"].get_title()


def test_losses_png_and_training_curves_label_a_number_alike(tmp_path, saved):
    """One table labels both figures: the run's labels reach the diagnose panels."""
    from ppgen.arviz_data import arviz, loss_trace
    from ppgen.plots.curves import training_curves
    from ppgen.plots.metric_labels import metric_labels
    from ppgen.registry import load_recipe

    labels = metric_labels(load_recipe({"routine": "adversarial", "loss": "hinge", "gradient_penalty": 1.0}))
    metrics = _gan_metrics()
    training_curves(metrics, tmp_path / "training_curves.png", labels=labels)
    idata = arviz().from_dict(sample_stats=loss_trace(metrics))
    gan_plots.diagnostic_figures(_ring(), idata, tmp_path, labels=labels)
    curves_fig, losses_fig = saved
    curves = {ax.get_label(): (ax.get_title(), ax.get_ylabel()) for ax in curves_fig.axes if ax.axison}
    losses = {ax.get_label(): (ax.get_title(), ax.get_ylabel()) for ax in losses_fig.axes}
    assert set(losses) == {"loss", "g_loss", "d_real", "d_fake", "gp"}
    assert all(losses[k] == curves[k] for k in losses), (losses, curves)
    assert "hinge loss, critic units" in losses["loss"][1].replace("\n", " ")
