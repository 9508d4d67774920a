"""Training curves: every quantity a run recorded against the training step (:func:`training_curves`), and
the training loss per step from an InferenceData's ``sample_stats`` (:func:`loss_trace_figure`). Drawn with
matplotlib's object API through :mod:`ppgen.plots.common`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import MaxNLocator

from ppgen.plots.common import figure, save_figure, subplots
from ppgen.plots.metric_labels import METRIC_LABELS, metric_title

#: A series of at most this many points gets a marker at each: a line alone hides how few they are, and
#: a line of one point draws nothing.
FEW_POINTS = 30


#: Records that are not quantities over training.
_NOT_CURVES = {"kind", "epoch", "step", "time_s", "train_time_s", "layer", "best_restart"}


def _quantities(train: list[dict[str, Any]], epochs: list[dict[str, Any]]) -> list[str]:
    """Numeric keys of the records (flags aside), the training loss first, validation numbers after their
    training quantity's panel or in one of their own (``val_ks``)."""
    keys = sorted({k for m in train + epochs for k, v in m.items()
                   if k not in _NOT_CURVES and isinstance(v, (int, float)) and not isinstance(v, bool)})
    base = sorted((k for k in keys if not k.startswith("val_")), key=lambda k: k != "loss")  # the loss first
    return base + [k for k in keys if k.startswith("val_") and k[4:] not in base]


def _repeats(key: str, other: str, records: list[dict[str, Any]], sign: float = -1.0) -> bool:
    """Whether ``key`` only repeats ``other``: on every record that has ``key`` (or ``val_key``) ``other`` (or
    ``val_other``) is there too and equals ``sign`` times it. With ``sign`` -1, the sign flipped (an RBM's
    ``pseudo_loglik`` beside its ``loss``, minus the pseudo-log-likelihood); with +1, the same number under
    two names (a DBN's upper layer, whose ``loss`` is its ``recon_error``)."""
    seen = False
    for m in records:
        for a, b in ((key, other), (f"val_{key}", f"val_{other}")):
            if a in m:
                if b not in m or not isinstance(m[b], (int, float)) or float(m[a]) != sign * float(m[b]):
                    return False
                seen = True
    return seen


def _unrepeated(keys: list[str], records: list[dict[str, Any]], negated: dict[str, str]) -> list[str]:
    """``keys`` without those that repeat an earlier one's number, with the sign flipped or not
    (:func:`_repeats`); ``negated`` gets, for each key kept, the key it stands for, negated."""
    out: list[str] = []
    for key in keys:
        earlier = [k for k in out if not k.startswith("val_")]
        if any(_repeats(key, k, records, sign=1.0) for k in earlier):
            continue
        kept = next((k for k in earlier if _repeats(key, k, records)), None)
        if kept is None:
            out.append(key)
        else:
            negated.setdefault(kept, key)
    return out


#: The colour, marker and legend entry of each kind of series in :func:`training_curves`, alike in every
#: panel so that one legend for the figure names them all.
_TRAIN = {"color": "C0", "label": "train (logged steps)"}
_EPOCH = {"color": "C1", "label": "train (epoch mean)"}
_VALID = {"color": "C2", "label": "validation"}


def plot_series(ax: Any, x: Any, y: Any, **kwargs: Any) -> list[Any]:
    """``y`` against ``x``, leaving out non-finite values (a number recorded on some records only): a
    line between the points and, for at most :data:`FEW_POINTS` of them, a marker at each (``marker``
    given in ``kwargs`` wins). Returns the lines drawn (none for no finite point)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    if not keep.any():
        return []
    if keep.sum() <= FEW_POINTS:
        kwargs.setdefault("marker", "o")
        kwargs.setdefault("markersize", 3)
    return ax.plot(x[keep], y[keep], **kwargs)


def step_axis(ax: Any, steps: Any) -> None:
    """An x axis of training steps: whole-number ticks only and, where the steps span less than two
    (a single logged step), one step either side of them rather than a fraction of one."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    s = np.asarray(steps, dtype=float)
    s = s[np.isfinite(s)]
    if len(s) and s.max() - s.min() < 2:
        ax.set_xlim(s.min() - 1, s.max() + 1)


def _series(ax: Any, pts: list[tuple[float, float]], marker: str | None, **kwargs: Any) -> None:
    """:func:`plot_series` through ``pts``, with ``marker`` at every point (None: where they are few)."""
    if not pts:
        return
    s, v = zip(*pts)
    plot_series(ax, s, v, **({"marker": marker} if marker else {}), **kwargs)


