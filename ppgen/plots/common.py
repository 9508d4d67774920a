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
from typing import Any, NamedTuple, Sequence

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


#: What a quantity recorded during training is, with its unit: the y-axis labels of :func:`training_curves`.
#: :func:`metric_labels` adds what depends on the routine (the meaning of ``loss``).
METRIC_LABELS: dict[str, str] = {
    "loss": "training loss",
    "lr": "learning rate",
    "grad_norm": "gradient norm (before clipping)",
    "recon_error": "squared reconstruction error per example",
    "pseudo_loglik": "pseudo-log-likelihood (nats per example)",
    "free_energy": "free energy of the data (nats per example)",
    "free_energy_gap": "free energy, data minus model samples (nats)",
    "accept_rate": "acceptance rate (mean of the block)",
    "divergences": "divergent transitions (count per block)",
    "step_size": "step size (mean over chains)",
    "draws": "draws per chain (so far)",
    "rhat_max": "largest split R-hat",
    "log_lik": "log-likelihood (nats per example)",
    "iterations": "iterations",
}


class LossKind(NamedTuple):
    """What the ``loss`` a routine records is: ``kind``, the kind of number (losses of one kind measure the
    same thing, so they may share an axis: :data:`LOSS_KINDS`), and ``label``, its axis label with the unit
    (losses with one label may share an axis)."""

    kind: str
    label: str


#: The kinds of training loss, as :func:`loss_kind` names them.
LOSS_KINDS = {
    "exact": "exact negative log-likelihood",
    "bound": "bound: minus a lower bound on log p(x)",
    "map": "MAP objective: minus the log posterior density",
    "log_joint": "minus the log joint density at posterior draws",
    "adversarial": "discriminator loss (not a likelihood)",
    "pseudo": "minus a pseudo-log-likelihood",
    "reconstruction": "reconstruction error",
    "other": "training loss",
}


def loss_kind(recipe: Any, spec: Any = None) -> LossKind:
    """The kind and label of the ``loss`` recorded by ``recipe``'s routine on a model of ``spec``. For SVI
    the family declares what minus its objective is (:meth:`ppgen.models.base.Family.svi_objective`): minus
    the ELBO or the IWAE bound for a family with latent variables, minus log p(x) exactly for one without
    (a PixelCNN), minus the log posterior density with a prior on the weights."""
    routine = getattr(recipe, "routine", None)
    if routine == "svi":
        objective = _svi_objective(spec)
        if objective == "exact":
            return LossKind(LOSS_KINDS["exact"], "minus the log-likelihood, exact (nats per example)")
        if objective == "map":
            return LossKind(LOSS_KINDS["map"], "minus log-likelihood minus log prior / N (nats per example)")
        bound = "minus the IWAE bound" if getattr(recipe, "elbo", "trace") == "iwae" else "minus the ELBO"
        return LossKind(LOSS_KINDS["bound"], f"{bound} (nats per example)")
    if routine in ("enum_svi", "em"):
        # a point mass on every parameter and the discrete latents summed out: the ELBO is the log joint
        return LossKind(LOSS_KINDS["map"], "minus log posterior density (nats per example)")
    if routine == "nuts":
        return LossKind(LOSS_KINDS["log_joint"], "minus log joint density (nats per example)")
    if routine == "adversarial":
        name = getattr(recipe, "loss", "nonsaturating")
        unit = "nats, binary cross-entropy" if name in ("minimax", "nonsaturating") else f"{name} loss, critic units"
        return LossKind(LOSS_KINDS["adversarial"], f"discriminator loss ({unit})")
    if routine in ("cd", "pcd", "layerwise"):
        real = spec is not None and (getattr(spec, "family", None) == "gbrbm" or getattr(spec, "visible", None) == "gaussian")
        if real:
            return LossKind(LOSS_KINDS["reconstruction"], METRIC_LABELS["recon_error"])
        return LossKind(LOSS_KINDS["pseudo"], "minus pseudo-log-likelihood (nats per example)")
    return LossKind(LOSS_KINDS["other"], METRIC_LABELS["loss"])


