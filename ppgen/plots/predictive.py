"""Figures of ``ppgen diagnose`` for fits without posterior draws, read from their InferenceData: a point
estimate (its values, the log-likelihood of each example, the plug-in predictive against the data) and an
autoregressive model (the mean negative log-likelihood of each pixel as an image, in nats). Drawn with
matplotlib's object API through :mod:`ppgen.plots`."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ppgen.arviz_data import arviz
from ppgen.plots.common import save_figure, subplots

#: Entries of one variable shown in the point-estimate figure.
MAX_ENTRIES = 16


def point_estimate_figure(idata: Any, path: Path, max_vars: int = 3) -> Path:
    """Panels, three to a row: the values of the first ``max_vars`` variables of the point estimate (the first
    :data:`MAX_ENTRIES` entries of each), the histogram of log p(x_n | theta_hat) over the examples, and the
    plug-in predictive's replicated data against the observed data (``az.plot_ppc``)."""

    az = arviz()
    post = idata.posterior
    est = post.attrs.get("point_estimate", "point estimate")
    names = list(post.data_vars)[:max_vars]
    has_ll = "log_likelihood" in idata.groups()
    has_pp = "posterior_predictive" in idata.groups() and "observed_data" in idata.groups()
    n = len(names) + int(has_ll) + int(has_pp)
    cols = min(3, n)
    rows = -(-n // cols)
    fig, grid = subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False)
    axes = list(grid.flat)
    for ax in axes[n:]:
        ax.set_axis_off()
    for ax, name in zip(axes, names):
        values = post[name].values[0, 0]
        shape = values.shape
        flat = values.reshape(-1)[:MAX_ENTRIES]
        index = list(np.ndindex(*shape))[: len(flat)] if shape else [()]
        labels = [name + (f"[{', '.join(map(str, i))}]" if i else "") for i in index]
        rows = np.arange(len(flat))[::-1]
        ax.plot(flat, rows, "o", color="C0", ms=4)
        ax.set_yticks(rows, labels, fontsize=7)
        ax.set_xlabel("value")
        shown = f" (first {len(flat)} of {values.size})" if values.size > len(flat) else ""
        ax.set_title(f"{name}: {est} estimate{shown}", fontsize=9)
        ax.grid(alpha=0.3, axis="x")
    k = len(names)
    unit = idata.attrs.get("unit", "example")
    if has_ll:
        ax = axes[k]
        ll = np.concatenate([idata.log_likelihood[v].values.reshape(-1) for v in idata.log_likelihood.data_vars])
        ax.hist(ll, bins=min(30, max(5, ll.size // 3)), color="C0", alpha=0.8)
        ax.set_xlabel(f"log p(x | {est}) per {unit} (nats)")
        ax.set_ylabel("count")
        ax.set_title(f"log-likelihood of each {unit} (mean {ll.mean():.2f})", fontsize=9)
        k += 1
    if has_pp:
        ax = axes[k]
        obs_dims = [d for d in idata.posterior_predictive["x"].dims if d not in ("chain", "draw")]
        total = idata.posterior_predictive.sizes["chain"] * idata.posterior_predictive.sizes["draw"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            az.plot_ppc(idata, flatten=obs_dims, num_pp_samples=min(50, total), random_seed=0, textsize=8,
                        legend=True, ax=ax)
        handles = ax.get_legend_handles_labels()[0]
        if len(handles) == 3:  # ArviZ names them after the posterior; these draws are at one value
            ax.legend(handles, ["plug-in predictive", "observed", "predictive mean"], fontsize=7)
        ax.set_xlabel("x (every value of the data pooled)")
        ax.set_ylabel("density")
        ax.set_title(f"plug-in predictive at the {est} estimate", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def pixel_nll_figure(idata: Any, path: Path, var: str = "x") -> Path:
    """The negative log-likelihood of each pixel, -log p(x_i | x_<i), averaged over the test examples of the
    ``log_likelihood`` group (dims chain, draw, obs, pixel) and shown as an image with a colour bar in nats;
    beside it the observed examples' mean, for orientation."""

    ll = idata.log_likelihood[var]
    height, width = int(ll.attrs.get("height", 0)), int(ll.attrs.get("width", 0))
    mean_nll = -ll.values.reshape(-1, ll.sizes["pixel"]).mean(0)
    if height * width != mean_nll.size:
        height, width = 1, mean_nll.size
    img = mean_nll.reshape(height, width)
    n_obs = ll.sizes.get("obs", 1)
    has_obs = "observed_data" in idata.groups() and var in idata.observed_data
    fig, axes = subplots(1, 2 if has_obs else 1, figsize=(7.6 if has_obs else 4.2, 3.4), squeeze=False)
    ax = axes[0, 0]
    shown = ax.imshow(img, cmap="viridis", interpolation="nearest")
    bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("mean -log p(x_i | x_<i) (nats)")
    ax.set_title(f"per-pixel NLL, mean over {n_obs} test images\n(total {mean_nll.sum():.1f} nats per image)",
                 fontsize=9)
    ax.set_xlabel("column")
    ax.set_ylabel("row")
    if has_obs:
        ax = axes[0, 1]
        obs = idata.observed_data[var].values.reshape(-1, height, width).mean(0)
        shown = ax.imshow(obs, cmap="gray", interpolation="nearest")
        bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
        bar.set_label("mean pixel value")
        ax.set_title(f"mean of the same {n_obs} test images", fontsize=9)
        ax.set_xlabel("column")
        ax.set_ylabel("row")
    fig.tight_layout()
    return save_figure(fig, path)


def _replicates(idata: Any, var: str) -> tuple[np.ndarray, np.ndarray]:
    """The replicated data sets of the ``posterior_predictive`` group as (replicates, obs, values) and the
    observed data as (obs, values)."""
    pp = idata.posterior_predictive[var]
    reps = pp.values.reshape(pp.sizes["chain"] * pp.sizes["draw"], pp.shape[2] if pp.ndim > 2 else 1, -1)
    obs = idata.observed_data[var].values
    return reps, obs.reshape(obs.shape[0], -1)


def predictive_draws_figure(idata: Any, path: Path, image_shape: tuple[int, ...] | None = None, var: str = "x",
                            rows: int = 4, drawn: str = "drawn from the model") -> Path:
    """Replicated data sets of the ``posterior_predictive`` group (the model's own draws) against the
    observed data. Images (``image_shape`` (C, H, W)): the observed test images in the top row and below
    them ``rows`` replicated data sets, one a row; 2-D values: the pooled draws over the observed points;
    otherwise one histogram per value (the first four), the pooled draws over the observed values."""
    from ppgen.plots.common import draw_samples, show_grid

    reps, obs = _replicates(idata, var)
    n_rep, n_obs = reps.shape[0], obs.shape[0]
    if image_shape is not None:
        shown = min(rows, n_rep)
        images = np.concatenate([obs[None], reps[:shown]]).reshape(-1, *image_shape)
        side = 0.62 * image_shape[-1] / 8 if image_shape[-1] < 16 else 0.62
        fig, ax = subplots(figsize=(max(4.0, side * n_obs + 0.4), side * (shown + 1) + 0.9))
        show_grid(ax, images, nrow=n_obs,
                  title=f"top row: {n_obs} observed test images; below: {shown} of {n_rep} replicated data sets "
                        f"{drawn}, one a row")
        return save_figure(fig, path)
    values = obs.shape[1]
    if values == 2:
        fig, ax = subplots(figsize=(5, 5))
        draw_samples(ax, reps.reshape(-1, 2), f"{n_rep} replicated data sets {drawn}\nover the {n_obs} observed points",
                     reference=obs)
        return save_figure(fig, path)
    panels = min(values, 4)
    fig, axes = subplots(1, panels, figsize=(3.6 * panels, 3.0), squeeze=False)
    for j, ax in enumerate(axes[0]):
        pooled, seen = reps[:, :, j].reshape(-1), obs[:, j]
        bins = np.histogram_bin_edges(np.concatenate([pooled, seen]), bins=40)
        ax.hist(seen, bins=bins, density=True, color="0.5", alpha=0.5, label=f"observed ({n_obs})")
        ax.hist(pooled, bins=bins, density=True, color="C0", alpha=0.6, label=f"replicated ({n_rep} sets)")
        ax.set_xlabel(f"{var}[{j}]" if values > 1 else var)
        ax.set_ylabel("density")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    shown = f" (the first {panels} of {values} values)" if values > panels else ""
    fig.suptitle(f"replicated data sets {drawn} against the observed data{shown}", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def pixel_means_figure(idata: Any, path: Path, image_shape: tuple[int, ...], var: str = "x",
                       drawn: str = "drawn from the model") -> Path:
    """A per-pixel view of the replicated data sets of the ``posterior_predictive`` group against the
    observed images: the mean of each pixel over every draw, its mean over the observed images, and
    their difference (draws minus observed, on a scale centred at 0), each with a colour bar. The first
    channel of colour images."""
    reps, obs = _replicates(idata, var)
    height, width = image_shape[-2], image_shape[-1]
    per_channel = height * width
    drawn_mean = reps.reshape(-1, reps.shape[-1]).mean(0)[:per_channel].reshape(height, width)
    seen_mean = obs.mean(0)[:per_channel].reshape(height, width)
    diff = drawn_mean - seen_mean
    top = float(np.abs(diff).max()) or 1.0
    low, high = float(min(drawn_mean.min(), seen_mean.min())), float(max(drawn_mean.max(), seen_mean.max()))
    fig, axes = subplots(1, 3, figsize=(11.4, 3.6), squeeze=False)
    panels = [
        (drawn_mean, f"mean of {reps.shape[0] * reps.shape[1]} draws\n{drawn}", "gray", low, high, "mean pixel value"),
        (seen_mean, f"mean of {obs.shape[0]} observed test images", "gray", low, high, "mean pixel value"),
        (diff, "draws minus observed", "RdBu_r", -top, top, "difference of means"),
    ]
    for ax, (img, title, cmap, vmin, vmax, label) in zip(axes[0], panels):
        shown = ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
        bar.set_label(label, fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("column")
        ax.set_ylabel("row")
    fig.tight_layout()
    return save_figure(fig, path)
