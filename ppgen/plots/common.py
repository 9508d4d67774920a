"""Figures every family shares: sample grids, sample scatters over data, training curves, the loss trace.

The families' own figures are in the modules beside this one (:mod:`ppgen.plots.families` finds them).
Every function writes a PNG and returns its path. Figures are drawn with matplotlib's object API (:func:`subplots`, :func:`figure`), never
through pyplot: nothing is shown, registered with pyplot or dependent on the backend, and importing ppgen
leaves the backend alone (a notebook's inline backend keeps working), so they work on a server, in tests
and in a notebook alike.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from ppgen.runs.atomic import atomic_write


def figure(figsize: tuple[float, float] | None = None, **kwargs: Any) -> Figure:
    """A figure outside pyplot: written with ``savefig``, freed when no longer referenced."""
    return Figure(figsize=figsize, **kwargs)


def subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] | None = None,
             **kwargs: Any) -> tuple[Figure, Any]:
    """``pyplot.subplots`` without pyplot: a :class:`~matplotlib.figure.Figure` and its axes (the same
    keywords: ``squeeze``, ``sharex``, ``gridspec_kw``, ...)."""
    fig = figure(figsize)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def panel_count(dataset: Any, var_names: Sequence[str], coords: dict[str, Any] | None = None,
                compact: bool = False) -> int:
    """How many panels ArviZ draws for ``var_names`` of an xarray Dataset after ``coords`` (label-based,
    as ArviZ selects them): one per variable with ``compact``, else one per coordinate outside chain and
    draw. ArviZ then draws into axes that ppgen made (:func:`grid_axes`), never through pyplot."""
    ds = dataset.sel(**coords) if coords else dataset
    if compact:
        return len(var_names)
    return sum(math.prod(ds[v].sizes[d] for d in ds[v].dims if d not in ("chain", "draw")) for v in var_names)


def grid_axes(n: int, panel: tuple[float, float] = (3.2, 2.6), max_cols: int = 4) -> tuple[Figure, np.ndarray]:
    """A figure with ``n`` panels in rows of at most ``max_cols``, the axes as a flat array of ``n``
    (spare cells of the grid removed)."""
    cols = max(1, min(n, max_cols))
    rows = max(1, math.ceil(n / cols))
    fig, axes = subplots(rows, cols, figsize=(panel[0] * cols, panel[1] * rows), squeeze=False)
    flat = axes.ravel()
    for ax in flat[n:]:
        ax.remove()
    return fig, flat[:n]


def is_image(event_shape: Sequence[int]) -> bool:
    return len(event_shape) == 3 and event_shape[0] in (1, 3)


def image_grid(x: torch.Tensor | np.ndarray, nrow: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile images (N, C, H, W) with values in [0, 1] into one (rows*H, cols*W[, 3]) array; blank
    cells are white-free grey so a short grid is visibly short."""
    x = torch.as_tensor(x).detach().float().cpu().clamp(0, 1)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    n, c, h, w = x.shape
    cols = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    grid = torch.full((c, rows * (h + pad) + pad, cols * (w + pad) + pad), 0.5)
    for i in range(n):
        r, col = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, top : top + h, left : left + w] = x[i]
    arr = grid.numpy()
    return arr[0] if c == 1 else np.transpose(arr, (1, 2, 0))


def show_grid(ax: Any, x: torch.Tensor, nrow: int | None = None, title: str | None = None) -> None:
    """Draw an image grid on a matplotlib axis."""
    ax.imshow(image_grid(x, nrow), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)


