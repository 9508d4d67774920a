"""Figures of a program, chosen from its shape.

- ``samples.png``: a grid of E[x | latents] at ancestral draws for images; draws over the data otherwise;
- ``samples_by_class.png``: one row per class of a label site (``y``, or a local Categorical latent, fixed;
  everything else drawn);
- ``reconstructions.png``: data and E[x | latents] at the guide's point, where the guide encodes x;
- ``traversals.png``: one latent coordinate moved from -2.5 to 2.5 prior standard deviations around its
  prior mean, the others at their means, for the first continuous local latent whose prior depends on
  no site (a Normal, a Laplace, a learned mixture: its moments are read from prior draws);
- ``manifold.png``: E[x | z] on a grid of prior quantiles when that latent has two dimensions
  (Kingma & Welling 2013, fig. 4), and ``latent.png``, the guide's locations of test examples coloured
  by label.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ppgen.plots.common import image_grid, is_image, save_figure, save_samples, scatter_by_label, show_grid, subplots
from ppgen.program import flows, sampling, sites


def _top_latent(model: Any) -> Any:
    """The first continuous local latent with one event dimension whose prior depends on no site: its
    traversals and manifold are pictures of the prior's space."""
    prog = model.program
    for m in prog.local_model:
        if not m.latent or m.entry.discrete or len(m.shape) != 1:
            continue
        if all(r.name not in prog.model_by_name for node in m.args.values() for r in _refs(node)):
            return m
    return None


def _refs(node: Any) -> list:
    from ppgen.program import expr

    return expr.references(node)


@torch.no_grad()
def program_figures(model: Any, data: Any, folder: Path, n: int = 100, seed: int = 0) -> dict[str, Path]:
    prog = model.program
    out: dict[str, Path] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        image = is_image(model.event_shape)
        x_test, y_test = data.split("test")
        x_test = x_test.to(model.device)
        title = "samples: E[x | latents], latents from the model" if image else "samples"
        if image and (flows.is_flow(prog.x_site) or prog.x_site.options.get("dequantize") is not None):
            title = "samples: draws from the model"  # a flow's x has no closed-form mean: drawn
        out["samples"] = save_samples(model.display_samples(n), folder / "samples.png", title,
                                      reference=None if image else x_test)
        label = _label_site(model)
        if label is not None:
            out["samples_by_class"] = by_class(model, label, folder / "samples_by_class.png", x_test if not image else None)
        encodes = [g for g in prog.local_guide if not g.enumerate]
        if prog.y_site is not None and y_test is not None and image:
            from ppgen.program import label_figures

            if label_figures.style_sites(model) and label_figures.style_is_shared(model):
                out["style_transfer"] = label_figures.style_transfer(model, x_test[:8], y_test[:8].to(model.device),
                                                                     folder / "style_transfer.png")
        if prog.delta_locals and image:
            from ppgen.program import label_figures

            site = prog.delta_locals[0]
            out["code_space"] = label_figures.code_space(model, site, x_test[:2000], y_test[:2000] if y_test is not None
                                                         else None, folder / "code_space.png")
            out["code_samples"] = label_figures.code_samples(model, site, data.split("train")[0][:5000].to(model.device),
                                                             folder / "code_samples.png")
        if encodes and image:
            y = y_test[:10].to(model.device) if y_test is not None and prog.y_site is not None else None
            out["reconstructions"] = reconstructions(model, x_test[:10], y, folder / "reconstructions.png")
        top = _top_latent(model)
        if top is not None and image:
            out["traversals"] = traversals(model, top, folder / "traversals.png")
            if top.shape == (2,):
                out["manifold"] = manifold(model, top, folder / "manifold.png")
        if top is not None and top.shape == (2,) and top.name in prog.guide_by_name:
            out["latent"] = latent_scatter(model, top, x_test[:2000], y_test[:2000] if y_test is not None else None,
                                           folder / "latent.png")
    return out


def _label_site(model: Any) -> Any:
    """The site whose classes get a row each: the labels y, else the first local Categorical latent."""
    prog = model.program
    if prog.y_site is not None:
        return prog.y_site
    return next((m for m in prog.local_model if m.entry.name in ("Categorical", "OneHotCategorical") and m.latent), None)


