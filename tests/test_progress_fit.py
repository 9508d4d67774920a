"""``ppgen fit``'s progress: an epoch is a :class:`ppgen.progress.Phase` of its steps, a bar on a terminal and,
elsewhere (a notebook cell, a CI log, a file), a plain line every 10 to 30 s within the epoch and a line at
its end; ``--no-progress`` keeps stderr quiet. The phase of a resumed epoch starts at the batches done."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from ppgen import progress
from ppgen.cli import main

from fake_io import Clock, Terminal


# 200 digits for training in batches of 10: 20 steps an epoch
SPEC = """\
family: vae
data: {name: digits, limit: 200, batch_size: 10}
latent: {dim: 2}
encoder: {hidden: [8]}
decoder: {hidden: [8]}
"""


def _fit(tmp_path: Path, *flags: str) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    assert main(["fit", str(spec), "--epochs", "2", "--out", str(tmp_path / "run"), "--no-figures", *flags]) == 0


def test_fit_off_a_terminal_writes_plain_progress_lines_and_an_epoch_line(tmp_path, monkeypatch, capsys) -> None:
    """A clock that moves 3 s at each reading: an epoch of 20 steps takes 60 s, so a line comes every 4
    steps (12 s, a fifth of the epoch) with the time left in the epoch's steps (validation follows them);
    the first epoch's steps' length is said after its first step."""
    monkeypatch.setattr(progress, "monotonic", Clock(3.0))
    _fit(tmp_path)
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert lines[0] == "epoch 1/2: about 1.0 min for the steps (3 s for the first 1 of 20 steps)"
    loss = lines[3].rsplit(", loss ", 1)[-1]
    assert float(loss) > 0  # the loss of step 10, the latest shown
    assert lines[1:5] == ["epoch 1/2: 4 of 20 steps (20%), 12 s so far, about 48 s left in the steps",
                          "epoch 1/2: 8 of 20 steps (40%), 24 s so far, about 36 s left in the steps",
                          f"epoch 1/2: 12 of 20 steps (60%), 36 s so far, about 24 s left in the steps, loss {loss}",
                          f"epoch 1/2: 16 of 20 steps (80%), 48 s so far, about 12 s left in the steps, loss {loss}"]
    assert lines[5].startswith("epoch 1: loss ") and lines[10].startswith("epoch 2: loss ")
    assert [line.split(":")[0] for line in lines[6:10]] == ["epoch 2/2"] * 4  # announced once only
    assert len(lines) == 11
    assert "\r" not in err and "so far" not in out  # no bar; stdout is the run's summary alone
    assert out.splitlines()[-1].startswith("epoch 2: minus the ELBO ")


def test_no_progress_keeps_stderr_quiet(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(progress, "monotonic", Clock(3.0))
    _fit(tmp_path, "--no-progress")
    out, err = capsys.readouterr()
    assert err == ""
    assert out.splitlines()[0] == f"run: {tmp_path / 'run'}" and "epoch 2: minus the ELBO" in out


def test_fit_on_a_terminal_draws_the_bar(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(progress, "monotonic", Clock(3.0))
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    _fit(tmp_path)
    err = terminal.getvalue()
    assert "\repoch 1/2:" in err and "10/20" in err and "loss=" in err  # drawn with the loss every 10 steps
    assert "so far" not in err  # the bar, not the lines
    assert "epoch 1: loss " in err and "epoch 2: loss " in err


def test_a_resumed_phase_starts_at_the_work_done_and_estimates_from_what_it_does() -> None:
    """Opened at 40 of 100 steps (a resumed epoch), 6 s a step: the estimate is of the 60 steps left, and
    the lines say where the epoch stands."""
    stream = io.StringIO()
    now = [0.0]
    with progress.phase("epoch 3/5", 100, "steps", show=True, stream=stream, clock=lambda: now[0], initial=40,
                        closing=False) as bar:
        for done in range(41, 101):
            now[0] += 6.0
            bar.postfix(loss=f"{done / 10:.3f}")
            bar.update(done)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "epoch 3/5: about 6.0 min (6 s for the first 1 of 60 steps)"
    # the first line after 30 s: a tenth of the epoch is not yet done since it was resumed
    assert lines[1] == "epoch 3/5: 45 of 100 steps (45%), 30 s so far, about 5.5 min left, loss 4.500"
    assert not lines[-1].startswith("epoch 3/5: done")  # closing=False: the loop writes its own epoch line
    stream = io.StringIO()
    with progress.phase("epoch 3/5", 100, "steps", show=True, stream=stream, clock=Clock(6.0), initial=40,
                        announce=False) as bar:
        bar.update(41)
    assert stream.getvalue() == ""  # neither announced nor, without a progress line, closed


def test_a_resumed_bar_starts_where_the_epoch_stands() -> None:
    terminal = Terminal()
    with progress.phase("epoch 2", 10, "steps", show=True, stream=terminal, clock=Clock(0.1), initial=4) as bar:
        assert (bar._bar.total, bar._bar.n) == (10, 4)
        bar.postfix(loss="1.000")
        bar.update(6)
        assert bar._bar.n == 6
    assert "epoch 2" in terminal.getvalue() and "loss=1.000" in terminal.getvalue()


@pytest.mark.parametrize("flag", [[], ["--no-progress"]])
def test_fit_passes_progress_on_by_default(flag, tmp_path, monkeypatch) -> None:
    import ppgen

    seen = {}

    def fit(*args, **kwargs):
        seen.update(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr(ppgen, "fit", fit)
    with pytest.raises(SystemExit):
        main(["fit", "vae", "--no-figures", *flag])
    assert seen["progress"] is (not flag)


# The validation pass after each epoch's steps: 180 validation digits in batches of 20 are 9 batches.


def _records(run: Path) -> list[dict]:
    import json

    timed = {"time_s", "train_time_s"}
    return [{k: v for k, v in json.loads(line).items() if k not in timed}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_slow_validation_is_a_phase_of_its_own_off_a_terminal(tmp_path, monkeypatch, capsys) -> None:
    """3 s a batch: the first epoch's validation is announced after its first batch and shows a line every
    4 batches (12 s) with the time left in it; the second epoch's shows its lines unannounced. The epoch
    line follows the validation."""
    from ppgen.inference.svi import SVI

    monkeypatch.setattr(SVI, "validation_batch", 20)
    monkeypatch.setattr(progress, "monotonic", Clock(3.0))
    _fit(tmp_path)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines[5:8] == ["epoch 1/2 validation: about 27 s (3 s for the first 1 of 9 batches)",
                          "epoch 1/2 validation: 4 of 9 batches (44%), 12 s so far, about 15 s left",
                          "epoch 1/2 validation: 8 of 9 batches (89%), 24 s so far, about 3 s left"]
    assert lines[4].startswith("epoch 1/2: 16 of 20 steps") and lines[8].startswith("epoch 1: loss ")
    assert ", val " in lines[8]
    assert [line for line in lines[9:] if "validation" in line] == [
        "epoch 1/2 validation: 4 of 9 batches (44%), 12 s so far, about 15 s left".replace("1/2", "2/2"),
        "epoch 1/2 validation: 8 of 9 batches (89%), 24 s so far, about 3 s left".replace("1/2", "2/2")]
    assert lines[-1].startswith("epoch 2: loss ") and len(lines) == 16


def test_a_slow_validation_is_silent_with_no_progress_and_computes_the_same(tmp_path, monkeypatch, capsys) -> None:
    """--no-progress: nothing on stderr; every record of metrics.jsonl (the validation losses included, to
    the bit) is the one of the same fit with progress shown."""
    from ppgen.inference.svi import SVI

    monkeypatch.setattr(SVI, "validation_batch", 20)
    monkeypatch.setattr(progress, "monotonic", Clock(3.0))
    (tmp_path / "quiet").mkdir(), (tmp_path / "shown").mkdir()
    _fit(tmp_path / "quiet", "--no-progress")
    assert capsys.readouterr().err == ""
    _fit(tmp_path / "shown")
    assert "epoch 2/2 validation: 8 of 9 batches" in capsys.readouterr().err
    quiet, shown = _records(tmp_path / "quiet" / "run"), _records(tmp_path / "shown" / "run")
    assert [r["val_loss"] for r in quiet if r["kind"] == "epoch"] == [r["val_loss"] for r in shown
                                                                       if r["kind"] == "epoch"]
    assert quiet == shown


def test_a_slow_validation_draws_its_own_bar_on_a_terminal(tmp_path, monkeypatch) -> None:
    from ppgen.inference.svi import SVI

    monkeypatch.setattr(SVI, "validation_batch", 20)
    monkeypatch.setattr(progress, "monotonic", Clock(3.0))
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    _fit(tmp_path)
    err = terminal.getvalue()
    assert "\repoch 1/2 validation:" in err and "| 0/9 [" in err and "\repoch 2/2 validation:" in err
    assert "so far" not in err  # bars, not lines
    assert err.index("epoch 1/2 validation") < err.index("epoch 1: loss ")


def test_validation_batches_report_to_the_phase_and_change_no_number() -> None:
    """The SVI routine's validation: the same numbers, to the bit, inside a phase and outside one, and the
    same as the sum over the slices of range(0, n, 500) that it always took; inside the phase each batch
    done is counted."""
    import torch

    from ppgen import registry
    from ppgen.inference.base import Plan
    from ppgen.registry import build, load_recipe, load_spec

    spec = load_spec({"family": "vae", "data": {"name": "digits", "limit": 200, "batch_size": 10},
                      "latent": {"dim": 2}, "encoder": {"hidden": [8]}, "decoder": {"hidden": [8]}})
    dataset = registry.load_data(spec)
    x, y = dataset.split("val")
    x = torch.cat([x] * 7)  # 1,260 examples: batches of 500, 500 and 260
    torch.manual_seed(0)
    model = build(spec, dataset.info)
    routine = registry.routine("svi")(load_recipe(None))
    state = routine.init(model, Plan.of(dataset, 10, 1))
    with torch.no_grad():  # the ELBO's draws: the same seed before each pass
        torch.manual_seed(1)
        plain = routine.validate(state, x, None)
        stream = io.StringIO()
        torch.manual_seed(1)
        with progress.phase("validation", None, "batches", show=True, stream=stream, clock=Clock(20.0)) as p:
            shown = routine.validate(state, x, None)
        torch.manual_seed(1)
        by_hand = sum(float(routine._loss(model, x[s : s + 500], None)) * x[s : s + 500].shape[0]
                      for s in range(0, x.shape[0], 500)) / x.shape[0]
    assert plain == shown == {"val_loss": by_hand}
    assert (p.done, p.total) == (3, 3)
    assert stream.getvalue().splitlines()[0] == "validation: about 1.0 min (20 s for the first 1 of 3 batches)"


def test_validation_batches_are_the_slices_in_order_and_tick_after_each() -> None:
    import torch

    from ppgen.inference.base import validation_batches

    x, y = torch.arange(7.0), torch.arange(7)
    stream = io.StringIO()
    seen = []
    with progress.phase("v", None, stream=stream) as p:
        for xb, yb in validation_batches(x, y, 3):
            seen.append((xb.tolist(), yb.tolist(), p.done))
    assert seen == [([0.0, 1.0, 2.0], [0, 1, 2], 0), ([3.0, 4.0, 5.0], [3, 4, 5], 1), ([6.0], [6], 2)]
    assert (p.done, p.total) == (3, 3)
    assert [xb.tolist() for xb, yb in validation_batches(x, None, 10) if yb is None] == [x.tolist()]


def test_the_adversarial_validation_reports_its_batches_and_changes_no_number() -> None:
    import torch

    from ppgen import registry
    from ppgen.inference.base import Plan
    from ppgen.registry import build, load_recipe, load_spec

    spec = load_spec({"family": "gan", "data": {"name": "digits", "limit": 200, "batch_size": 10, "binarize": "none"},
                      "latent": {"dim": 2}, "generator": {"hidden": [8]}, "discriminator": {"hidden": [8]}})
    dataset = registry.load_data(spec)
    x = torch.cat([dataset.split("val")[0]] * 7)  # 1,260 examples: batches of 1,000 and 260
    torch.manual_seed(0)
    model = build(spec, dataset.info)
    routine = registry.routine("adversarial")(load_recipe(None, default="adversarial"))
    state = routine.init(model, Plan.of(dataset, 10, 1))
    with torch.no_grad():
        torch.manual_seed(1)
        plain = routine.validate(state, x, None)
        torch.manual_seed(1)
        with progress.phase("validation", None, "batches", stream=io.StringIO()) as p:
            shown = routine.validate(state, x, None)
    assert plain == shown and set(plain) >= {"val_loss", "val_d_real", "val_d_fake"}
    assert (p.done, p.total) == (2, 2)
