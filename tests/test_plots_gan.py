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
