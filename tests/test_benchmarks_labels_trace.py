"""benchmarks/labels.py trace: one epoch at a time, q(y | x)'s test accuracy after each, and a run folder that
exists is continued where it stopped (the M2 curves of benchmarks/results/labels.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ppgen
from ppgen.evaluation.classify import guide_log_probs

ROOT = Path(__file__).resolve().parent.parent
SET = ["data.name=digits", "data.limit=200", "data.labels=30", "data.labelled_batch=8", "data.batch_size=64",
       "networks.decoder.per=y", "networks.decoder.inputs=[z]", "model.z.shape=[4]",
       "networks.decoder.hidden=[16]", "networks.encoder.hidden=[16]", "networks.classifier.hidden=[16]"]


def _trace(out: Path, epochs: int) -> list[dict]:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "labels.py"), "trace", str(ROOT / "models" / "ssvae.yaml"),
           "--recipe", str(ROOT / "inference" / "ssvae.yaml"), "--out", str(out), "--epochs", str(epochs)]
    for s in SET:
        cmd += ["--set", s]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    return [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]


def test_trace_records_each_epoch_and_continues_a_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = _trace(out, 1)
    assert [r["epoch"] for r in first] == [1]
    more = _trace(out, 2)
    assert [r["epoch"] for r in more] == [2]  # epoch 1 was not fitted again
    run = ppgen.open_run(out)
    assert sum(1 for m in run.metrics if m.get("kind") == "epoch") == 2
    x, y = run.data.split("test")
    with torch.no_grad():
        acc = float((guide_log_probs(run.model, x).argmax(1) == y).double().mean())
    assert more[0]["guide_accuracy"] == pytest.approx(acc)
    assert run.model.nets["decoder"].per is not None  # the overrides reached the spec
