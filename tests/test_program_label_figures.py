"""Figures of programs with a label site or a deterministic code, drawn with the object API: one style
per row decoded at every class, codes in their principal components, and the decoded codes, prior draws
and fitted-Normal draws side by side."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ppgen
from ppgen.data.core import DataInfo
from ppgen.program.label_figures import code_samples, code_space, style_is_shared, style_sites, style_transfer

INFO = DataInfo((1, 4, 4), "binary", 3)


def _build(spec: dict):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return ppgen.build({"family": "program", "data": {"name": "digits", "binarize": "static"}, **spec}, INFO)


M2 = {"networks": {"dec": {"inputs": ["y", "z"], "hidden": [4]}, "enc": {"inputs": ["x", "y"], "hidden": [4]}},
      "model": {"y": {"dist": "Categorical", "logits": [0.0, 0.0, 0.0], "observed": "y"},
                "z": {"dist": "Normal", "loc": 0.0, "scale": 1.0, "shape": [2]},
                "x": {"dist": "Bernoulli", "logits": "dec", "observed": "x"}},
      "guide": {"z": {"dist": "Normal", "loc": "enc.loc", "scale": "softplus(enc.scale)"}}}
CODE = {"networks": {"dec": {"inputs": ["z"], "hidden": [4]}},
        "model": {"z": {"dist": "Normal", "loc": 0.0, "scale": 1.0, "shape": [3]},
                  "x": {"dist": "Bernoulli", "logits": "dec", "observed": "x"}},
        "guide": "delta"}
X = (torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(0)) > 0.5).float()


def test_style_transfer_decodes_one_style_per_row_at_every_class(tmp_path, saved, monkeypatch):
    model = _build(M2)
    assert [s.name for s in style_sites(model)] == ["z"]
    y = torch.tensor([2, 0])
    point = model.encode(X[:2], y)["z"]
    asked = []
    sample = model.sample
    monkeypatch.setattr(model, "sample", lambda n, given=None, mean=False: asked.append(given) or sample(n, given, mean))
    style_transfer(model, X[:2], y, tmp_path / "s.png")
    for i, given in enumerate(asked):
        assert given["y"].tolist() == [0, 1, 2]
        torch.testing.assert_close(given["z"], point[i].expand(3, 2))
    ax = saved[0].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["input", "y=0", "y=1", "y=2"]
    grid = np.asarray(ax.images[0].get_array())
    assert grid.shape[:2] == (2 * 5 + 1, 4 * 5 + 1)
    np.testing.assert_allclose(grid[6:10, 1:5], X[1, 0].numpy())  # row 2 starts with its input


def test_style_is_not_shared_by_a_decoder_per_class(tmp_path):
    """One decoder per class (``per: y``) reads z its own way in each class: no style transfer figure; an
    encoder per class alone leaves the decoder's z shared."""
    assert style_is_shared(_build(M2))
    per_dec = {**M2, "networks": {**M2["networks"], "dec": {"inputs": ["z"], "per": "y", "hidden": [4]}}}
    assert not style_is_shared(_build(per_dec))
    per_enc = {**M2, "networks": {**M2["networks"], "enc": {"inputs": ["x"], "per": "y", "hidden": [4]}}}
    assert style_is_shared(_build(per_enc))
    assert not style_is_shared(_build(CODE))
    from ppgen.data.core import Dataset

    y = torch.tensor([0, 1, 2, 0, 1])
    data = Dataset("digits", X, X, X, y, y, y, binarize="static", num_classes=3)
    figures = _build(per_dec).figures(tmp_path, data)
    assert "samples_by_class" in figures and "style_transfer" not in figures


def test_code_space_projects_codes_on_their_principal_components(tmp_path, saved, monkeypatch):
    model = _build(CODE)
    g = torch.Generator().manual_seed(1)
    codes = torch.randn(40, 3, generator=g) * torch.tensor([3.0, 1.0, 0.1])
    monkeypatch.setattr(model, "encode", lambda x, y=None: {"z": codes[: x.shape[0]]})
    code_space(model, "z", torch.zeros(40, 1, 4, 4), torch.arange(40) % 3, tmp_path / "c.png")
    ax = saved[0].axes[0]
    centred = codes.double() - codes.double().mean(0)
    s = torch.linalg.svdvals(centred)
    share = float((s[:2] ** 2).sum() / (s ** 2).sum())
    assert ax.get_title() == f"codes z of test examples: first two principal components ({share:.0%} of the variance)"
    pts = np.asarray(ax.collections[0].get_offsets())
    # the projection keeps the distances within the top two components: the variance it shows is s1^2 + s2^2
    np.testing.assert_allclose((pts ** 2).sum(), float((s[:2] ** 2).sum()), rtol=1e-6)
    assert len(saved[0].axes) == 2  # the label colour bar


def test_two_dimensional_codes_are_shown_as_they_are(tmp_path, saved, monkeypatch):
    model = _build(CODE)
    codes = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    monkeypatch.setattr(model, "encode", lambda x, y=None: {"z": codes})
    code_space(model, "z", torch.zeros(2, 1, 4, 4), None, tmp_path / "c.png")
    ax = saved[0].axes[0]
    np.testing.assert_allclose(np.asarray(ax.collections[0].get_offsets()), codes.numpy())
    assert ax.get_title().endswith(": the code") and len(saved[0].axes) == 1


def test_code_samples_decode_training_codes_prior_draws_and_fitted_draws(tmp_path, saved, monkeypatch):
    model = _build(CODE)
    codes = torch.randn(30, 3, generator=torch.Generator().manual_seed(2)) * 5 + 10
    monkeypatch.setattr(model, "encode", lambda x, y=None: {"z": codes[: x.shape[0]]})
    asked = []
    sample = model.sample
    monkeypatch.setattr(model, "sample", lambda n, given=None, mean=False: asked.append(given["z"]) or sample(n, given, mean))
    code_samples(model, "z", torch.zeros(30, 1, 4, 4), tmp_path / "k.png", n=6, seed=4)
    picked, prior, fitted = asked
    assert all(any(torch.equal(row, c) for c in codes) for row in picked)
    gen = torch.Generator().manual_seed(4)
    torch.testing.assert_close(prior, torch.randn(6, 3, generator=gen))
    assert float(fitted.mean()) > 5  # drawn around the training codes' mean, not the origin
    axes = saved[0].axes
    assert [a.get_title() for a in axes] == ["codes of training examples, decoded", "z ~ N(0, I), decoded",
                                             "z ~ N(mean, covariance of the training codes), decoded"]
    np.testing.assert_allclose(saved[0].get_size_inches(), [0.7 * 6 + 0.5, 6.0])
