"""The training losses in ``ppgen compare``'s figure and the curves' labels: one panel per kind of number
(an exact negative log-likelihood, a bound, a MAP objective, a discriminator's loss, ...), each labelled
with what it shows, from what the family and the routine declare."""

from __future__ import annotations

import re
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
    for ax in curves:  # whole epochs on the axis, also for a run of one epoch (not 0.95 ... 1.05)
        lo, hi = ax.get_xlim()
        assert hi - lo >= 2 and all(float(t).is_integer() for t in ax.get_xticks()), (ax.get_xlim(), ax.get_xticks())


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


# ------------------------------------------------------------------ the table says what each loss is


GAN = {"family": "gan", "latent": {"dim": 2}, "generator": {"hidden": [8]}, "discriminator": {"hidden": [8]},
       "data": {**DIGITS, "binarize": "none"}}


def test_the_table_names_each_loss_and_marks_losses_of_other_kinds(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    """A GAN's discriminator loss (binary cross-entropy) beside a VAE's minus-ELBO (nats per example): each
    row names its kind and unit, both numbers are marked in the table with the reason printed under it,
    and the JSON rows carry the same as fields."""
    import json

    from ppgen.cli import main

    gan, vae = _fit(GAN, tmp_path / "gan"), _fit(VAE, tmp_path / "vae")
    rows, _ = compare_module.compare([gan.path, vae.path], tmp_path / "c.png")
    assert [(r["loss_kind"], r["loss_label"]) for r in rows] == [
        ("adversarial", "discriminator loss (nats, binary cross-entropy)"),
        ("bound", "minus the ELBO (nats per example)")]
    for r in rows:
        assert set(r["not_comparable"]) == {"train_loss", "val_loss"}
        assert any("losses are of different kinds" in why for why in r["not_comparable"]["train_loss"])
    assert main(["compare", str(gan.path), str(vae.path), "-o", str(tmp_path / "c.png")]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    header = lines[0].split()
    assert {"train_loss", "val_loss", "loss_kind", "loss_label"} <= set(header)
    gan_line, vae_line = lines[1], lines[2]
    assert gan_line.startswith(str(gan.path)) and vae_line.startswith(str(vae.path))
    assert "adversarial" in gan_line and "binary cross-entropy" in gan_line
    assert "bound" in vae_line and "minus the ELBO (nats per example)" in vae_line
    for line, run in ((gan_line, gan), (vae_line, vae)):
        loss = [m for m in run.metrics if m.get("kind") == "epoch"][-1]["loss"]
        assert f"{loss:.4g} [1]" in line  # the number and its mark
    notes = lines[lines.index("not comparable:") + 1:]
    assert notes[0].startswith("[1] train_loss, val_loss: the runs' losses are of different kinds (adversarial: "
                               "discriminator loss (nats, binary cross-entropy); bound: minus the ELBO")
    assert err == ""
    assert main(["compare", str(gan.path), str(vae.path), "-o", str(tmp_path / "c.png"), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == json.loads(json.dumps(rows))
    assert "not comparable: train_loss, val_loss: the runs' losses are of different kinds" in err


def test_only_numbers_that_another_of_their_column_cannot_stand_beside_are_marked() -> None:
    from ppgen.cli.output import table_lines

    def row(kind: str, loss: float, nll: float | None = None, n_test: int | None = None, **extra: Any) -> dict:
        r = {"run": kind, "train_loss": loss, "loss_kind": kind, "loss_label": f"{kind} (nats per example)",
             "data": "digits"}
        if nll is not None:
            r.update(test_nll_nats=nll, n_test=n_test, estimator="exact")
        return {**r, **extra}

    # one kind, one test set: nothing marked
    rows = compare_module.mark([row("exact", 1.0, 2.0, 10), row("exact", 1.5, 2.5, 10)])
    assert [r["not_comparable"] for r in rows] == [{}, {}]
    assert not any("[1]" in line for line in table_lines(rows))
    # a bound's ELBO column has a number in one row only: nothing to set it beside, so it is not marked,
    # while its test NLL over 20 examples is, beside another over 10
    rows = compare_module.mark([row("exact", 1.0, 2.0, 10), row("exact", 1.5, 2.5, 20, elbo=-3.0)])
    assert [set(r["not_comparable"]) for r in rows] == [{"test_nll_nats"}, {"test_nll_nats"}]
    (why,) = rows[0]["not_comparable"]["test_nll_nats"]
    assert "different numbers of test examples (n_test 10, 20)" in why
    lines = table_lines(rows)
    cells = [dict(zip(lines[0].split(), re.split(r"\s{2,}", line))) for line in lines[1:3]]
    assert [c["test_nll_nats"] for c in cells] == ["2 [1]", "2.5 [1]"]
    assert [c["elbo"] for c in cells] == ["-", "-3"] and [c["train_loss"] for c in cells] == ["1", "1.5"]
    assert lines[3:] == ["not comparable:", f"[1] test_nll_nats: {why}"]
    # three kinds: every loss marked, the note names each kind with its label
    rows = compare_module.mark([row("exact", 1.0), row("bound", 2.0), row("adversarial", 0.7)])
    assert all(set(r["not_comparable"]) == {"train_loss"} for r in rows)
    assert "adversarial: adversarial (nats per example); bound: bound (nats per example); exact:" in str(
        compare_module.findings(rows)[0])


def test_a_net_trained_layer_by_layer_shows_its_top_layers_own_loss_as_such() -> None:
    """A DBN's last epoch records the loss of the layer then trained (its reconstruction error on the
    probabilities of the layer below, the layer a float as metrics.jsonl gives it back), not the model's
    pseudo-log-likelihood: named so, and marked beside an RBM's."""
    from types import SimpleNamespace

    data = {"name": "digits", "limit": 40, "batch_size": 20}

    def run(name: str, spec: dict[str, Any], recipe: dict[str, Any], epochs: list[dict[str, Any]]) -> Any:
        return SimpleNamespace(path=Path(name), spec=load_spec({**spec, "data": data}), recipe=load_recipe(recipe),
                               metrics=[{"kind": "epoch", **e} for e in epochs], evaluation=None)

    dbn = run("dbn", {"family": "dbn", "hidden": [5, 4]}, {"routine": "layerwise", "layer_epochs": 1},
              [{"epoch": 1, "loss": 30.0, "layer": 0.0}, {"epoch": 2, "loss": 0.01, "layer": 1.0}])
    rbm = run("rbm", {"family": "rbm", "hidden": 5}, {"routine": "cd"}, [{"epoch": 1, "loss": 31.0}])
    rows = compare_module.table([dbn, rbm])
    assert (rows[0]["loss_kind"], rows[0]["loss_label"]) == (
        "reconstruction", "squared reconstruction error per example, of layer 2 alone")
    assert (rows[1]["loss_kind"], rows[1]["loss_label"]) == ("pseudo", "minus pseudo-log-likelihood (nats per example)")
    assert all("train_loss" in r["not_comparable"] for r in rows)
    dbn.metrics = dbn.metrics[:1]  # still in the bottom layer: its pseudo-log-likelihood, of that layer alone
    rows = compare_module.table([dbn, rbm])
    assert rows[0]["loss_label"] == "minus pseudo-log-likelihood (nats per example), of layer 1 alone"
    assert all("train_loss" in r["not_comparable"] for r in rows)


# ------------------------------------------------------------------ the data a run saw


def test_runs_trained_on_different_data_limits_are_marked(tmp_path: Path) -> None:
    """Two VAEs alike but for data.limit (their training sets 40 and 60 digits) show different data and their
    losses are marked; the same data written with the source's defaults spelled out, or not, is one data."""
    small = _fit(VAE, tmp_path / "small")
    large = _fit({**VAE, "data": {**DIGITS, "limit": 60}}, tmp_path / "large")
    rows = compare_module.table([ppgen.open_run(small.path), ppgen.open_run(large.path)])
    assert [r["data"] for r in rows] == ["digits binarize=static limit=40", "digits binarize=static limit=60"]
    for r in rows:
        assert set(r["not_comparable"]) == {"train_loss", "val_loss"}
        (why,) = r["not_comparable"]["train_loss"]
        assert why.startswith("the runs were trained on different data (digits binarize=static limit=40; "
                              "digits binarize=static limit=60)")


@pytest.mark.parametrize("a, b, same", [
    ({"name": "digits"}, {"name": "digits", "binarize": "dynamic", "val_fraction": 0.1}, True),
    ({"name": "digits"}, {"name": "digits", "batch_size": 7}, True),
    ({"name": "digits"}, {"name": "digits", "binarize": "none"}, False),
    ({"name": "mnist", "limit": 2000}, {"name": "mnist", "limit": 16000}, False),
    ({"name": "digits"}, {"name": "digits", "test_fraction": 0.2}, False),
    ({"name": "mnist", "labels": 100}, {"name": "mnist", "labels": 100, "labels_seed": 1}, False),
    ({"name": "mnist"}, {"name": "mnist", "labels_seed": 1}, True),
    ({"name": "mnist", "labels": 100}, {"name": "mnist", "labels": 100, "labelled_only": True}, False),
    ({"name": "toyseq", "distribution": "casino"}, {"name": "toyseq", "distribution": "casino", "test_fraction": 0.2},
     True),
    ({"name": "toy2d", "distribution": "moons", "n": 200}, {"name": "toy2d", "distribution": "moons", "n": 300}, False),
    ({"name": "npz", "path": "a.npz"}, {"name": "npz", "path": "b.npz"}, False),
    ({"name": "images", "path": "f"}, {"name": "images", "path": "f", "image_size": 16}, False),
])
def test_the_data_label_changes_with_every_key_that_changes_the_examples(a: dict[str, Any], b: dict[str, Any],
                                                                          same: bool) -> None:
    from ppgen.spec import DataSpec

    label_a, label_b = compare_module.data_label(DataSpec(**a)), compare_module.data_label(DataSpec(**b))
    assert (label_a == label_b) is same, (label_a, label_b)
    assert label_a.split()[0] == a["name"]


def test_the_data_label_names_each_key_with_its_value() -> None:
    from ppgen.spec import DataSpec

    assert compare_module.data_label(DataSpec(name="mnist", limit=2000)) == "mnist binarize=dynamic limit=2000"
    assert compare_module.data_label(DataSpec(name="toymix", distribution="blobs3", n=200)) == (
        "toymix distribution=blobs3 n=200")
    assert compare_module.data_label(DataSpec(name="toyseq", distribution="casino")) == "toyseq distribution=casino"
    assert compare_module.data_label(DataSpec(name="mnist", labels=100, labels_seed=3)) == (
        "mnist binarize=dynamic labels=100 labels_seed=3")
