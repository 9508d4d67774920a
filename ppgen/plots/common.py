"""Figures and building blocks every family shares: figures outside pyplot, grids of axes, image grids,
samples drawn over data, scatters by label, the axes of a trace plot, the posterior draws of a variable.

The families' own figures are in the modules beside this one (:mod:`ppgen.plots.families` finds them);
the training curves are in :mod:`ppgen.plots.curves`, what the recorded numbers mean in
:mod:`ppgen.plots.metric_labels`. Every function that draws a figure writes a PNG and returns its path.
Figures are drawn with matplotlib's object API (:func:`subplots`, :func:`figure`), never through pyplot:
nothing is shown, registered with pyplot or dependent on the backend, and importing ppgen leaves the
backend alone (a notebook's inline backend keeps working), so they work on a server, in tests and in a
notebook alike.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from ppgen.store.atomic import atomic_write


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
            ax.set_xlabel("x[0]")
            ax.set_ylabel("x[1]")
        else:
            if ref is not None:
                ax.hist(ref[:, 0].numpy(), bins=80, density=True, alpha=0.4, color="0.5", label="data")
            ax.hist(flat[:, 0].numpy(), bins=80, density=True, alpha=0.6, color="C0", label="samples")
            ax.set_xlabel("x")
            ax.set_ylabel("density")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)



def scatter_by_label(fig: Figure, ax: Any, z: Any, y: Any | None, few: int = 10, **kwargs: Any) -> None:
    """A 2-D scatter coloured by label: a legend of the labels when there are at most ``few`` of them
    (a colour bar would invent values between them), a colour bar for more."""
    z = np.asarray(z)
    if y is None:
        ax.scatter(z[:, 0], z[:, 1], s=4, alpha=0.7, **kwargs)
        return
    y = np.asarray(y)
    values = np.unique(y)
    if len(values) <= few:
        for i, v in enumerate(values):
            pick = y == v
            ax.scatter(z[pick, 0], z[pick, 1], s=5, alpha=0.7, color=f"C{i % 10}", label=f"{v}", **kwargs)
        ax.legend(title="label", fontsize=7, title_fontsize=8, markerscale=2, loc="best")
    else:
        sc = ax.scatter(z[:, 0], z[:, 1], c=y, cmap="viridis", s=4, alpha=0.7, **kwargs)
        fig.colorbar(sc, ax=ax, label="label")


def label_trace_axes(axes: Any) -> None:
    """Name the axes of ``az.plot_trace``'s grid (rows of [density, trace]): the value and its density
    on the left, the draw number and the value on the right; each row's variable is its title."""
    for left, right in np.asarray(axes).reshape(-1, 2):
        name = left.get_title() or right.get_title() or "value"
        name = name.replace("\n", " ")
        left.set_xlabel(name, fontsize=8)
        left.set_ylabel("density", fontsize=8)
        right.set_xlabel("draw", fontsize=8)
        right.set_ylabel(name, fontsize=8)


def posterior_figure(idata: Any, path: str | Path, var: str, n_obs: int = 4, n_dims: int = 4,
                     title: str | None = None, probability: str = "posterior probability") -> Path:
    """Posterior draws of ``var`` for the first ``n_obs`` examples: for a continuous variable, one panel per
    example and coordinate (rows: examples, columns: coordinates), titled "example i, var[j]" over the
    draws' mean and sd: a histogram of the draws and the normal density with that mean and standard
    deviation (the exact shape of a Gaussian q(z|x), with none of a kernel density's bumps), named once
    in a legend below the panels, where it covers no histogram; for a discrete one (a class), one bar
    chart per example of the share of draws in each class (``probability`` names its axis), the true label
    marked."""
    post = idata.posterior[var]
    # per example: a first dimension named obs, or as long as the observed data (a plate's default name)
    n_data = [v.shape[0] for v in idata.observed_data.data_vars.values()] if "observed_data" in idata.groups() else []
    local = len(post.dims) > 2 and (post.dims[2] == "obs" or post.shape[2] in n_data)
    values = post.values if local else post.values[:, :, None]  # (chain, draw, obs, ...)
    flat = values.reshape(values.shape[0] * values.shape[1], values.shape[2], -1)
    n_obs = min(n_obs, flat.shape[1])
    discrete = np.issubdtype(values.dtype, np.integer)
    labels = None
    if "constant_data" in idata.groups() and "label" in idata.constant_data:
        labels = idata.constant_data["label"].values
    if discrete:
        classes = int(max(flat.max() + 1, 2 if labels is None else labels.max() + 1))
        cols = min(n_obs, 4)
        fig, axes = subplots(math.ceil(n_obs / cols), cols, figsize=(3.0 * cols, 2.4 * math.ceil(n_obs / cols)),
                             squeeze=False)
        for i, ax in enumerate(axes.flat):
            if i >= n_obs:
                ax.set_axis_off()
                continue
            share = np.bincount(flat[:, i, 0].astype(np.int64), minlength=classes) / flat.shape[0]
            colors = ["C0"] * classes
            if labels is not None:
                colors[int(labels[i])] = "C3"
            ax.bar(np.arange(classes), share, color=colors)
            ax.set_xticks(np.arange(classes))
            ax.set_ylim(0, 1)
            ax.set_xlabel(f"class {var}", fontsize=8)
            ax.set_ylabel(probability, fontsize=8)
            true = f" (label {int(labels[i])}, red)" if labels is not None else ""
            ax.set_title(f"example {i}{true}", fontsize=9)
            ax.tick_params(labelsize=7)
        fig.suptitle(title or f"posterior of {var} for the first test examples ({flat.shape[0]} draws each)",
                     fontsize=10)
        fig.tight_layout()
        return save_figure(fig, path)
    n_dims = min(n_dims, flat.shape[2])
    # constrained layout makes room for the figure legend below the panels, clear of every histogram
    fig = figure((2.6 * n_dims, 2.3 * n_obs + 0.4), layout="constrained")
    axes = fig.subplots(n_obs, n_dims, squeeze=False)
    for i in range(n_obs):
        for j in range(n_dims):
            ax, v = axes[i, j], flat[:, i, j].astype(float)
            mu, sd = float(v.mean()), float(v.std())
            ax.hist(v, bins=min(30, max(8, len(v) // 10)), density=True, color="C0", alpha=0.45,
                    label="draws (histogram)")
            grid = np.linspace(mu - 4 * sd, mu + 4 * sd, 200) if sd > 0 else np.array([mu, mu])
            dens = np.exp(-0.5 * ((grid - mu) / sd) ** 2) / (sd * math.sqrt(2 * math.pi)) if sd > 0 else [0, 1]
            ax.plot(grid, dens, color="C1", lw=1.5, label="normal density with the draws' mean and sd")
            name = f"example {i}, {var}[{j}]" if local else f"{var}[{j}]"
            ax.set_title(f"{name}\nmean {mu:.2g}, sd {sd:.2g}", fontsize=8)
            ax.set_xlabel(f"{var}[{j}]", fontsize=8)
            ax.set_ylabel("density", fontsize=8)
            ax.tick_params(labelsize=7)
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    fig.suptitle(title or f"draws of {var} for the first test examples ({flat.shape[0]} each) and the normal "
                 "density with their mean and sd", fontsize=10)
    return save_figure(fig, path)
