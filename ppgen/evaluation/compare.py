"""``ppgen compare``: one table and one figure across fitted runs.

The table takes each run's spec, its last epoch record and its ``evaluation.json`` (run
``ppgen evaluate`` first for likelihoods and sample-quality numbers; a run without one shows dashes).
Each row names what its training loss is (``loss_kind``, ``loss_label`` with the unit: minus the ELBO in
nats, a discriminator's binary cross-entropy, ...), and each row says which of its numbers cannot be set
beside the others of their column, and why (``not_comparable``: losses of other kinds, likelihoods over
other test sets or by other estimators, sample-quality metrics from other sample counts).
The figure puts draws from every run in a grid above their training losses, one panel per kind of loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ppgen.store.folder import Run, open_run

#: Evaluation keys shown in the table, in this order, where a run has them.
KEYS = ("test_nll_nats", "test_nll_stderr", "bits_per_dim", "elbo", "fid_classifier", "kid_classifier",
        "precision", "recall", "class_entropy")


def table(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """One dict per run: its family, last epoch and training losses with what they are (``loss_kind``, a
    key of :data:`ppgen.plots.metric_labels.LOSS_KINDS`, and ``loss_label``, the loss with its unit), the
    evaluation's numbers (:data:`KEYS`) and how they were made (:data:`HOW`, ``estimator``), the data, and
    ``not_comparable``: column -> the reasons why that number of the row cannot be set beside the others
    of its column (:func:`findings`; empty where nothing is in doubt)."""
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
        row["loss_kind"], row["loss_label"] = _loss_of(run, last)
        ev = run.evaluation or {}
        row.update({k: ev.get(k) for k in KEYS if k in ev})
        row.update({k: ev.get(k) for k in HOW if k in ev})
        if ev.get("test_nll_nats") is not None:
            row["estimator"] = estimator(ev)
        row["data"] = data_label(run.spec.data)
        rows.append(row)
    return mark(rows)


def _loss_of(run: Run, last: dict[str, Any]) -> tuple[str, str]:
    """The kind (a key of ``LOSS_KINDS``) and label of the loss in ``last``, the run's last epoch record.
    A net trained one layer at a time records the loss of the layer being trained: its own objective on
    its own input (the reconstruction error of an upper layer that sees probabilities), not the model's."""
    from ppgen.plots.metric_labels import LOSS_KINDS, METRIC_LABELS, loss_kind, metric_labels

    found = loss_kind(run.recipe, run.spec)
    kind = next((key for key, text in LOSS_KINDS.items() if text == found.kind), found.kind)
    label = found.label
    layer = last.get("layer")
    if isinstance(layer, (int, float)) and not isinstance(layer, bool):  # a float in metrics.jsonl
        layer = int(layer)
        label = metric_labels(run.recipe, run.spec).get(f"loss@layer{layer}", label)
        if label == METRIC_LABELS["recon_error"]:
            kind = "reconstruction"
        label = f"{label}, of layer {layer + 1} alone"
    return kind, label


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


#: The data keys that do not change which examples a run was trained or evaluated on (only how they were
#: batched), left out of :func:`data_label`; ``labels_seed`` counts only where ``labels`` hides some labels.
NOT_DATA = ("name", "batch_size")


def data_label(data: Any) -> str:
    """What a run was trained and evaluated on, as the table's ``data`` column shows it: the source's name,
    then every key of the data spec that changes the examples or their labels (``path``, ``distribution``,
    ``n``, ``limit``, the split fractions, ``image_size``, the few-labels keys, ...) where it is not the
    source's default, and the binarization as it was applied. Two runs whose labels differ were trained on
    different data, so their losses and likelihoods are marked (:func:`findings`)."""
    from ppgen.data.sources import resolve_binarize
    from ppgen.spec import SEQUENCE_SOURCES, SEQUENCE_TEST_FRACTION

    fields = type(data).model_fields
    parts = [str(data.name)]
    for key, field in fields.items():
        value = getattr(data, key)
        if key in NOT_DATA or (key == "labels_seed" and data.labels is None):
            continue
        if key == "binarize":
            applied = resolve_binarize(data)
            if applied != "none" or resolve_binarize(data.model_copy(update={"binarize": None})) != "none":
                parts.append(f"binarize={applied}")
            continue
        default = SEQUENCE_TEST_FRACTION if key == "test_fraction" and data.name in SEQUENCE_SOURCES else field.default
        if value != default:
            parts.append(f"{key}={value}")
    return " ".join(parts)


@dataclass(frozen=True)
class Finding:
    """Numbers of the table that do not measure the same thing: ``cells``, the (row index, column) pairs
    concerned, ``columns``, their columns in the table's order, and ``reason``, why and what to do."""

    columns: tuple[str, ...]
    cells: tuple[tuple[int, str], ...]
    reason: str

    def __str__(self) -> str:
        return f"{', '.join(self.columns)}: {self.reason}"


