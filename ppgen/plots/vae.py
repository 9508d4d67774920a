"""The VAE's figures (the lecture's pictures): samples E[x|z] with z from the prior, reconstructions,
latent traversals and, for a 2-D latent, the learned manifold and the posterior means of test examples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ppgen.data.core import Dataset
from ppgen.models.vae import VAE
from ppgen.plots.common import image_grid, is_image, save_figure, save_samples, scatter_by_label, show_grid, subplots


def figures(model: VAE, folder: Path, data: Dataset) -> dict[str, Path]:
    """What ``ppgen fit`` draws for a VAE (:func:`vae_figures`)."""
    return vae_figures(model, data, folder)


@torch.random.fork_rng(devices=[])
@torch.no_grad()
def vae_figures(model: Any, data: Any, folder: str | Path, n: int = 100, seed: int = 0) -> dict[str, Path]:
    """samples.png, reconstructions.png, traversals.png and, for a 2-D latent, manifold.png."""
    folder = Path(folder)
    torch.manual_seed(seed)
    out: dict[str, Path] = {}
    image = is_image(model.event_shape)
    x_test, y_test = data.split("test")
    x_test = x_test.to(model.device)
    samples = model.sample(n, mean=image)
    out["samples"] = save_samples(samples, folder / "samples.png", "samples: E[x|z], z ~ p(z)" if image else "samples",
                                  reference=None if image else x_test)
    if image:
        out["reconstructions"] = reconstructions(model, x_test[:10], folder / "reconstructions.png")
        out["traversals"] = traversals(model, folder / "traversals.png")
        if model.z_dim == 2:
            out["manifold"] = manifold(model, folder / "manifold.png")
    if model.z_dim == 2:
        out["latent"] = latent_scatter(model, x_test[:2000], y_test[:2000] if y_test is not None else None,
                                       folder / "latent.png")
    return out


@torch.no_grad()
def reconstructions(model: Any, x: torch.Tensor, path: str | Path) -> Path:
    """Top row: data; bottom row: E[x|z] at the posterior mean z = E[z|x]."""
    recon = model.decode_mean(model.posterior(x).mean)
    both = torch.cat([x, recon]).cpu()
    fig, ax = subplots(figsize=(0.9 * len(x), 2.1))
    show_grid(ax, both, nrow=len(x), title="data (top) and reconstructions (bottom)")
    return save_figure(fig, path)


@torch.no_grad()
def traversals(model: Any, path: str | Path, dims: int = 8, steps: int = 9, span: float = 2.5) -> Path:
    """The lecture's "vary z1, vary z2": row i moves latent dimension i from -span to +span with the
    others held at zero (the prior mean). Rows are labelled ``z[0]``, ``z[1]``, ...: the dims counted from 0,
    as the posterior figure and the summary count them."""
    dims = min(dims, model.z_dim)
    values = torch.linspace(-span, span, steps)
    z = torch.zeros(dims, steps, model.z_dim, device=model.device)
    for i in range(dims):
        z[i, :, i] = values
    imgs = model.decode_mean(z.reshape(-1, model.z_dim)).cpu()
    fig, ax = subplots(figsize=(0.8 * steps + 0.6, 0.8 * dims + 0.4))
    ax.imshow(image_grid(imgs, nrow=steps), cmap="gray", vmin=0, vmax=1)
    h = imgs.shape[-2] + 1
    ax.set_yticks([1 + h * (i + 0.5) for i in range(dims)], [f"z[{i}]" for i in range(dims)])
    w = imgs.shape[-1] + 1
    ax.set_xticks([1 + w * (j + 0.5) for j in range(steps)], [f"{v:+.1f}" for v in values.tolist()], fontsize=7)
    ax.set_title(f"traversals: one latent dimension from {-span} to {span}, the others at 0", fontsize=9)
    return save_figure(fig, path)


@torch.no_grad()
def manifold(model: Any, path: str | Path, steps: int = 20) -> Path:
    """The 2-D latent manifold: E[x|z] on a grid of z at the prior's quantiles 0.05..0.95 (Kingma &
    Welling 2013, fig. 4), z[0] left to right, z[1] bottom to top."""
    q = torch.linspace(0.05, 0.95, steps)
    vals = torch.distributions.Normal(0.0, 1.0).icdf(q)
    z1, z2 = torch.meshgrid(vals, vals.flip(0), indexing="xy")
    z = torch.stack([z1.reshape(-1), z2.reshape(-1)], 1).to(model.device)
    imgs = model.decode_mean(z).cpu()
    fig, ax = subplots(figsize=(8, 8))
    show_grid(ax, imgs, nrow=steps, title="learned 2-D manifold: E[x|z] on a grid of prior quantiles (z[0] across, z[1] up)")
    return save_figure(fig, path)


@torch.no_grad()
def latent_scatter(model: Any, x: torch.Tensor, y: torch.Tensor | None, path: str | Path) -> Path:
    """Posterior means E[z|x] of test examples, coloured by label."""
    z = model.posterior(x).mean.cpu()
    fig, ax = subplots(figsize=(6, 5.5))
    scatter_by_label(fig, ax, z.numpy(), None if y is None else y.cpu().numpy())
    ax.set_xlabel("z[0] (posterior mean)")
    ax.set_ylabel("z[1] (posterior mean)")
    ax.set_title("posterior means of test examples", fontsize=10)
    return save_figure(fig, path)