def _svi_objective(spec: Any) -> str:
    """What the family of ``spec`` declares minus its SVI objective to be; a bound without a spec."""
    if spec is None or getattr(spec, "family", None) is None:
        return "bound"
    from ppgen.registry import family

    return family(spec.family).svi_objective(spec)


def metric_labels(recipe: Any, spec: Any = None) -> dict[str, str]:
    """The meaning of the numbers a routine records, from its recipe (``routine``, ``elbo``, ``loss``) and
    the model's spec: ``loss`` as :func:`loss_kind` labels it (minus the ELBO in nats for SVI on a family
    with latent variables, minus the exact log-likelihood for one without, the discriminator's loss for a
    GAN, minus the pseudo-log-likelihood (or the reconstruction error for real-valued units) for
    contrastive divergence, ...). A key ``"loss@layer1"`` applies to the records of layer 1 only (a deep
    belief net)."""
    routine = getattr(recipe, "routine", None)
    out: dict[str, str] = {"loss": loss_kind(recipe, spec).label} if routine is not None else {}
    if routine == "adversarial":
        name = getattr(recipe, "loss", "nonsaturating")
        unit = "nats, binary cross-entropy" if name in ("minimax", "nonsaturating") else f"{name} loss, critic units"
        prob = name in ("minimax", "nonsaturating")
        out.update(g_loss=f"generator loss ({unit})",
                   d_real="mean D(x) on data" + (" (probability)" if prob else " (critic score)"),
                   d_fake="mean D(G(z)) on samples" + (" (probability)" if prob else " (critic score)"),
                   gp="gradient penalty")
    elif routine == "layerwise" and getattr(recipe, "propagate", "mean") == "mean":
        # the layers above the first see probabilities, scored by their reconstruction error
        for i in range(1, len(getattr(spec, "hidden", []) or [])):
            out[f"loss@layer{i}"] = METRIC_LABELS["recon_error"]
    elif routine == "nuts":
        out["step"] = "step (one block of draws)"
    return out


#: Records that are not quantities over training.
_NOT_CURVES = {"kind", "epoch", "step", "time_s", "train_time_s", "layer", "best_restart"}


def _quantities(train: list[dict[str, Any]], epochs: list[dict[str, Any]]) -> list[str]:
    """Numeric keys of the records (flags aside), validation numbers after their training quantity's panel
    or in one of their own (``val_ks``)."""
    keys = sorted({k for m in train + epochs for k, v in m.items()
                   if k not in _NOT_CURVES and isinstance(v, (int, float)) and not isinstance(v, bool)})
    base = [k for k in keys if not k.startswith("val_")]
    return base + [k for k in keys if k.startswith("val_") and k[4:] not in base]


def _series(ax: Any, pts: list[tuple[float, float]], style: str, label: str, **kwargs: Any) -> None:
    """A line through ``pts``; a single point as a marker (a line of one point draws nothing)."""
    if not pts:
        return
    s, v = zip(*pts)
    ax.plot(s, v, style if len(pts) > 1 or any(c in style for c in "os.^") else "o", label=label, **kwargs)