def by_class(model: Any, site: Any, path: Path, reference: torch.Tensor | None, per_class: int = 10) -> Path:
    """One row per class: draws with the label site fixed to that class."""
    k = site.options["classes"]
    onehot = site.entry.name == "OneHotCategorical"
    rows = [model.display_samples(per_class, given={site.name: torch.nn.functional.one_hot(torch.tensor(c), k).float()
                                                    if onehot else c}) for c in range(k)]
    if is_image(model.event_shape):
        grid = torch.cat(rows).cpu()
        fig, ax = subplots(figsize=(0.8 * per_class + 0.6, 0.8 * k + 0.4))
        ax.imshow(image_grid(grid, nrow=per_class), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        h = grid.shape[-2] + 1
        ax.set_yticks([1 + h * (i + 0.5) for i in range(k)], [f"{site.name}={i}" for i in range(k)], fontsize=7)
        ax.set_xticks([])
        ax.set_title(f"samples with {site.name} fixed, one row per class", fontsize=9)
        return save_figure(fig, path)
    fig, ax = subplots(figsize=(5.5, 5))
    if reference is not None:
        ref = reference.reshape(len(reference), -1).cpu()
        ax.scatter(ref[:, 0], ref[:, -1], s=3, color="0.75", label="data")
    for c, r in enumerate(rows):
        pts = r.reshape(len(r), -1).cpu()
        ax.scatter(pts[:, 0], pts[:, -1], s=8, label=f"{site.name}={c}")
    ax.legend(fontsize=7)
    ax.set_title(f"samples with {site.name} fixed", fontsize=9)
    return save_figure(fig, path)


def reconstructions(model: Any, x: torch.Tensor, y: torch.Tensor | None, path: Path) -> Path:
    """Top row: data; bottom row: E[x | latents] at the guide's point for those data."""
    recon = model.reconstruct(x, y)
    both = torch.cat([x, recon]).cpu()
    fig, ax = subplots(figsize=(0.9 * len(x), 2.1))
    show_grid(ax, both, nrow=len(x), title="data (top) and reconstructions (bottom)")
    return save_figure(fig, path)


def _prior_draws(model: Any, site: Any, n: int = 4000) -> torch.Tensor:
    """Draws of ``site`` from its prior (any continuous distribution: Normal, Laplace, a mixture...)."""
    env = sites.Env(model.program, model._mods())
    d = sites.site_dist(site, sites.site_args(site, env), False)
    return d.sample((n,)).reshape(n, *site.shape)


def _prior_loc_scale(model: Any, site: Any) -> tuple[torch.Tensor, torch.Tensor]:
    z = _prior_draws(model, site)
    return z.mean(0), z.std(0)


def _decode(model: Any, site: Any, z: torch.Tensor) -> torch.Tensor:
    """E[x | site = z] with the other latents at their most probable values."""
    prog = model.program
    values = sampling.ancestral(prog, model._mods(), z.shape[0], {site.name: z}, mean=True, point=True)
    return model._x_out(values[prog.x_site.name])


def traversals(model: Any, site: Any, path: Path, dims: int = 8, steps: int = 9, span: float = 2.5) -> Path:
    """The lecture's "vary z1, vary z2": row i moves coordinate i of ``site`` across its prior, the
    others at the prior mean."""
    loc, scale = _prior_loc_scale(model, site)
    d = site.shape[0]
    dims = min(dims, d)
    values = torch.linspace(-span, span, steps, device=loc.device)
    z = loc.expand(dims, steps, d).clone()
    for i in range(dims):
        z[i, :, i] = loc[i] + values * scale[i]
    imgs = _decode(model, site, z.reshape(-1, d)).cpu()
    fig, ax = subplots(figsize=(0.8 * steps + 0.6, 0.8 * dims + 0.4))
    ax.imshow(image_grid(imgs, nrow=steps), cmap="gray", vmin=0, vmax=1)
    h, w = imgs.shape[-2] + 1, imgs.shape[-1] + 1
    ax.set_yticks([1 + h * (i + 0.5) for i in range(dims)], [f"{site.name}{i + 1}" for i in range(dims)])
    ax.set_xticks([1 + w * (j + 0.5) for j in range(steps)], [f"{v:+.1f}" for v in values.tolist()], fontsize=7)
    ax.set_title(f"traversals of {site.name}: one coordinate from {-span} to {span} prior sd, the others at the prior mean",
                 fontsize=9)
    return save_figure(fig, path)


def manifold(model: Any, site: Any, path: Path, steps: int = 20) -> Path:
    """E[x | z] on a grid of the prior's quantiles 0.05..0.95 of each coordinate (Kingma & Welling 2013,
    fig. 4), z1 across, z2 up; the quantiles are read from prior draws, so any prior will do."""
    z = _prior_draws(model, site)
    q = torch.linspace(0.05, 0.95, steps, device=z.device)
    v1, v2 = torch.quantile(z[:, 0], q), torch.quantile(z[:, 1], q)
    z1, z2 = torch.meshgrid(v1, v2.flip(0), indexing="xy")
    grid = torch.stack([z1.reshape(-1), z2.reshape(-1)], 1)
    imgs = _decode(model, site, grid).cpu()
    fig, ax = subplots(figsize=(8, 8))
    show_grid(ax, imgs, nrow=steps, title=f"learned 2-D manifold: E[x | {site.name}] on a grid of prior quantiles")
    return save_figure(fig, path)


def latent_scatter(model: Any, site: Any, x: torch.Tensor, y: torch.Tensor | None, path: Path) -> Path:
    """The guide's point for ``site`` of test examples, coloured by label."""
    yy = y.to(x.device) if y is not None and model.program.y_site is not None else None
    z = model.encode(x, yy)[site.name].cpu()
    fig, ax = subplots(figsize=(6, 5.5))
    scatter_by_label(fig, ax, z.numpy(), None if y is None else y.cpu().numpy())
    ax.set_xlabel(f"{site.name}1")
    ax.set_ylabel(f"{site.name}2")
    ax.set_title("guide locations of test examples", fontsize=10)
    return save_figure(fig, path)