#: The columns that bear on the test set and estimator of a likelihood (the ELBO is over the same test set).
NLL_COLUMNS = ("test_nll_nats", "bits_per_dim")
QUALITY_COLUMNS = ("fid_classifier", "kid_classifier", "precision", "recall")
LOSS_COLUMNS = ("train_loss", "val_loss")


def _differ(rows: Sequence[dict[str, Any]], columns: Sequence[str], group: Callable[[dict[str, Any]], Any],
            reason: Callable[[list[Any]], str]) -> list[Finding]:
    """A finding where the rows with a number in one of ``columns`` fall into more than one ``group``:
    every such number of those columns is marked; ``reason`` is given the groups of the rows of the first
    marked column, in the rows' order."""
    cells = []
    for column in columns:
        having = [i for i, r in enumerate(rows) if r.get(column) is not None]
        if len({group(rows[i]) for i in having}) > 1:
            cells += [(i, column) for i in having]
    if not cells:
        return []
    marked = [c for c in columns if any(c == column for _, column in cells)]
    groups = [group(rows[i]) for i, column in cells if column == marked[0]]
    return [Finding(tuple(marked), tuple(cells), reason(groups))]


def _sorted_set(groups: list[Any]) -> str:
    return "; ".join(sorted({str(g) for g in groups}))


def findings(rows: Sequence[dict[str, Any]]) -> list[Finding]:
    """Why numbers in one column of the table do not measure the same thing: training losses of other
    kinds (an exact NLL, a bound, a discriminator's loss, ...; by ``loss_kind`` and ``loss_label``) or on
    other data, test NLLs (and bits/dim, ELBOs) over other data or other numbers of test examples, or made
    by other estimators, or sample-quality metrics from other sample counts. A number is marked only where
    its column holds another number that it cannot be set beside."""
    def kind(r: dict[str, Any]) -> Any:
        return (f"{r['loss_kind']}: {r.get('loss_label')}") if "loss_kind" in r else None

    return [
        *_differ(rows, LOSS_COLUMNS, kind, lambda g: "the runs' losses are of different kinds (" + _sorted_set(g)
                 + "); compare them only between rows of one loss_kind and loss_label"),
        *_differ(rows, LOSS_COLUMNS, lambda r: r.get("data"), lambda g: "the runs were trained on different data ("
                 + _sorted_set(g) + "); their losses are not comparable"),
        *_differ(rows, NLL_COLUMNS + ("elbo",), lambda r: r.get("data"),
                 lambda g: "the runs were evaluated on different data (" + _sorted_set(g)
                 + "); their likelihoods are not comparable"),
        *_differ(rows, NLL_COLUMNS + ("elbo",), lambda r: r.get("n_test"),
                 lambda g: "evaluated on different numbers of test examples (n_test " + ", ".join(map(str, g))
                 + "); evaluate them with the same --limit"),
        *_differ(rows, NLL_COLUMNS, lambda r: r.get("estimator"),
                 lambda g: "made by different estimators (" + _sorted_set(g) + "): an exact likelihood is the "
                 "number itself, importance sampling with k samples gives an upper bound on it in expectation, "
                 "a plug-in density leaves out the parameters' uncertainty, an AIS estimate carries its own error"),
        *_differ(rows, QUALITY_COLUMNS, lambda r: r.get("quality_samples"),
                 lambda g: "from different sample counts (quality_samples " + ", ".join(map(str, g))
                 + "); evaluate them with the same --quality-samples"),
    ]


def incomparable(rows: Sequence[dict[str, Any]]) -> list[str]:
    """:func:`findings` as lines, each naming its columns first."""
    return [str(f) for f in findings(rows)]


def mark(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give every row ``not_comparable``: column -> the reasons (:func:`findings`) why the row's number
    there cannot be set beside others of its column; ``{}`` where none. Returns ``rows``."""
    for row in rows:
        row["not_comparable"] = {}
    for finding in findings(rows):
        for i, column in finding.cells:
            rows[i]["not_comparable"].setdefault(column, []).append(finding.reason)
    return rows


def compare(paths: Sequence[str | Path], output: str | Path = "compare.png", n: int = 16,
            seed: int = 0, max_cols: int = 4) -> tuple[list[dict[str, Any]], Path]:
    """The comparison table (one dict per run) and the path of the figure written to ``output``: ``n``
    draws from each run (draws, not pixel means, so that binary data look alike across families) in rows
    of at most ``max_cols`` panels, above the training losses by epoch (:func:`loss_panels`)."""
    from ppgen.plots.common import draw_samples, figure, save_figure
    from ppgen.plots.curves import step_axis

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
        step_axis(ax, [m["epoch"] for _, epochs in curves for m in epochs])
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
