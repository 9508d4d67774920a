"""Data-driven starts: k-means++ seeding and Lloyd iterations, the centres and labels from which the
mixture families (and the model language's mixtures fitted by EM) start.

References:
    Arthur & Vassilvitskii (2007), k-means++: the advantages of careful seeding, SODA.
    Lloyd (1982), Least squares quantization in PCM, IEEE Transactions on Information Theory 28.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def kmeans(x: torch.Tensor, k: int, generator: torch.Generator, restarts: int = 10,
           iters: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means++ seeding (Arthur & Vassilvitskii 2007) and Lloyd iterations, the best of ``restarts`` by
    within-cluster sum of squares (one seeding can put two centres in one cluster and Lloyd cannot
    move them apart). Returns centres (k, D), sorted by the first coordinate, and each point's label."""
    x = x.double()
    n = x.shape[0]
    best: tuple[float, torch.Tensor] | None = None
    for _ in range(restarts):
        centres = x[torch.randint(n, (1,), generator=generator)]
        while centres.shape[0] < k:
            d2 = torch.cdist(x, centres).min(1).values ** 2
            probs = d2 / d2.sum() if d2.sum() > 0 else torch.full((n,), 1.0 / n, dtype=x.dtype)
            centres = torch.cat([centres, x[torch.multinomial(probs, 1, generator=generator)]])
        for _ in range(iters):
            label = torch.cdist(x, centres).argmin(1)
            moved = centres.clone()
            for j in range(k):
                if (label == j).any():
                    moved[j] = x[label == j].mean(0)
            if torch.equal(moved, centres):
                break
            centres = moved
        inertia = float((torch.cdist(x, centres).min(1).values ** 2).sum())
        if best is None or inertia < best[0]:
            best = (inertia, centres)
    assert best is not None
    centres = best[1][torch.argsort(best[1][:, 0])]
    return centres, torch.cdist(x, centres).argmin(1)
