"""ppgen.training.metrics_log: metrics.jsonl written a record a line (non-finite numbers as null), cut
back to a checkpoint on resume, and the progress bar."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ppgen.spec import SpecError
from ppgen.store.records import read_metrics
from ppgen.training.metrics_log import MetricsLog, truncate_metrics


def test_records_round_trip_a_line_each_and_are_on_disk_before_the_log_closes(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    records = [{"kind": "train", "epoch": 1, "step": 1, "loss": 2.5},
               {"kind": "epoch", "epoch": 1, "step": 2, "loss": 2.25, "note": "é"}]
    with MetricsLog(path, enabled=True) as log:
        log.write(records[0])
        assert read_metrics(path) == records[:1]  # flushed: a reader sees it while training goes on
        log.write(records[1])
        assert log._f is not None
    assert log._f.closed
    assert read_metrics(path) == records
    assert path.read_text(encoding="utf-8").count("\n") == 2


def test_numbers_that_are_not_finite_are_written_as_null(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    with MetricsLog(path, enabled=True) as log:
        log.write({"kind": "train", "step": 1, "loss": math.nan, "a": math.inf, "b": -math.inf, "c": 1e308, "d": 0})
    line = path.read_text()
    assert "NaN" not in line and "Infinity" not in line
    assert json.loads(line) == {"kind": "train", "step": 1, "loss": None, "a": None, "b": None, "c": 1e308, "d": 0}


def test_a_log_appends_to_what_a_run_wrote_before(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"kind": "train", "step": 1, "loss": 1.0}) + "\n")
    with MetricsLog(path, enabled=True) as log:
        log.write({"kind": "train", "step": 2, "loss": 0.5})
    assert [m["step"] for m in read_metrics(path)] == [1, 2]


def test_a_disabled_log_writes_nothing_and_makes_no_file(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    with MetricsLog(path, enabled=False) as log:
        log.write({"kind": "train", "step": 1, "loss": 1.0})
    assert not path.exists()


def test_a_link_in_place_of_the_log_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere.jsonl").write_text("")
    (tmp_path / "metrics.jsonl").symlink_to(tmp_path / "elsewhere.jsonl")
    with pytest.raises(SpecError, match="metrics.jsonl: cannot be opened for appending"):
        MetricsLog(tmp_path / "metrics.jsonl", enabled=True)


def _lines(*records: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def test_truncation_keeps_what_the_checkpoint_had_seen(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text(_lines(
        {"kind": "train", "epoch": 1, "step": 2, "loss": 1.0},
        {"kind": "epoch", "epoch": 1, "step": 4, "loss": 0.9},
        {"kind": "resumed", "epoch": 1, "step": 4},
        {"kind": "train", "epoch": 2, "step": 6, "loss": 0.8},   # after the checkpoint at step 5: dropped
        {"kind": "epoch", "epoch": 2, "step": 5, "loss": 0.7},   # an epoch past the checkpoint's: dropped
        {"kind": "note"},                                        # no step: kept
        {"kind": "train", "epoch": 2, "step": 5, "loss": None},  # at the checkpoint: kept
    ))
    truncate_metrics(path, step=5, epoch=1)
    kept = read_metrics(path)
    assert [(m["kind"], m.get("step")) for m in kept] == [("train", 2), ("epoch", 4), ("resumed", 4), ("note", None),
                                                           ("train", 5)]
    assert kept[-1]["loss"] is None


def test_truncation_drops_a_last_line_cut_short_and_leaves_a_clean_file(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text(_lines({"kind": "train", "step": 1, "loss": 1.0}) + '{"kind": "train", "st')
    assert read_metrics(path) == [{"kind": "train", "step": 1, "loss": 1.0}]
    truncate_metrics(path, step=10, epoch=10)
    assert path.read_text() == _lines({"kind": "train", "step": 1, "loss": 1.0})
    with MetricsLog(path, enabled=True) as log:  # the next record starts on a line of its own
        log.write({"kind": "train", "step": 2, "loss": 0.5})
    assert [m["step"] for m in read_metrics(path)] == [1, 2]


def test_truncation_refuses_a_bad_line_in_the_middle(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    text = _lines({"kind": "train", "step": 1}) + "not json\n" + _lines({"kind": "train", "step": 2})
    path.write_text(text)
    with pytest.raises(SpecError, match="metrics.jsonl: line 2 is not a JSON record"):
        truncate_metrics(path, step=10, epoch=10)
    assert path.read_text() == text  # left as it was
