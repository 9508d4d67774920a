"""``ppgen compare``: one table and one figure across fitted runs.

The table takes each run's spec, its last epoch record and its ``evaluation.json`` (run
``ppgen evaluate`` first for likelihoods and sample-quality numbers; a run without one shows dashes).
The figure puts draws from every run in a grid above their training losses, one panel per kind of loss.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from ppgen.store.folder import Run, open_run

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
        if ev.get("test_nll_nats") is not None:
            row["estimator"] = estimator(ev)
        row["data"] = _data_label(run)
        rows.append(row)
    return rows


#: What says how an evaluation's numbers were made: test examples, importance samples, how log Z was had.
HOW = ("n_test", "k", "log_z_method", "quality_samples")


def estimator(ev: dict[str, Any]) -> str:
    """How an evaluation's test NLL was had: the family's own words where it gives them (a Bayesian
    family's plug-in density at a point estimate or posterior predictive density), else log Z by AIS or
    enumeration, importance sampling with k samples, or an exact likelihood."""
    if ev.get("likelihood"):
        return str(ev["likelihood"])
    if ev.get("log_z_method"):
        return f"free energy + log Z ({ev['log_z_method']})"
    if ev.get("k") is not None:
        return f"importance sampling, k={ev['k']}"
    return "exact"


def _data_label(run: Run) -> str:
    data = run.spec.data
    parts = [data.name] + [f"{k}={v}" for k, v in (("distribution", getattr(data, "distribution", None)),
                                                 ("n", getattr(data, "n", None)),
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
    made = {r.get("estimator") for r in nll}
    if len(made) > 1:
        notes.append("test_nll_nats: made by different estimators (" + "; ".join(sorted(str(m) for m in made))
                     + "): a plug-in density leaves out the parameters' uncertainty, an importance-sampling or AIS "
                       "estimate carries its own error")
    fid = [r for r in rows if r.get("fid_classifier") is not None]
    if len({r.get("quality_samples") for r in fid}) > 1:
        notes.append("fid_classifier, kid_classifier, precision, recall: from different sample counts "
                     "(quality_samples " + ", ".join(str(r.get("quality_samples")) for r in fid)
                     + "); evaluate them with the same --quality-samples")
    return notes


def compare(paths: Sequence[str | Path], output: str | Path = "compare.png", n: int = 16,
            seed: int = 0, max_cols: int = 4) -> tuple[list[dict[str, Any]], Path]:
    """The comparison table (one dict per run) and the path of the figure written to ``output``: ``n``
    draws from each run (draws, not pixel means, so that binary data look alike across families) in rows
    of at most ``max_cols`` panels, above the training losses by epoch (:func:`loss_panels`)."""
    from ppgen.plots.common import draw_samples, figure, save_figure

    runs = [open_run(p) for p in paths]
    rows = table(runs)
    cols = min(len(runs), max_cols)
    sample_rows = -(-len(runs) // cols)
    panels = loss_panels(runs)
    curve_cols = max(1, min(len(panels), max_cols))
    curve_rows = -(-len(panels) // curve_cols) if panels else 0
    fig = figure(figsize=(3.0 * cols + 0.4, 2.7 * sample_rows + 2.7 * curve_rows), layout="constrained")
    grid = fig.add_gridspec(sample_rows + curve_rows, cols * curve_cols,
                            height_ratios=[2.7] * sample_rows + [2.7] * curve_rows)
    for i, run in enumerate(runs):
        r, c = divmod(i, cols)
        ax = fig.add_subplot(grid[r, c * curve_cols : (c + 1) * curve_cols])
        with torch.no_grad():
            x = run.samples(n, seed=seed).cpu()
        ref = None if x.dim() == 4 else run.data.split("test")[0]
        draw_samples(ax, x, f"{_label(run)}: {n} draws" if x.dim() == 4 else _label(run), reference=ref)
    for k, ((kind, label), curves) in enumerate(panels.items()):
        r, c = divmod(k, curve_cols)
        ax = fig.add_subplot(grid[sample_rows + r, c * cols : (c + 1) * cols])
        for name, epochs in curves:
            ax.plot([m["epoch"] for m in epochs], [m["loss"] for m in epochs], "o-", ms=3, label=name)
        ax.set_title(kind, fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label if len(label) <= 34 or " (" not in label else label.replace(" (", "\n(", 1), fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return rows, save_figure(fig, output)


def _label(run: Run) -> str:
    return f"{run.spec.name or run.spec.family} ({run.path.name})"


def loss_panels(runs: Sequence[Run]) -> dict[tuple[str, str], list[tuple[str, list[dict[str, Any]]]]]:
    """The runs' training losses by epoch, one panel per kind of number and label
    (:func:`ppgen.plots.metric_labels.loss_kind`: an exact negative log-likelihood, minus the ELBO or another
    bound, a MAP objective, a discriminator's loss, minus a pseudo-log-likelihood, ...): the losses of
    different routines and families measure different things, so that no two kinds share an axis or a
    label. (kind, label) -> [(run label, epoch records)], in the runs' order."""
    from ppgen.plots.metric_labels import loss_kind

    panels: dict[tuple[str, str], list[tuple[str, list[dict[str, Any]]]]] = {}
    for run in runs:
        epochs = [m for m in run.metrics if m.get("kind") == "epoch" and "loss" in m]
        if epochs:
            panels.setdefault(tuple(loss_kind(run.recipe, run.spec)), []).append((_label(run), epochs))
    return panels
