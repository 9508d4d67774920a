"""``ppgen compare``: one table and one figure across fitted runs.

The table takes each run's spec, its last epoch record and its ``evaluation.json`` (run
``ppgen evaluate`` first for likelihoods and sample-quality numbers; a run without one shows dashes).
The figure puts a grid of samples from every run side by side above their training curves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from ppgen.runs.folder import Run, open_run

#: Evaluation keys shown in the table, in this order, where a run has them.
KEYS = ("test_nll_nats", "test_nll_stderr", "bits_per_dim", "elbo", "fid_classifier", "kid_classifier",
        "precision", "recall", "class_entropy")


def table(runs: Sequence[Run]) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        epochs = [m for m in run.metrics if m.get("kind") == "epoch"]
        last = epochs[-1] if epochs else {}
        row: dict[str, Any] = {
            "run": str(run.path),
            "family": run.spec.family,
            "epochs": last.get("epoch"),
            "train_loss": last.get("loss"),
            "val_loss": last.get("val_loss"),
        }
        ev = run.evaluation or {}
        row.update({k: ev.get(k) for k in KEYS if k in ev})
        row.update({k: ev.get(k) for k in HOW if k in ev})
        row["data"] = _data_label(run)
        rows.append(row)
    return rows


#: What says how an evaluation's numbers were made: test examples, importance samples, how log Z was had.
HOW = ("n_test", "k", "log_z_method", "quality_samples")


def _data_label(run: Run) -> str:
    data = run.spec.data
    parts = [data.name] + [f"{k}={v}" for k, v in (("distribution", getattr(data, "distribution", None)),
                                                 ("binarize", getattr(data, "binarize", None))) if v]
    return " ".join(str(p) for p in parts)


def incomparable(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Why numbers in one column of the table do not measure the same thing: test NLLs over other data
    or other numbers of test examples, or sample-quality metrics from other sample counts."""
    notes = []
    nll = [r for r in rows if r.get("test_nll_nats") is not None]
    if len({r["data"] for r in nll}) > 1:
        notes.append("test_nll_nats: the runs were evaluated on different data ("
                     + "; ".join(sorted({r["data"] for r in nll})) + "); their likelihoods are not comparable")
    if len({r.get("n_test") for r in nll}) > 1:
        notes.append("test_nll_nats: evaluated on different numbers of test examples (n_test "
                     + ", ".join(str(r.get("n_test")) for r in nll) + "); evaluate them with the same --limit")
    fid = [r for r in rows if r.get("fid_classifier") is not None]
    if len({r.get("quality_samples") for r in fid}) > 1:
        notes.append("fid_classifier, kid_classifier, precision, recall: from different sample counts "
                     "(quality_samples " + ", ".join(str(r.get("quality_samples")) for r in fid)
                     + "); evaluate them with the same --quality-samples")
    return notes


def compare(paths: Sequence[str | Path], output: str | Path = "compare.png", n: int = 36,
            seed: int = 0) -> tuple[list[dict[str, Any]], Path]:
    """The comparison table (one dict per run) and the path of the figure written to ``output``."""
    from ppgen.plots.common import draw_samples, figure, save_figure

    runs = [open_run(p) for p in paths]
    rows = table(runs)
    cols = len(runs)
    fig = figure(figsize=(3.4 * cols, 6.4))
    grid = fig.add_gridspec(2, cols, height_ratios=[3, 2])
    curve_ax = fig.add_subplot(grid[1, :])
    for i, run in enumerate(runs):
        ax = fig.add_subplot(grid[0, i])
        label = f"{run.spec.name or run.spec.family} ({run.path.name})"
        with torch.no_grad():
            x = run.samples(n, seed=seed, display=True).cpu()
        ref = None if x.dim() == 4 else run.data.split("test")[0]
        draw_samples(ax, x, label, reference=ref)
        epochs = [m for m in run.metrics if m.get("kind") == "epoch"]
        if epochs:
            curve_ax.plot([m["epoch"] for m in epochs], [m["loss"] for m in epochs], "o-", ms=3, label=label)
    curve_ax.set_xlabel("epoch")
    curve_ax.set_ylabel("training loss")
    curve_ax.grid(alpha=0.3)
    if curve_ax.lines:
        curve_ax.legend(fontsize=7)
    fig.tight_layout()
    return rows, save_figure(fig, output)