def training_curves(metrics: list[dict[str, Any]], path: str | Path, title: str | None = None,
                    labels: dict[str, str] | None = None) -> Path | None:
    """Every numeric quantity of the train records against step, with epoch means (and validation
    numbers) on top; one panel per quantity, its y axis named by ``labels`` (see :func:`metric_labels`).
    Records of a model trained layer by layer (a ``layer`` number) get one row of panels per layer,
    since each layer's numbers have their own scale. A quantity that never changes is named in the
    title instead of drawn; a quantity with a single record is drawn as a marker."""
    train = [m for m in metrics if m.get("kind") == "train"]
    epochs = [m for m in metrics if m.get("kind") == "epoch"]
    if not train and not epochs:
        return None
    names = {**METRIC_LABELS, **(labels or {})}
    layers = sorted({int(m["layer"]) for m in train + epochs if "layer" in m}) or [None]
    rows: list[tuple[int | None, list[str]]] = []
    constant: dict[str, Any] = {}
    for layer in layers:
        t = [m for m in train if layer is None or m.get("layer") == layer]
        e = [m for m in epochs if layer is None or m.get("layer") == layer]
        keys = []
        for key in _quantities(t, e):
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
    fig, axes = subplots(nrows, cols, figsize=((3.4 if layers[0] is None else 3.0) * cols, 2.7 * nrows), squeeze=False)
    for ax, cell in zip(axes.flat, cells):
        if cell is None:
            ax.set_axis_off()
            continue
        layer, key = cell
        t = [m for m in train if layer is None or m.get("layer") == layer]
        e = [m for m in epochs if layer is None or m.get("layer") == layer]
        _series(ax, [(m["step"], m[key]) for m in t if key in m], "-", "train (logged steps)", lw=0.8, alpha=0.6)
        _series(ax, [(m["step"], m[key]) for m in e if key in m], "o-",
                "validation" if key.startswith("val_") else "train (epoch mean)", ms=3)
        _series(ax, [(m["step"], m[f"val_{key}"]) for m in e if f"val_{key}" in m], "s-", "validation", ms=3)
        base = key[4:] if key.startswith("val_") else key
        name = names.get(f"{base}@layer{layer}") or names.get(base, base)
        ax.set_xlabel(names.get("step", "training step"), fontsize=8)
        ax.set_ylabel(_wrap(name), fontsize=8)
        ax.set_title(key if layer is None else f"layer {layer + 1}: {key}", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    heading = [title] if title else []
    if constant:
        heading.append("constant: " + ", ".join(f"{names.get(k, k)} = {v:.4g}" for k, v in constant.items()))
    if heading:
        fig.suptitle("\n".join(heading), fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def _wrap(text: str, width: int = 30) -> str:
    """An axis label on at most two lines (before the unit in brackets, if it is long)."""
    if len(text) <= width or " (" not in text:
        return text
    head, unit = text.split(" (", 1)
    return f"{head}\n({unit}"


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
    example and coordinate (rows: examples, columns: coordinates), titled "example i, var[j]": a
    histogram of the draws and the normal density with their mean and standard deviation (the exact shape
    of a Gaussian q(z|x), with none of a kernel density's bumps); for a discrete one (a class), one bar
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
    fig, axes = subplots(n_obs, n_dims, figsize=(2.6 * n_dims, 2.1 * n_obs), squeeze=False)
    for i in range(n_obs):
        for j in range(n_dims):
            ax, v = axes[i, j], flat[:, i, j].astype(float)
            mu, sd = float(v.mean()), float(v.std())
            ax.hist(v, bins=min(30, max(8, len(v) // 10)), density=True, color="C0", alpha=0.45, label="draws")
            grid = np.linspace(mu - 4 * sd, mu + 4 * sd, 200) if sd > 0 else np.array([mu, mu])
            dens = np.exp(-0.5 * ((grid - mu) / sd) ** 2) / (sd * math.sqrt(2 * math.pi)) if sd > 0 else [0, 1]
            ax.plot(grid, dens, color="C1", lw=1.5, label=f"normal({mu:.2g}, {sd:.2g}\u00b2)")
            ax.set_title(f"example {i}, {var}[{j}]" if local else f"{var}[{j}]", fontsize=9)
            ax.set_xlabel(f"{var}[{j}]", fontsize=8)
            ax.set_ylabel("density", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=6, loc="upper right")
    fig.suptitle(title or f"draws of {var} for the first test examples ({flat.shape[0]} each) and the normal "
                 "density with their mean and sd", fontsize=10)
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
    # a run that logged a single step still shows it: as a marker, not a line of one point
    ax.plot(step, loss, lw=0.8, marker="o" if len(loss) < 2 else None, markersize=4)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per example)")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)
