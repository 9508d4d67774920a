"""The energy families' figures: weight filters, Gibbs chains started at test examples, samples; for
``ppgen diagnose`` trace and rank plots of the chain statistics."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from ppgen.arviz_data import arviz
from ppgen.data.core import Dataset
from ppgen.models.energy.family import CHAIN_STATS, EnergyFamily
from ppgen.plots import common as plots
from ppgen.plots.common import grid_axes, label_trace_axes, panel_count, save_figure, subplots


def figures(model: EnergyFamily, folder: Path, data: Dataset) -> dict[str, Path]:

    folder = Path(folder)
    out: dict[str, Path] = {}
    gen = torch.get_rng_state()
    torch.manual_seed(0)
    try:
        image = plots.is_image(model.event_shape)
        W = model.filter_weights()
        if image and W is not None:
            out["filters"] = filters_figure(W, model.event_shape, folder / "filters.png")
        x_test, _ = data.split("test")
        x_test = x_test[:10].to(model.device)
        steps = model.spec.sampling.steps
        if image:
            marks = sorted({0, 1, 10, 100, steps} | {m for m in (1000, 10_000) if m < steps})
            _, shots = model.run_chains(x_test.shape[0], max(marks), start=x_test, record=marks)
            out["gibbs_chains"] = chains_figure(shots, marks, folder / "gibbs_chains.png")
            samples = model.sample(100, mean=True)
            out["samples"] = plots.save_samples(samples, folder / "samples.png",
                                                f"samples: E[v | h] after {steps} Gibbs steps from random states")
        else:
            samples = model.sample(1000)
            ref = data.split("test")[0]
            out["samples"] = plots.save_samples(samples, folder / "samples.png",
                                                f"{steps} Gibbs steps per sample", reference=ref)
    finally:
        torch.set_rng_state(gen)
    return out


def diagnostic_figures(model: EnergyFamily, idata: Any, folder: Path,
                       labels: dict[str, str] | None = None) -> dict[str, Path]:
    """Trace and rank plots of the chain statistics (for ``ppgen diagnose``)."""
    az = arviz()
    folder = Path(folder)
    chains = idata.sample_stats
    names = [k for k in CHAIN_STATS if k in chains]
    out = {}
    with warnings.catch_warnings():
        # ArviZ's plotting code trips matplotlib deprecations that are not ours to fix
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        rows = panel_count(chains, names)
        fig, axes = subplots(rows, 2, figsize=(9, 2.0 * rows + 0.8), squeeze=False)
        az.plot_trace(chains, var_names=names, compact=False, axes=axes)
        label_trace_axes(axes)
        fig.suptitle("Gibbs chains: trace of chain statistics", fontsize=10)
        fig.tight_layout()
        out["trace"] = save_figure(fig, folder / "gibbs_trace.png")
        # a grid of two columns: a strip of four rank plots side by side is too thin to read
        fig, axes = grid_axes(panel_count(chains, names), panel=(4.0, 2.8), max_cols=2)
        for ax in axes:
            ax.title.set_fontsize(10)
            ax.xaxis.label.set_fontsize(8)
            ax.yaxis.label.set_fontsize(8)
            ax.tick_params(labelsize=7)
        az.plot_rank(chains, var_names=names, ax=axes)
        fig.suptitle("Gibbs chains: rank plots (uniform when the chains mix)", fontsize=10)
        fig.tight_layout()
        out["rank"] = save_figure(fig, folder / "gibbs_rank.png")
    return out


def filters_figure(W: torch.Tensor, event_shape: tuple[int, ...], path: Path, n: int = 100) -> Path:
    """The first ``n`` hidden units' incoming weights as images (each scaled to its own range): the
    "weight filters" mosaic."""
    W = W.detach().float().cpu()[:, :n].t()  # (n, D)
    lo = W.min(1, keepdim=True).values
    hi = W.max(1, keepdim=True).values
    imgs = ((W - lo) / (hi - lo).clamp_min(1e-8)).reshape(-1, *event_shape)
    fig, ax = plots.subplots(figsize=(7, 7))
    plots.show_grid(ax, imgs, title=f"weight filters of the first {imgs.shape[0]} hidden units")
    return plots.save_figure(fig, path)


def chains_figure(shots: list[torch.Tensor], marks: list[int], path: Path) -> Path:
    """Rows: chains started at test examples; columns: E[v | h] after k Gibbs steps."""
    n = shots[0].shape[0]
    grid = torch.stack(shots, 1).reshape(n * len(shots), *shots[0].shape[1:]).cpu()
    fig, ax = plots.subplots(figsize=(1.0 * len(marks) + 0.8, 1.0 * n + 0.6))
    ax.imshow(plots.image_grid(grid, nrow=len(marks)), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    w = shots[0].shape[-1] + 1
    ax.set_xticks([1 + w * (j + 0.5) for j in range(len(marks))], [f"k={m}" for m in marks], fontsize=7)
    ax.set_yticks([])
    ax.set_title("samples after k Gibbs steps, chains started at test examples", fontsize=9)
    return plots.save_figure(fig, path)
