"""The autoregressive families' figures: samples drawn pixel by pixel (one row per class when
class-conditional) and completions of the lower half of test images; for ``ppgen diagnose`` the class
posterior of a class-conditional model or the per-pixel negative log-likelihood."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ppgen.data.core import Dataset
from ppgen.models.autoregressive.base import PixelFamily
from ppgen.plots import common as plots
from ppgen.plots.curves import loss_trace_figure
from ppgen.plots.predictive import pixel_nll_figure


def figures(model: PixelFamily, folder: Path, data: Dataset) -> dict[str, Path]:
    """``samples.png`` (one row per class when conditional) and ``completions.png`` (test images
    with the lower half drawn by the model)."""
    folder = Path(folder)
    out: dict[str, Path] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if model.num_classes is not None:
            k = min(model.num_classes, 10)
            y = torch.arange(k, device=model.device).repeat_interleave(8)
            x = model.sample(len(y), y=y)
            out["samples"] = plots.save_samples(x, folder / "samples.png", "samples, one row per class", nrow=8)
        else:
            x = model.sample(64)
            out["samples"] = plots.save_samples(x, folder / "samples.png", "samples drawn pixel by pixel", nrow=8)
        x_test, y_test = data.split("test")
        out["completions"] = completion_figure(model, x_test[:8], y_test[:8] if y_test is not None else None,
                                               folder / "completions.png")
    return out


@torch.no_grad()
def completion_figure(model: PixelFamily, x: torch.Tensor, y: torch.Tensor | None, path: Path, draws: int = 3) -> Path:
    """Rows: the test images, their upper halves (the hidden lower half checkered), then ``draws``
    completions."""
    x = x.to(model.device)
    m = x.shape[0]
    rows = model.height // 2
    shown = x.clone()
    # The hidden half as a grey checkerboard: unlike flat grey it cannot be mistaken for the padding.
    ii, jj = torch.meshgrid(torch.arange(model.height - rows), torch.arange(model.width), indexing="ij")
    shown[:, :, rows:, :] = (0.3 + 0.4 * ((ii + jj) % 2)).to(shown)
    reps = x.repeat(draws, 1, 1, 1)
    y_rep = y.to(model.device).repeat(draws) if (y is not None and model.num_classes is not None) else None
    done = model.complete(reps, rows, y=y_rep)
    grid = torch.cat([x, shown, done]).cpu()
    fig, ax = plots.subplots(figsize=(1.0 * m + 0.5, 1.0 * (draws + 2) + 0.5))
    plots.show_grid(ax, grid, nrow=m, title=f"test images, upper halves, {draws} completions of the lower half")
    return plots.save_figure(fig, path)


def diagnostic_figures(model: PixelFamily, idata: Any, folder: Path,
                       labels: dict[str, str] | None = None) -> dict[str, Path]:
    """What ``ppgen diagnose`` draws for an autoregressive model: for a class-conditional one
    ``posterior.png``, p(y | x) over the classes for the first test images (its posterior over the label,
    by Bayes' rule); for an unconditional one ``pixel_nll.png``, the mean negative log-likelihood of each
    pixel (:func:`~ppgen.plots.predictive.pixel_nll_figure`); and ``loss_trace.png``, its axis named by
    ``labels`` (:func:`~ppgen.plots.metric_labels.metric_labels` of the run's recipe)."""
    folder = Path(folder)
    out: dict[str, Path] = {}
    if "posterior" in idata.groups():
        draws = idata.posterior.sizes["chain"] * idata.posterior.sizes["draw"]
        out["posterior"] = plots.posterior_figure(
            idata, folder / "posterior.png", "y", n_obs=8,
            title=f"class posterior p(y | x) by Bayes' rule for the first test images (share of {draws} draws)",
            probability="p(y | x)")
    elif "log_likelihood" in idata.groups() and "pixel" in idata.log_likelihood["x"].dims:
        out["pixel_nll"] = pixel_nll_figure(idata, folder / "pixel_nll.png")
    trace = loss_trace_figure(idata, folder / "loss_trace.png", labels)
    if trace is not None:
        out["loss_trace"] = trace
    return out
