"""The README's picture from the runs that `make demo` writes:

    python examples/readme_figure.py runs/demo/vae runs/demo/vae2d docs/demo.png

Left: 100 samples E[x|z], z ~ N(0, I), of the 50-d VAE; middle: test images over their reconstructions;
right: the learned 2-D manifold of the 2-d VAE.
"""

from __future__ import annotations

import sys

import torch

import ppgen
from ppgen.plots.common import save_figure, show_grid, subplots


def main(vae: str, vae2d: str, out: str) -> None:
    big, small = ppgen.open_run(vae), ppgen.open_run(vae2d)
    fig, axes = subplots(1, 3, figsize=(15, 5.2), gridspec_kw={"width_ratios": [1, 1, 1]})
    show_grid(axes[0], big.samples(100, display=True), nrow=10, title="samples of the 50-d VAE (E[x|z], z ~ N(0, I))")
    x, _ = big.data.split("test")
    with torch.no_grad():
        recon = big.model.decode_mean(big.model.posterior(x[:50]).mean)
    rows = torch.cat([torch.cat([x[i : i + 10], recon[i : i + 10]]) for i in range(0, 50, 10)])
    show_grid(axes[1], rows, nrow=10, title="test images, each row over its reconstruction")
    q = torch.linspace(0.05, 0.95, 15)
    vals = torch.distributions.Normal(0.0, 1.0).icdf(q)
    z1, z2 = torch.meshgrid(vals, vals.flip(0), indexing="xy")
    with torch.no_grad():
        imgs = small.model.decode_mean(torch.stack([z1.reshape(-1), z2.reshape(-1)], 1))
    show_grid(axes[2], imgs, nrow=15, title="the 2-d VAE's manifold: vary z1 across, z2 up")
    fig.tight_layout()
    print(save_figure(fig, out))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