def training_curves(metrics: list[dict[str, Any]], path: str | Path, title: str | None = None,
                    labels: dict[str, str] | None = None) -> Path | None:
    """Every numeric quantity of the train records against step, with epoch means (and validation
    numbers) on top; one panel per quantity, its y axis named by ``labels`` (see :func:`metric_labels`) and
    its title that label without the unit (:func:`~ppgen.plots.metric_labels.metric_title`; the panel's
    ``get_label()`` is the recorded key).
    Records of a model trained layer by layer (a ``layer`` number) get one row of panels per layer,
    since each layer's numbers have their own scale. A quantity that never changes is named in the
    title instead of drawn, one that only repeats another's number with the sign flipped (an RBM's
    ``pseudo_loglik`` beside its ``loss``) is left out; a series of few records is drawn with markers (a
    single record as a marker), on an axis of whole steps (:func:`step_axis`). One legend, below the
    panels, names the kinds of series (each of one colour in every panel): it covers no point."""
    train = [m for m in metrics if m.get("kind") == "train"]
    epochs = [m for m in metrics if m.get("kind") == "epoch"]
    if not train and not epochs:
        return None
    names = {**METRIC_LABELS, **(labels or {})}
    layers = sorted({int(m["layer"]) for m in train + epochs if "layer" in m}) or [None]
    rows: list[tuple[int | None, list[str]]] = []
    constant: dict[str, Any] = {}
    negated: dict[str, str] = {}  # a key drawn -> the key it stands for, with the sign flipped
    for layer in layers:
        t = [m for m in train if layer is None or m.get("layer") == layer]
        e = [m for m in epochs if layer is None or m.get("layer") == layer]
        keys = []
        for key in _unrepeated(_quantities(t, e), t + e, negated):
            values = {m[key] for m in t + e if key in m}
            if len(values) == 1 and sum(key in m for m in train + epochs) > 1:
                constant[key] = values.pop()  # drawn as text: a flat line says less than its value
            else:
                keys.append(key)
        rows.append((layer, keys))
    cols = max(1, min(max(len(k) for _, k in rows), 5 if layers[0] is not None else 3))
    cells: list[tuple[int | None, str] | None] = []
    for layer, keys in rows:
        for i in range(0, max(len(keys), 1), cols):
            chunk = [(layer, k) for k in keys[i : i + cols]]
            cells += chunk + [None] * (cols - len(chunk))
    nrows = max(1, len(cells) // cols)
    # constrained layout makes room for the figure's legend below the panels, clear of every point
    fig = figure(((3.4 if layers[0] is None else 3.0) * cols, 2.7 * nrows + 0.3), layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False)
    for ax, cell in zip(axes.flat, cells):
        if cell is None:
            ax.set_axis_off()
            continue
        layer, key = cell
        t = [m for m in train if layer is None or m.get("layer") == layer]
        e = [m for m in epochs if layer is None or m.get("layer") == layer]
        _series(ax, [(m["step"], m[key]) for m in t if key in m], None, **_TRAIN, lw=0.8, alpha=0.6)
        _series(ax, [(m["step"], m[key]) for m in e if key in m], "s" if key.startswith("val_") else "o",
                **(_VALID if key.startswith("val_") else _EPOCH), markersize=3)
        _series(ax, [(m["step"], m[f"val_{key}"]) for m in e if f"val_{key}" in m], "s", **_VALID, markersize=3)
        step_axis(ax, [m["step"] for m in t + e if key in m or f"val_{key}" in m])
        base = key[4:] if key.startswith("val_") else key
        name = names.get(f"{base}@layer{layer}") or names.get(base, base)
        ax.set_xlabel(names.get("step", "training step"), fontsize=8)
        ax.set_ylabel(wrap_label(name), fontsize=8)
        panel = metric_title(name) + (" (validation)" if key.startswith("val_") else "")
        if base in negated and base not in (labels or {}):  # its label does not say what the number is
            panel += f" = minus {metric_title(names.get(negated[base], negated[base]))}"
        ax.set_title(wrap_title(panel if layer is None else f"layer {layer + 1}: {panel}"), fontsize=9)
        ax.set_label(key)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    handles: dict[str, Any] = {}
    for ax in axes.flat:
        for line in ax.get_lines():
            handles.setdefault(line.get_label(), line)
    order = [kind["label"] for kind in (_TRAIN, _EPOCH, _VALID) if kind["label"] in handles]
    if order:
        fig.legend([handles[k] for k in order], order, loc="outside lower center", ncols=len(order), fontsize=7,
                   frameon=False)
    heading = [title] if title else []
    if constant:
        heading.append("constant: " + ", ".join(f"{names.get(k, k)} = {v:.4g}" for k, v in constant.items()))
    if heading:
        fig.suptitle("\n".join(heading), fontsize=10)
    return save_figure(fig, path)


def wrap_label(text: str, width: int = 30) -> str:
    """An axis label on at most two lines (before the unit in brackets, if it is long)."""
    if len(text) <= width or " (" not in text:
        return text
    head, unit = text.split(" (", 1)
    return f"{head}\n({unit}"


def wrap_title(text: str, width: int = 40) -> str:
    """A panel's title on lines of at most about ``width`` characters, broken between words, so that the
    titles of neighbouring panels do not run into each other."""
    import textwrap

    return "\n".join(textwrap.wrap(text, width, break_on_hyphens=False)) or text


def loss_trace_figure(idata: Any, path: Path, labels: dict[str, str] | None = None) -> Path | None:
    """The training loss per step from an InferenceData's ``sample_stats`` (``loss``, ``step``), written to
    ``path``; None when it records no loss. ``labels`` (:func:`~ppgen.plots.metric_labels.metric_labels` of
    the run's recipe and spec) say what the loss is: minus the ELBO, minus the exact log-likelihood, ...;
    without them it is called the training loss, with no unit claimed."""
    if "sample_stats" not in idata.groups() or "loss" not in idata.sample_stats:
        return None
    names = {**METRIC_LABELS, **(labels or {})}
    fig, ax = subplots(figsize=(6, 3))
    loss = idata.sample_stats["loss"].values[0]
    step = idata.sample_stats["step"].values[0] if "step" in idata.sample_stats else np.arange(len(loss))
    # a run that logged a single step still shows it: as a marker, not a line of one point
    plot_series(ax, step, loss, lw=0.8)
    step_axis(ax, step)
    ax.set_xlabel(names.get("step", "training step"))
    ax.set_ylabel(wrap_label(names["loss"], 40))
    ax.set_title(f"training loss at the logged steps: {metric_title(names['loss'])}", fontsize=10)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)
