"""The training losses in ``ppgen compare``'s figure and the curves' labels: one panel per kind of number
(an exact negative log-likelihood, a bound, a MAP objective, a discriminator's loss, ...), each labelled
with what it shows, from what the family and the routine declare."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import ppgen
from ppgen.evaluation import compare as compare_module
from ppgen.plots.metric_labels import LOSS_KINDS, loss_kind, metric_labels
from ppgen.registry import load_recipe, load_spec

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DIGITS = {"name": "digits", "limit": 40, "batch_size": 20, "binarize": "static"}
PIXELCNN = {"family": "pixelcnn", "net": {"channels": 4, "blocks": 1, "head": 4}, "data": DIGITS}
VAE = {"family": "vae", "latent": {"dim": 2}, "encoder": {"hidden": [8]}, "decoder": {"hidden": [8]}, "data": DIGITS}


@pytest.mark.parametrize("spec,recipe,kind,label", [
    (PIXELCNN, {"routine": "svi"}, "exact", "minus the log-likelihood, exact (nats per example)"),
    ({**PIXELCNN, "prior": {"kind": "normal"}}, {"routine": "svi"}, "map",
     "minus log-likelihood minus log prior / N (nats per example)"),
    ({**PIXELCNN, "family": "gated_pixelcnn", "net": {}}, {"routine": "svi", "elbo": "iwae", "num_particles": 4}, "exact",
     "minus the log-likelihood, exact (nats per example)"),
    (VAE, {"routine": "svi"}, "bound", "minus the ELBO (nats per example)"),
    (VAE, {"routine": "svi", "elbo": "iwae", "num_particles": 4}, "bound", "minus the IWAE bound (nats per example)"),
    ({"family": "gan", "data": {**DIGITS, "binarize": "none"}}, {"routine": "adversarial"}, "adversarial",
     "discriminator loss (nats, binary cross-entropy)"),
    ({"family": "rbm", "hidden": 4, "data": DIGITS}, {"routine": "cd"}, "pseudo",
     "minus pseudo-log-likelihood (nats per example)"),
    ({"family": "gmm", "components": 2, "data": {"name": "toymix", "distribution": "duo1d", "n": 60}},
     {"routine": "enum_svi"}, "map", "minus log posterior density (nats per example)"),
])
def test_each_loss_is_named_for_what_it_is(spec: dict[str, Any], recipe: dict[str, Any], kind: str,
                                           label: str) -> None:
    s, r = load_spec(spec), load_recipe(recipe)
    found = loss_kind(r, s)
    assert found.kind == LOSS_KINDS[kind] and found.label == label
    assert metric_labels(r, s)["loss"] == label  # the training curves say the same


def _fit(spec: dict[str, Any], out: Path) -> Any:
    return ppgen.fit(spec, None, epochs=2, out=out, progress=False)


def test_compare_never_puts_an_exact_nll_and_a_bound_on_one_axis(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    pixel = _fit(PIXELCNN, tmp_path / "pixelcnn")
    vae = _fit(VAE, tmp_path / "vae")
    vae2 = _fit({**VAE, "latent": {"dim": 3}}, tmp_path / "vae3")
    drawn: dict[str, Any] = {}
    import ppgen.plots.common as common

    saved = common.save_figure
    monkeypatch.setattr(common, "save_figure", lambda fig, path: drawn.setdefault("fig", fig) and saved(fig, path))
    rows, path = compare_module.compare([pixel.path, vae.path, vae2.path], tmp_path / "c.png")
    assert path.exists()
    fig = drawn["fig"]
    curves = [ax for ax in fig.axes if ax.get_xlabel() == "epoch"]
    assert len(curves) == 2  # the PixelCNN's exact NLL apart from the VAEs' bound, which share one
    by_title = {ax.get_title(): ax for ax in curves}
    assert set(by_title) == {LOSS_KINDS["exact"], LOSS_KINDS["bound"]}
    exact, bound = by_title[LOSS_KINDS["exact"]], by_title[LOSS_KINDS["bound"]]
    assert "exact" in exact.get_ylabel() and "ELBO" not in exact.get_ylabel()
    assert "ELBO" in bound.get_ylabel()
    assert [t.get_text() for t in exact.get_legend().get_texts()] == [f"pixelcnn ({pixel.path.name})"]
    assert len(bound.get_legend().get_texts()) == 2


PROGRAM_DATA = {"name": "toy2d", "distribution": "moons", "n": 64, "batch_size": 32}


@pytest.mark.parametrize("model,guide,kind", [
    # a flow: nothing latent, log p(x) by the change of variables
    ({"x": {"dist": "TransformedDistribution", "base": {"dist": "Normal", "loc": 0.0, "scale": 1.0},
            "transforms": [{"kind": "affine_coupling", "hidden": [4]}], "observed": "x"}}, None, "exact"),
    # a mixture whose component is summed out: exact
    ({"c": {"dist": "Categorical", "logits": {"param": 0.0, "shape": [2]}, "enumerate": "parallel"},
      "x": {"dist": "Normal", "loc": "onehot(c, 2) @ mu", "scale": 1.0, "observed": "x"}}, None, "exact"),
    # a continuous latent under the automatic guide: a bound
    ({"z": {"dist": "Normal", "loc": 0.0, "scale": 1.0, "shape": [2]},
      "x": {"dist": "Normal", "loc": "z", "scale": 1.0, "observed": "x"}}, None, "bound"),
])
def test_a_programs_loss_is_exact_only_when_nothing_is_sampled(model: dict[str, Any], guide: Any, kind: str) -> None:
    spec = {"family": "program", "name": "p", "data": PROGRAM_DATA, "model": model,
            "params": {"mu": {"shape": [2, 2], "init": 0.0}}}
    if guide is not None:
        spec["guide"] = guide
    assert loss_kind(load_recipe({"routine": "svi"}), load_spec(spec)).kind == LOSS_KINDS[kind]
