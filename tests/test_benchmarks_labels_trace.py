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


def _write(path: Path, record: dict) -> None:
    path.write_text(json.dumps(record))


def test_curve_keeps_the_designs_apart_and_each_seeds_longest_fit(tmp_path: Path) -> None:
    """`curve` reads every kind of record into its own series: a CVAE per class apart from the shared one,
    M2 per class apart from the paper's, and of one seed's M2 fits only the longest."""
    d = tmp_path / "records"
    d.mkdir()
    _write(d / "cvae-100-0.json", {"labels": "100", "seed": 0, "epochs": 500, "evaluation": {"bayes_accuracy": 0.7}})
    _write(d / "cvae-100-1.json", {"labels": "100", "seed": 1, "epochs": 500, "evaluation": {"bayes_accuracy": 0.5}})
    _write(d / "cvae-all-0-accuracy.json", {"epochs_done": 30, "bayes_accuracy": 0.98})
    _write(d / "cvae_shared-all-0-accuracy.json", {"epochs_done": 40, "bayes_accuracy": 0.95})
    _write(d / "cvae_2layer-all-0-accuracy.json", {"epochs_done": 30, "bayes_accuracy": 0.10})  # a variant: not drawn
    _write(d / "mlp-1000-0.json", {"job": "mlp", "labels": "1000", "seed": 0, "evaluation": {"accuracy": 0.9}})
    _write(d / "m2-100-0-30epochs.json", {"seed": 0, "guide_accuracy_by_epoch": {"10": 0.6, "30": 0.8}})
    _write(d / "m2-100-0-80epochs.json", {"seed": 0, "guide_accuracy_by_epoch": {"80": 0.82, "70": 0.81}})
    (d / "m2-per-class-z10-100-3.jsonl").write_text(
        "\n".join(json.dumps({"epoch": e, "guide_accuracy": a}) for e, a in ((1, 0.8), (2, 0.9))) + "\n")
    png = tmp_path / "curve.png"
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "labels.py"), "curve", str(d), "-o", str(png)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = dict(line.split(" {", 1) for line in res.stdout.splitlines() if " {" in line)
    assert lines["CVAE by Bayes' rule, a decoder and encoder per class"] == "100: [70.0, 50.0], 50000: [98.0]}"
    assert lines["CVAE by Bayes' rule, one decoder reading [z, y]"] == "50000: [95.0]}"
    assert lines["MLP 784-500-10 (discriminative)"] == "1000: [90.0]}"
    assert lines["M2 q(y | x), a decoder per class, z = 10, epochs 2"] == "100: [90.0]}"
    assert lines["M2 q(y | x), one decoder reading [z, y] (the paper's), epochs 80"] == "100: [82.0]}"
    assert len(lines) == 5 and png.stat().st_size > 0
