"""The VAE's figures drawn with the object API: the set of files for image and 2-D latents, the grid of
latent values each figure decodes, axes labels, ticks and figure sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ppgen
from ppgen.data.core import DataInfo, Dataset
from ppgen.plots import vae as vae_plots

DIGITS = DataInfo((1, 8, 8), "binary", 10)


@pytest.fixture
def figures(monkeypatch):
    """The figures the module saves, by file name."""
    saved = {}
    real = vae_plots.save_figure

    def capture(fig, path):
        saved[path.name if hasattr(path, "name") else str(path)] = fig
        return real(fig, path)

    monkeypatch.setattr(vae_plots, "save_figure", capture)
    return saved


def _vae(z_dim: int = 2):
    spec = {"family": "vae", "data": {"name": "digits", "binarize": "static"}, "latent": {"dim": z_dim},
            "encoder": {"hidden": [8]}, "decoder": {"hidden": [8]}}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return ppgen.build(spec, DIGITS)


def _data(n: int = 12) -> Dataset:
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(n, 1, 8, 8, generator=g) > 0.5).float()
    y = torch.arange(n) % 10
    return Dataset("digits", x, x, x, y, y, y, binarize="static", num_classes=10)


def test_a_2d_image_vae_draws_every_figure(tmp_path, figures):
    out = vae_plots.vae_figures(_vae(2), _data(), tmp_path, n=16)
    assert set(out) == {"samples", "reconstructions", "traversals", "manifold", "latent"}
    assert all(p.is_file() and p.stat().st_size > 0 and p.parent == tmp_path for p in out.values())
    scatter = figures["latent.png"].axes[0]
    assert (scatter.get_xlabel(), scatter.get_ylabel()) == ("z[0] (posterior mean)", "z[1] (posterior mean)")
    assert scatter.collections and scatter.get_title() == "posterior means of test examples"


def test_a_wider_latent_has_no_manifold_and_no_scatter(tmp_path):
    out = vae_plots.vae_figures(_vae(3), _data(), tmp_path, n=9)
    assert set(out) == {"samples", "reconstructions", "traversals"}


def test_traversals_move_one_dimension_at_a_time(tmp_path, figures, monkeypatch):
    model = _vae(3)
    seen = []
    decode = model.decode_mean
    monkeypatch.setattr(model, "decode_mean", lambda z: seen.append(z.clone()) or decode(z))
    vae_plots.traversals(model, tmp_path / "t.png", dims=8, steps=5, span=2.0)
    z = seen[0].reshape(3, 5, 3)
    values = torch.linspace(-2.0, 2.0, 5)
    for i in range(3):
        torch.testing.assert_close(z[i, :, i], values)
        assert float(z[i].abs().sum()) == float(values.abs().sum())  # every other coordinate at 0
    fig = figures["t.png"]
    np.testing.assert_allclose(fig.get_size_inches(), [0.8 * 5 + 0.6, 0.8 * 3 + 0.4])
    ax = fig.axes[0]
    # counted from 0, as the posterior figure (example 0, z[0]) and the summary (latent: 0) count them
    assert [t.get_text() for t in ax.get_yticklabels()] == ["z[0]", "z[1]", "z[2]"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["-2.0", "-1.0", "+0.0", "+1.0", "+2.0"]
    assert ax.images[0].get_array().shape[:2] == (3 * 9 + 1, 5 * 9 + 1)


def test_the_manifold_runs_z1_across_and_z2_up(tmp_path, figures, monkeypatch):
    model = _vae(2)
    seen = []
    decode = model.decode_mean
    monkeypatch.setattr(model, "decode_mean", lambda z: seen.append(z.clone()) or decode(z))
    vae_plots.manifold(model, tmp_path / "m.png", steps=4)
    z = seen[0].reshape(4, 4, 2)  # row by row of the grid, top row first
    lo, hi = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor([0.05, 0.95]))
    torch.testing.assert_close(z[0, 0], torch.stack([lo, hi]))  # top left: smallest z1, largest z2
    torch.testing.assert_close(z[3, 3], torch.stack([hi, lo]))  # bottom right
    assert bool((z[:, 1:, 0] > z[:, :-1, 0]).all()) and bool((z[1:, :, 1] < z[:-1, :, 1]).all())
    np.testing.assert_allclose(figures["m.png"].get_size_inches(), [8, 8])
    assert "(z[0] across, z[1] up)" in figures["m.png"].axes[0].get_title()  # dims counted from 0


def test_reconstructions_show_data_above_their_decoded_posterior_means(tmp_path, figures):
    model = _vae(2)
    x = _data(6).test_x
    vae_plots.reconstructions(model, x, tmp_path / "r.png")
    grid = figures["r.png"].axes[0].images[0].get_array()
    assert grid.shape[:2] == (2 * 9 + 1, 6 * 9 + 1)
    np.testing.assert_allclose(np.asarray(grid)[1:9, 1:9], x[0, 0].numpy())
    expect = model.decode_mean(model.posterior(x[:1]).mean)[0, 0].detach().numpy()
    np.testing.assert_allclose(np.asarray(grid)[10:18, 1:9], expect, rtol=1e-5, atol=1e-6)
