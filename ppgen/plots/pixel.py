"""The autoregressive families' figures: samples drawn pixel by pixel (one row per class when
class-conditional) and completions of the lower half of test images."""

from __future__ import annotations

from pathlib import Path

import torch

from ppgen.data.core import Dataset
from ppgen.models.autoregressive.pixelcnn import PixelFamily
from ppgen.plots import common as plots


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