def save_figure(fig: Any, path: str | Path) -> Path:
    """Save ``fig``; the file is written whole and replaces a link at ``path`` rather than
    writing through it."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or None
    atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=110, bbox_inches="tight"))
    return path


def save_samples(x: torch.Tensor, path: str | Path, title: str | None = None, nrow: int | None = None,
                 reference: torch.Tensor | None = None) -> Path:
    """Samples as a picture (see :func:`draw_samples`); sequences get one panel per dimension."""
    x = torch.as_tensor(x).detach().float().cpu()
    if x.dim() == 4:
        side = max(4.0, min(10.0, 0.5 * math.sqrt(x.shape[0]) * x.shape[-1] / 8))
        fig, ax = subplots(figsize=(side, side))
        draw_samples(ax, x, title, nrow=nrow)
        return save_figure(fig, path)
    dims = x.shape[-1] if x.dim() == 3 else 1
    size = (7, 2.2 * dims) if x.dim() == 3 else (5, 5) if x.reshape(len(x), -1).shape[1] >= 2 else (6, 4)
    fig, axes = subplots(dims, 1, figsize=size, squeeze=False)
    for d, ax in enumerate(axes[:, 0]):
        draw_samples(ax, x, title if d == 0 else None, reference=reference, dim=d)
    return save_figure(fig, path)


def draw_samples(ax: Any, x: torch.Tensor, title: str | None = None, *, reference: torch.Tensor | None = None,
                 nrow: int | None = None, dim: int = 0, show: int = 8) -> None:
    """Draw samples on an axis: an image grid for images (N, C, H, W); for sequences (N, T, D) the
    first ``show`` as lines over time (dimension ``dim``); a scatter for points of 2 or more dimensions
    (the first two); a histogram for 1-D values. ``reference`` data are drawn beneath in grey."""
    x = torch.as_tensor(x).detach().float().cpu()
    ref = None if reference is None else torch.as_tensor(reference).detach().float().cpu()
    if x.dim() == 4:
        show_grid(ax, x, nrow, title)
        return
    if x.dim() == 3:
        t = np.arange(x.shape[1])
        for r in ref[:show] if ref is not None else []:
            ax.plot(t, r[:, dim].numpy(), color="0.75", lw=1)
        for i, seq in enumerate(x[:show]):
            ax.plot(t, seq[:, dim].numpy(), lw=1, label="samples" if i == 0 else None)
        ax.set_xlabel("step")
        ax.set_ylabel(f"x[{dim}]")
    else:
        flat = x.reshape(len(x), -1)
        ref = None if ref is None else ref.reshape(len(ref), -1)
        if flat.shape[1] >= 2:
            if ref is not None:
                ax.scatter(ref[:, 0], ref[:, 1], s=3, alpha=0.3, color="0.6", label="data")
            ax.scatter(flat[:, 0], flat[:, 1], s=3, alpha=0.6, color="C0", label="samples")
            ax.set_aspect("equal")
        else:
            if ref is not None:
                ax.hist(ref[:, 0].numpy(), bins=80, density=True, alpha=0.4, color="0.5", label="data")
            ax.hist(flat[:, 0].numpy(), bins=80, density=True, alpha=0.6, color="C0", label="samples")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)


def training_curves(metrics: list[dict[str, Any]], path: str | Path, title: str | None = None) -> Path | None:
    """Every numeric quantity of the train records against step, with epoch means (and validation
    numbers) on top; one panel per quantity."""
    train = [m for m in metrics if m.get("kind") == "train"]
    epochs = [m for m in metrics if m.get("kind") == "epoch"]
    if not train and not epochs:
        return None
    skip = {"kind", "epoch", "step", "time_s", "train_time_s"}
    keys = sorted({k for m in train + epochs for k, v in m.items() if k not in skip and isinstance(v, (int, float))})
    base = [k for k in keys if not k.startswith("val_")]
    # validation numbers get the panel of their training quantity, or one of their own (e.g. val_ks)
    keys = base + [k for k in keys if k.startswith("val_") and k[4:] not in base]
    n = len(keys)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        pts = [(m["step"], m[key]) for m in train if key in m]
        if pts:
            s, v = zip(*pts)
            ax.plot(s, v, lw=0.8, alpha=0.5, label="train (batch)")
        ep = [(m["step"], m[key]) for m in epochs if key in m]
        if ep:
            s, v = zip(*ep)
            ax.plot(s, v, "o-", ms=3, label="validation" if key.startswith("val_") else "train (epoch mean)")
        val = [(m["step"], m[f"val_{key}"]) for m in epochs if f"val_{key}" in m]
        if val:
            s, v = zip(*val)
            ax.plot(s, v, "s-", ms=3, label="validation")
        ax.set_xlabel("step")
        ax.set_title(key, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def loss_trace_figure(idata: Any, path: Path) -> Path | None:
    """The training loss per step from an InferenceData's ``sample_stats`` (``loss``, ``step``), written to
    ``path``; None when it records no loss."""
    if "sample_stats" not in idata.groups() or "loss" not in idata.sample_stats:
        return None
    fig, ax = subplots(figsize=(6, 3))
    loss = idata.sample_stats["loss"].values[0]
    step = idata.sample_stats["step"].values[0] if "step" in idata.sample_stats else np.arange(len(loss))
    ax.plot(step, loss, lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per example)")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)
