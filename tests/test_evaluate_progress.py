"""ppgen.progress and ``ppgen evaluate``'s time estimates and progress: each long phase is timed on its first
chunk and its length said before it goes on; progress is a bar on a terminal and plain lines elsewhere."""

from __future__ import annotations

import io
from typing import Any

import pytest

import ppgen
from ppgen import progress
from ppgen.cli import main
from ppgen.evaluation.evaluate import evaluate

from fake_io import Clock, Terminal


def _run(stream: io.StringIO, *, show: bool, batches: int = 100, seconds: float = 5.6, per: int = 100) -> str:
    now = [0.0]
    with progress.phase("test log-likelihood", batches * per, "test examples", show=show, prefix="ppgen evaluate: ",
                        stream=stream, clock=lambda: now[0]) as bar:
        for _ in range(batches):
            now[0] += seconds
            bar.advance(per)
    return stream.getvalue()


def test_a_long_phase_says_its_length_after_the_first_chunk_and_then_plain_lines_off_a_terminal() -> None:
    out = _run(io.StringIO(), show=True)
    lines = out.splitlines()
    assert lines[0] == "ppgen evaluate: test log-likelihood: about 9.3 min (5.6 s for the first 100 of 10,000 test examples)"
    assert lines[-1] == "ppgen evaluate: test log-likelihood: done in 9.3 min"
    middle = lines[1:-1]
    # A line at most every 10 s and at least every 30 s or 10% of the work: here every 6 batches (33.6 s).
    assert len(middle) == 16
    assert middle[0] == ("ppgen evaluate: test log-likelihood: 600 of 10,000 test examples (6%), 34 s so far, "
                         "about 8.8 min left")
    assert "\r" not in out


def test_lines_come_every_tenth_of_the_work_but_never_more_than_every_10_seconds() -> None:
    out = _run(io.StringIO(), show=True, batches=20, seconds=4.0).splitlines()  # 80 s in all, 4 s per 5%
    shares = [line.split("(")[1].split("%")[0] for line in out[1:-1]]
    assert shares == ["15", "30", "45", "60", "75", "90"]  # 12 s apart: the 10 s floor, not every 10%
    out = _run(io.StringIO(), show=True, batches=10, seconds=1.0)  # 10 s in all: announced, no progress lines
    assert out.splitlines() == ["ppgen evaluate: test log-likelihood: about 10 s (1 s for the first 100 of 1,000 test examples)",
                                "ppgen evaluate: test log-likelihood: done in 10 s"]


def test_a_short_phase_is_silent_and_no_progress_keeps_only_the_estimate() -> None:
    assert _run(io.StringIO(), show=True, batches=10, seconds=0.5) == ""
    out = _run(io.StringIO(), show=False)
    assert out.splitlines() == ["ppgen evaluate: test log-likelihood: about 9.3 min (5.6 s for the first 100 of 10,000 "
                                "test examples)", "ppgen evaluate: test log-likelihood: done in 9.3 min"]


def test_a_terminal_gets_the_bar() -> None:
    out = _run(Terminal(), show=True, batches=10, seconds=0.5)
    assert out.startswith("\rtest log-likelihood:   0%|") and "0/1000" in out
    assert "so far" not in out  # the bar, not the lines


def test_ticks_reach_the_innermost_phase_opened_without_a_total() -> None:
    stream = io.StringIO()
    progress.tick(1, 10)  # outside a phase: nothing
    with progress.phase("log Z by AIS", unit="temperatures", stream=stream, clock=Clock(2.0)) as outer:
        progress.tick(1, 100)
        with progress.phase("inner", 5, stream=stream, clock=Clock(1.0)) as inner:
            progress.tick(3, 100)  # hidden by a phase with a total of its own
        progress.tick(2, 100)
    assert (outer.total, outer.done, inner.done) == (100, 2, 0)
    assert stream.getvalue().splitlines()[0] == "log Z by AIS: about 3.3 min (2 s for the first 1 of 100 temperatures)"


@pytest.mark.parametrize("seconds, text", [(4.2, "4.2 s"), (42, "42 s"), (210, "3.5 min"), (7560, "2.1 h")])
def test_durations_in_words(seconds: float, text: str) -> None:
    assert progress.duration(seconds) == text


RBM_AIS = {"family": "rbm", "hidden": 24, "data": {"name": "digits", "limit": 60, "batch_size": 20},
           "ais": {"runs": 3, "steps": 15}}
VAE = {"family": "vae", "latent": {"dim": 2}, "encoder": {"hidden": [8]}, "decoder": {"hidden": [8]},
       "data": {"name": "digits", "limit": 60, "batch_size": 20}}


def test_evaluate_times_the_test_log_likelihood_and_ais_and_shows_progress_in_a_log(tmp_path, monkeypatch, capsys) -> None:
    """Through evaluate and the command line, with a clock that moves 3 s at every reading: the test
    log-likelihood (5 batches) and AIS (15 temperatures, 64 visible and 24 hidden units: not enumerated) each
    say their length after the first chunk; off a terminal, plain progress lines follow unless --no-progress."""
    vae = ppgen.fit(VAE, None, epochs=1, out=tmp_path / "vae", progress=False)
    rbm = ppgen.fit(RBM_AIS, None, epochs=1, out=tmp_path / "rbm", progress=False)
    capsys.readouterr()
    monkeypatch.setattr(progress, "monotonic", Clock(3.0))
    res = evaluate(vae, k=2, limit=10, batch_size=2, write=False)
    err = capsys.readouterr().err
    assert "ppgen evaluate: test log-likelihood: about 15 s (3 s for the first 2 of 10 test examples)" in err
    assert "so far" not in err  # progress=False: the estimate only
    assert res["n_test"] == 10

    assert main(["evaluate", str(rbm.path), "--json"]) == 0
    out, err = capsys.readouterr()
    assert "log_z_method" in out and "ppgen evaluate" not in out  # stdout is the JSON alone
    lines = [line for line in err.splitlines() if "log Z by AIS" in line]
    assert lines[0] == "ppgen evaluate: log Z by AIS: about 45 s (3 s for the first 1 of 15 temperatures)"
    assert any("temperatures (" in line and "so far" in line for line in lines)  # a plain progress line
    assert lines[-1].startswith("ppgen evaluate: log Z by AIS: done in ")
    assert main(["evaluate", str(rbm.path), "--json", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "about 45 s" in err and "so far" not in err
