"""Figures of a program whose data site is a flow, or whose density of 2-D data is exact.

- ``density.png``: exp log p(x) on a grid over the data, the test data drawn over it (2-D data, a program
  whose log p(x) is exact: a flow likelihood, a Gaussian...);
- ``warp.png``: a grid of the base space and its image under the flow's layers, the data beside it: how the
  flow bends the base into the data (a 2-D flow likelihood without a context);
- samples are ``samples.png`` (:mod:`ppgen.program.figures`): draws over the data for 2-D data, a grid of
  draws for images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ppgen.plots.common import save_figure, subplots
from ppgen.program import flows, sites


def flow_figures(model: Any, data: Any, folder: Path) -> dict[str, Path]:
    prog = model.program
    out: dict[str, Path] = {}
    x_site = prog.x_site
    if tuple(x_site.shape) != (2,) or tuple(model.event_shape) != (2,):
        return out
    x_test, _ = data.split("test")
    x_test = x_test.to(model.device)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(0)
        if prog.exact:
            out["density"] = density(model, x_test, folder / "density.png")
        if flows.is_flow(x_site) and "context" not in x_site.args and not prog.model_by_name[x_site.name].is_global:
            out["warp"] = warp(model, x_test, folder / "warp.png")
    return out


def _limits(x: torch.Tensor, margin: float = 0.15) -> tuple[tuple[float, float], tuple[float, float]]:
    lo, hi = x.min(0).values.cpu(), x.max(0).values.cpu()
    pad = (hi - lo) * margin + 1e-3
    return (float(lo[0] - pad[0]), float(hi[0] + pad[0])), (float(lo[1] - pad[1]), float(hi[1] + pad[1]))


def density(model: Any, x: torch.Tensor, path: Path, steps: int = 150) -> Path:
    """The model's density p(x) on a grid, with the test data over it."""
    (x0, x1), (y0, y1) = _limits(x)
    gx = torch.linspace(x0, x1, steps, device=x.device)
    gy = torch.linspace(y0, y1, steps, device=x.device)
    xx, yy = torch.meshgrid(gx, gy, indexing="xy")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    logp = torch.cat([model.log_likelihood(chunk)[0] for chunk in pts.split(4096)])
    dens = logp.exp().reshape(steps, steps).cpu().numpy()
    # the colour scale stops at the 99.5th percentile, so that one narrow peak does not hide the rest
    top = float(np.quantile(dens, 0.995)) or None
    fig, axes = subplots(1, 2, figsize=(10, 4.6))
    axes[0].imshow(dens, origin="lower", extent=(x0, x1, y0, y1), aspect="auto", cmap="magma", vmin=0, vmax=top)
    axes[0].set_title("model density p(x)", fontsize=10)
    pts_np = x.reshape(len(x), -1).cpu().numpy()
    axes[1].imshow(dens, origin="lower", extent=(x0, x1, y0, y1), aspect="auto", cmap="magma", vmin=0, vmax=top)
    axes[1].scatter(pts_np[:, 0], pts_np[:, 1], s=2, color="cyan", alpha=0.5)
    axes[1].set_title("model density with the test data", fontsize=10)
    for ax in axes:
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
    return save_figure(fig, path)


def warp(model: Any, x: torch.Tensor, path: Path, lines: int = 15, points: int = 200, span: float = 3.0) -> Path:
    """Left: lines of a grid in the base space (its standard coordinates, from -span to span) over base
    draws; right: their images under the flow's layers over the data."""
    prog = model.program
    site = prog.x_site
    env = sites.Env(prog, model._mods())
    d = sites.site_dist(site, sites.site_args(site, env), False)
    d = getattr(d, "density", d)  # a dequantized flow: its density
    base = d.base_dist
    inner = getattr(base, "base_dist", base)  # Normal, Laplace, StudentT, Cauchy: a location and a scale
    loc = inner.loc.expand(base.batch_shape + base.event_shape).reshape(-1, 2)[0]
    scale = inner.scale.expand(base.batch_shape + base.event_shape).reshape(-1, 2)[0]
    t = torch.linspace(-span, span, points, device=x.device)
    grid = []
    for v in torch.linspace(-span, span, lines, device=x.device):
        grid.append(torch.stack([t, v.expand(points)], 1))
        grid.append(torch.stack([v.expand(points), t], 1))
    u = torch.stack(grid) * scale + loc  # (2 * lines, points, 2)
    y = u
    for tr in d.transforms:
        y = tr(y)
    draws = base.sample((1000,)).reshape(-1, 2).cpu().numpy()
    fig, axes = subplots(1, 2, figsize=(10, 4.6))
    axes[0].scatter(draws[:, 0], draws[:, 1], s=2, color="0.7")
    for line in u.cpu().numpy():
        axes[0].plot(line[:, 0], line[:, 1], lw=0.7, color="tab:blue")
    axes[0].set_title("base space: a grid and base draws", fontsize=10)
    data = x.reshape(len(x), -1).cpu().numpy()
    axes[1].scatter(data[:, 0], data[:, 1], s=2, color="0.7")
    for line in y.cpu().numpy():
        if np.isfinite(line).all():
            axes[1].plot(line[:, 0], line[:, 1], lw=0.7, color="tab:blue")
    (x0, x1), (y0, y1) = _limits(x, 0.4)
    axes[1].set_xlim(x0, x1)
    axes[1].set_ylim(y0, y1)
    axes[1].set_title("the grid pushed through the flow, and the data", fontsize=10)
    return save_figure(fig, path)
