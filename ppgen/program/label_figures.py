"""Figures of programs with a label site or a deterministic code.

- ``style_transfer.png`` (Kingma et al. 2014, fig. 1): for each test example, its style z from the guide
  (q(z | x, y) at the example's label) and E[x | z, y = c] for every class c: one z, every y (not drawn
  where the decoder has one network per class, ``per: y``: there z has no meaning shared by the classes);
- ``code_space.png``: the deterministic codes (a ``delta`` guide: an autoencoder) of test examples, the
  first two principal components coloured by label;
- ``code_samples.png``: E[x | z] for z drawn from N(0, I) and from a Normal fitted to the training codes:
  an autoencoder's decoder is trained only on the codes of data, so a code drawn from a Normal need not
  decode to a digit (the lecture: "useful for classification/transformation, but not generation").

References:
    Kingma, Rezende, Mohamed & Welling (2014), Semi-Supervised Learning with Deep Generative Models, NeurIPS.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ppgen.plots.common import image_grid, save_figure, show_grid, subplots


def style_sites(model: Any) -> list[Any]:
    """The guide's local continuous sites other than the labels (the "style" of an example)."""
    prog = model.program
    y = prog.y_site.name if prog.y_site is not None else None
    return [g for g in prog.local_guide if not g.enumerate and g.name != y and g.name in prog.model_by_name]


def style_is_shared(model: Any) -> bool:
    """Whether one style z means the same across classes: not where a network reading a style site has one
    set of weights per class of the label (``per: y``), since then each class decodes z its own way."""
    prog = model.program
    if prog.y_site is None:
        return False
    style = {s.name for s in style_sites(model)}
    for _, inputs, _ in prog.networks.values():
        if any(i.selects and i.site == prog.y_site.name for i in inputs) and any(i.site in style for i in inputs):
            return False
    return True


@torch.no_grad()
def style_transfer(model: Any, x: torch.Tensor, y: torch.Tensor, path: Path) -> Path:
    """Row i: test example i, then E[x | z_i, y = c] for c = 0..K-1, z_i the guide's point for (x_i, y_i)."""
    prog = model.program
    ysite = prog.y_site
    k = ysite.options["classes"]
    point = model.encode(x, y)
    classes = torch.arange(k, device=x.device)
    if ysite.entry.name == "OneHotCategorical":
        classes = torch.nn.functional.one_hot(classes, k).to(x.dtype)
    rows = []
    for i in range(x.shape[0]):
        given = {s.name: point[s.name][i].expand(k, *point[s.name].shape[1:]) for s in style_sites(model)}
        given[ysite.name] = classes
        rows.append(torch.cat([x[i:i + 1], model.sample(k, given=given, mean=True)]))
    grid = torch.cat(rows).cpu()
    fig, ax = subplots(figsize=(0.8 * (k + 1) + 0.4, 0.8 * x.shape[0] + 0.6))
    ax.imshow(image_grid(grid, nrow=k + 1), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    w = grid.shape[-1] + 1
    ax.set_xticks([1 + w * (j + 0.5) for j in range(k + 1)], ["input"] + [f"{ysite.name}={c}" for c in range(k)], fontsize=7)
    ax.set_yticks([])
    ax.set_title(f"one style z per row (from q(z | x, {ysite.name}) of the input), every class", fontsize=9)
    return save_figure(fig, path)


def _codes(model: Any, x: torch.Tensor, site: str, batch: int = 1000) -> torch.Tensor:
    return torch.cat([model.encode(x[s:s + batch])[site].reshape(min(batch, x.shape[0] - s), -1)
                      for s in range(0, x.shape[0], batch)])


@torch.no_grad()
def code_space(model: Any, site: str, x: torch.Tensor, y: torch.Tensor | None, path: Path) -> Path:
    """The codes of ``x`` in their first two principal components (the codes themselves when 2-D)."""
    z = _codes(model, x, site).cpu().double()
    if z.shape[1] > 2:
        centred = z - z.mean(0)
        _, s, v = torch.linalg.svd(centred, full_matrices=False)
        z2 = centred @ v[:2].T
        share = float((s[:2] ** 2).sum() / (s ** 2).sum())
        label = f"first two principal components ({share:.0%} of the variance)"
    else:
        z2, label = z, "the code"
    fig, ax = subplots(figsize=(6, 5.5))
    # a colour map only for labels: without them matplotlib warns that it has nothing to map
    colours = {} if y is None else {"c": y.cpu(), "cmap": "tab10"}
    sc = ax.scatter(z2[:, 0], z2[:, 1], s=4, alpha=0.7, **colours)
    if y is not None:
        fig.colorbar(sc, ax=ax, label="label")
    ax.set_title(f"codes {site} of test examples: {label}", fontsize=9)
    return save_figure(fig, path)


@torch.no_grad()
def code_samples(model: Any, site: str, train_x: torch.Tensor, path: Path, n: int = 16, seed: int = 0) -> Path:
    """Decoded draws from N(0, I) and from N(mean, covariance) of the training codes, beside decoded
    codes of training examples (what the decoder was trained on)."""
    gen = torch.Generator().manual_seed(seed)
    z = _codes(model, train_x, site)
    d = z.shape[1]
    shape = model.program.model_by_name[site].shape
    mean, cov = z.mean(0), torch.cov(z.T).reshape(d, d) + 1e-5 * torch.eye(d, device=z.device)
    prior = torch.randn(n, d, generator=gen).to(z.device)
    fitted = mean + torch.randn(n, d, generator=gen).to(z.device) @ torch.linalg.cholesky(cov).T
    pick = torch.randperm(z.shape[0], generator=gen)[:n].to(z.device)

    def decode(codes: torch.Tensor) -> torch.Tensor:
        return model.sample(codes.shape[0], given={site: codes.reshape(-1, *shape)}, mean=True).cpu()

    panels = [("codes of training examples, decoded", decode(z[pick])),
              ("z ~ N(0, I), decoded", decode(prior)),
              ("z ~ N(mean, covariance of the training codes), decoded", decode(fitted))]
    fig, axes = subplots(len(panels), 1, figsize=(0.7 * n + 0.5, 2.0 * len(panels)))
    for ax, (title, imgs) in zip(axes, panels):
        show_grid(ax, imgs, nrow=n, title=title)
    return save_figure(fig, path)
