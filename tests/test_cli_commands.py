"""The commands on a run as functions: how ``fit`` splits overrides between spec and recipe and reports
the last epoch, what ``evaluate`` passes on and prints, and the requests ``sample`` and ``compare`` refuse
before any work."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

import ppgen
import ppgen.evaluation.evaluate as evaluate_module
import ppgen.store.folder as folder_module
from ppgen.cli import commands
from ppgen.cli.parser import build_parser
from ppgen.spec import SpecError


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def _fake_run(tmp_path: Path, metrics: list[dict], epochs: int = 5) -> SimpleNamespace:
    return SimpleNamespace(path=tmp_path / "run", metrics=metrics, recipe=SimpleNamespace(epochs=epochs), spec=None)


def test_fit_splits_the_overrides_and_reports_the_last_epoch(tmp_path, monkeypatch, capsys):
    seen = {}
    metrics = [{"kind": "epoch", "epoch": 1, "loss": 2.0},
               {"kind": "train", "epoch": 2, "converged": True},
               {"kind": "epoch", "epoch": 2, "loss": 1.23456, "val_loss": 1.5}]

    def fit(spec, recipe, **kwargs):
        seen.update(kwargs, spec=spec, recipe=recipe)
        return _fake_run(tmp_path, metrics)

    monkeypatch.setattr(ppgen, "fit", fit)
    args = _args("fit", "vae", "-i", "svi", "--set", "latent.dim=2", "--set", "inference.optimizer.lr=0.1",
                 "--set", "data.limit=5", "--epochs", "5", "--seed", "3", "--no-figures", "--devices", "2")
    assert commands.cmd_fit(args) == 0
    assert seen["overrides"] == ["latent.dim=2", "data.limit=5"]
    assert seen["recipe_overrides"] == ["optimizer.lr=0.1"]
    assert (seen["spec"], seen["recipe"], seen["epochs"], seen["seed"], seen["devices"], seen["accelerator"]) == (
        "vae", "svi", 5, 3, 2, "auto")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"run: {tmp_path / 'run'}"
    assert out[1] == "epoch 2: training loss 1.2346, validation loss 1.5000"
    assert out[2].startswith("converged at epoch 2 of the 5 asked")


def test_fit_reports_each_layers_loss_for_a_layerwise_run(tmp_path, monkeypatch, capsys):
    metrics = [{"kind": "epoch", "epoch": 1, "loss": 5.0, "layer": 0}, {"kind": "epoch", "epoch": 2, "loss": 3.0, "layer": 1}]
    monkeypatch.setattr(ppgen, "fit", lambda *a, **k: _fake_run(tmp_path, metrics, epochs=2))
    assert commands.cmd_fit(_args("fit", "dbn", "--no-figures")) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[1].startswith("epoch 2: final losses by layer") and "converged" not in out
    assert lines[2:] == ["  layer 1 (bottom): training loss 5.0000 (epoch 1)", "  layer 2 (top): training loss 3.0000 (epoch 2)"]


def test_evaluate_passes_ais_options_only_when_given_and_prints_json_or_columns(monkeypatch, capsys):
    seen = {}

    def evaluate(run, **kwargs):
        seen.clear()
        seen.update(kwargs, run=run)
        return {"test_nll_nats": 80.123456, "n_test": 10}

    monkeypatch.setattr(evaluate_module, "evaluate", evaluate)
    assert commands.cmd_evaluate(_args("evaluate", "r", "--json", "--k", "5", "--no-quality")) == 0
    assert json.loads(capsys.readouterr().out) == {"test_nll_nats": 80.123456, "n_test": 10}
    assert "ais_runs" not in seen and "ais_steps" not in seen
    assert (seen["run"], seen["k"], seen["quality"], seen["progress"], seen["seed"]) == ("r", 5, False, True, 0)
    assert commands.cmd_evaluate(_args("evaluate", "r", "--ais-runs", "7")) == 0
    assert seen["ais_runs"] == 7 and "ais_steps" not in seen
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{'test_nll_nats':28s} 80.1235", f"{'n_test':28s} 10"]


@pytest.mark.parametrize("argv,pattern", [
    (["-n", "0"], "-n: must be at least 1, got 0"),
    (["-o", "s.gif"], r"-o s\.gif: expected a file ending in \.png, \.jpg, \.pdf, \.svg, \.npz"),
    (["-n", str(commands.MAX_PICTURE_SAMPLES + 1)], "a picture shows at most 10000 samples"),
])
def test_sample_refuses_before_opening_the_run(argv, pattern, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(folder_module, "open_run", lambda path: pytest.fail("opened the run"))
    with pytest.raises(SpecError, match=pattern):
        commands.cmd_sample(_args("sample", "r", *argv))


def test_sample_refuses_more_values_than_fit_in_memory(tmp_path, monkeypatch):
    run = SimpleNamespace(model=SimpleNamespace(info=SimpleNamespace(dim=784)), path=tmp_path)
    monkeypatch.setattr(folder_module, "open_run", lambda path: run)
    n = commands.MAX_SAMPLE_VALUES // 784 + 1
    with pytest.raises(SpecError, match=f"-n {n}: {n} samples of 784 numbers each would take .* ask for at most "
                                        f"{commands.MAX_SAMPLE_VALUES // 784}"):
        commands.cmd_sample(_args("sample", "r", "-n", str(n), "-o", str(tmp_path / "s.npz")))


def test_compare_refuses_too_many_runs_and_a_figure_of_another_kind(tmp_path):
    runs = [str(tmp_path / f"r{i}") for i in range(commands.MAX_COMPARE + 1)]
    with pytest.raises(SpecError, match=f"compare: {commands.MAX_COMPARE + 1} runs; .* at most {commands.MAX_COMPARE}"):
        commands.cmd_compare(_args("compare", *runs))
    with pytest.raises(SpecError, match=r"-o .*table\.csv: expected a file ending in \.png"):
        commands.cmd_compare(_args("compare", "a", "-o", str(tmp_path / "table.csv")))


def _zoo_run(tmp_path: Path, spec: str, recipe: str | None, metrics: list[dict]) -> SimpleNamespace:
    from ppgen import registry

    model_spec = registry.load_spec(spec)
    return SimpleNamespace(path=tmp_path / "run", metrics=metrics, spec=model_spec,
                           recipe=registry.load_recipe(recipe, default=registry.family(model_spec.family).default_routine))


@pytest.mark.parametrize("spec, recipe, line", [
    ("gan", None, "epoch 3: discriminator loss 1.2346 (nats, binary cross-entropy; not a likelihood), 1.5000 on the "
                  "validation data"),
    ("vae", "svi", "epoch 3: minus the ELBO 1.2346 nats per example, 1.5000 on the validation data"),
    ("vae", "iwae", "epoch 3: minus the IWAE bound 1.2346 nats per example, 1.5000 on the validation data"),
    ("pixelcnn", None, "epoch 3: NLL 1.2346 nats per example (exact), 1.5000 on the validation data"),
    ("gmm", None, "epoch 3: MAP objective 1.2346 nats per example (minus log posterior density), held-out NLL "
                  "1.5000 nats per example"),
])
def test_fit_names_the_last_epochs_loss_by_its_kind(spec, recipe, line, tmp_path, monkeypatch, capsys):
    """The loss is what the training curves say it is (ppgen.plots.metric_labels.loss_kind): a GAN's is its
    discriminator's, not a likelihood; an SVI fit's minus its bound; a family without latents its exact NLL."""
    metrics = [{"kind": "epoch", "epoch": 3, "loss": 1.23456, "val_loss": 1.5}]
    monkeypatch.setattr(ppgen, "fit", lambda *a, **k: _zoo_run(tmp_path, spec, recipe, metrics))
    assert commands.cmd_fit(_args("fit", spec, "--no-figures")) == 0
    assert capsys.readouterr().out.splitlines()[1] == line


def test_a_deep_belief_nets_layers_are_named_by_their_own_objective(tmp_path, monkeypatch, capsys):
    """The bottom RBM of a DBN sees binary data (minus a pseudo-log-likelihood); the layers above see the
    probabilities below them, scored by their reconstruction error."""
    metrics = [{"kind": "epoch", "epoch": 1, "loss": 5.0, "layer": 0}, {"kind": "epoch", "epoch": 2, "loss": 0.25, "layer": 1}]
    monkeypatch.setattr(ppgen, "fit", lambda *a, **k: _zoo_run(tmp_path, "dbn", None, metrics))
    assert commands.cmd_fit(_args("fit", "dbn", "--no-figures")) == 0
    assert capsys.readouterr().out.splitlines()[2:] == [
        "  layer 1 (bottom): minus pseudo-log-likelihood 5.0000 nats per example (epoch 1)",
        "  layer 2 (top): squared reconstruction error 0.2500 per example (epoch 2)"]


def test_naming_the_loss_draws_in_no_plotting_library():
    import subprocess
    import sys

    code = ("import sys; from ppgen.cli.output import final_losses; from ppgen import registry; "
            "print(final_losses({'loss': 2.0}, registry.load_recipe('svi'), registry.load_spec('vae'))); "
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True,
                         cwd=Path(__file__).resolve().parent.parent).stdout
    assert out.splitlines() == ["minus the ELBO 2.0000 nats per example", "False"]
