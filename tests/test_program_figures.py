"""A program's figures drawn with the object API: which latent is traversed, the values each figure
decodes (read from the latent's own prior), one row per class of the label site, and the files drawn."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ppgen
from ppgen.data.core import DataInfo, Dataset
from ppgen.program import figures as program_figures_module
from ppgen.program.figures import _label_site, _top_latent, by_class, program_figures, traversals

INFO = DataInfo((1, 4, 4), "binary", 3)


def _program(model: dict, info: DataInfo = INFO, **rest):
    spec = {"family": "program", "data": {"name": "digits", "binarize": "static"}, "model": model,
            "networks": {"dec": {"inputs": ["z"], "hidden": [4]}}, **rest}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return ppgen.build(spec, info)


Z = {"dist": "Normal", "loc": [1.0, -2.0], "scale": [2.0, 0.5]}
X = {"dist": "Bernoulli", "logits": "dec", "observed": "x"}


def _data(n: int = 6) -> Dataset:
    x = (torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    y = torch.arange(n) % 3
    return Dataset("digits", x, x, x, y, y, y, binarize="static", num_classes=3)


def test_the_traversed_latent_is_the_first_vector_latent_whose_prior_reads_no_site():
    model = _program({"s": {"dist": "Normal", "loc": 0.0, "scale": 1.0},
                      "w": {"dist": "Normal", "loc": 0.0, "scale": 1.0, "shape": [2]},
                      "z": {**Z, "loc": "w"}, "x": X})
    assert _top_latent(model).name == "w"
    assert _label_site(model) is None
    mixed = _program({"c": {"dist": "Categorical", "logits": [0.0, 0.0, 0.0], "enumerate": "parallel"},
                      "z": {**Z, "loc": "onehot(c, 3) @ M"}, "x": X},
                     params={"M": {"shape": [3, 2]}})
    assert _top_latent(mixed) is None and _label_site(mixed).name == "c"


def test_traversals_move_each_coordinate_across_its_prior(tmp_path, saved, monkeypatch):
    model = _program({"z": Z, "x": X})
    seen = []
    decode = program_figures_module._decode
    monkeypatch.setattr(program_figures_module, "_decode", lambda m, s, z: seen.append(z.clone()) or decode(m, s, z))
    torch.manual_seed(0)
    traversals(model, model.program.model_by_name["z"], tmp_path / "t.png", steps=5, span=2.0)
    z = seen[0].reshape(2, 5, 2)
    values = torch.linspace(-2.0, 2.0, 5)
    torch.testing.assert_close(z[0, :, 0], 1.0 + values * 2.0, atol=0.25, rtol=0)
    torch.testing.assert_close(z[1, :, 1], -2.0 + values * 0.5, atol=0.1, rtol=0)
    assert float(z[0, :, 1].std()) == 0.0 and abs(float(z[0, 0, 1]) + 2.0) < 0.05  # held at the prior mean
    ax = saved[0].axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["z1", "z2"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["-2.0", "-1.0", "+0.0", "+1.0", "+2.0"]


@pytest.mark.parametrize("dist_name", ["Categorical", "OneHotCategorical"])
def test_samples_by_class_fix_the_label_site_row_by_row(tmp_path, saved, monkeypatch, dist_name):
    model = _program({"y": {"dist": dist_name, "logits": [0.0, 0.0, 0.0], "observed": "y"},
                      "z": {**Z, "loc": "onehot(y, 3) @ M" if dist_name == "Categorical" else "y @ M"}, "x": X},
                     params={"M": {"shape": [3, 2]}})
    asked = []
    draw = model.display_samples
    monkeypatch.setattr(model, "display_samples", lambda n, given=None: asked.append(given) or draw(n, given=given))
    by_class(model, model.program.y_site, tmp_path / "b.png", None, per_class=4)
    if dist_name == "Categorical":
        assert asked == [{"y": 0}, {"y": 1}, {"y": 2}]
    else:
        assert [g["y"].tolist() for g in asked] == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    fig = saved[0]
    np.testing.assert_allclose(fig.get_size_inches(), [0.8 * 4 + 0.6, 0.8 * 3 + 0.4])
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["y=0", "y=1", "y=2"]
    assert fig.axes[0].images[0].get_array().shape[:2] == (3 * 5 + 1, 4 * 5 + 1)


def test_the_figures_of_an_image_program_with_a_2d_latent(tmp_path):
    model = _program({"z": Z, "x": X})
    out = program_figures(model, _data(), tmp_path, n=9)
    assert set(out) == {"samples", "reconstructions", "traversals", "manifold", "latent"}
    assert all(p.stat().st_size > 0 and p.parent == tmp_path for p in out.values())


def test_a_program_of_points_draws_samples_over_the_data_and_by_class(tmp_path, saved):
    spec = {"family": "program", "data": {"name": "toy2d"},
            "model": {"c": {"dist": "Categorical", "logits": [0.0, 0.0], "enumerate": "parallel"},
                      "x": {"dist": "Normal", "loc": "onehot(c, 2) @ M", "scale": 0.3, "observed": "x"}},
            "params": {"M": {"shape": [2, 2], "init": [[-2.0, 0.0], [2.0, 0.0]]}}}
    with torch.random.fork_rng(devices=[]):
        model = ppgen.build(spec, DataInfo((2,), "continuous"))
    x = torch.randn(30, 2, generator=torch.Generator().manual_seed(0))
    out = program_figures(model, Dataset("toy2d", x, x, x), tmp_path, n=20)
    assert set(out) == {"samples", "samples_by_class"}
    ax = saved[-1].axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["data", "c=0", "c=1"]
    centres = [np.asarray(coll.get_offsets()).mean(0) for coll in ax.collections[1:]]
    assert centres[0][0] < -1 and centres[1][0] > 1  # each class's draws around its own mean
