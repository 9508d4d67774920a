"""Checks against a toy target's known truth: the Kolmogorov-Smirnov distance of 1-D samples to an exact CDF
(or between two samples), and mode coverage on the Gaussian mixtures ``ring8`` and ``grid25``.

References:
    Srivastava, Valkov, Russell, Gutmann & Sutton (2017), VEEGAN, NeurIPS; arXiv:1705.07761.
    Lin, Khetan, Fanti & Oh (2018), PacGAN, NeurIPS; arXiv:1712.04086.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

#: The share of samples a mode needs to count as covered: PacGAN's 20 of 2,500.
MODE_MIN_SHARE = 20 / 2500


def ks_statistic(samples: torch.Tensor, cdf: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """The one-sample Kolmogorov-Smirnov statistic sup_x |F_n(x) - F(x)| of 1-D ``samples`` against an
    exact ``cdf``: with the order statistics x_(1..n), max over i of i/n - F(x_(i)) and F(x_(i)) - (i-1)/n."""
    x = torch.as_tensor(samples, dtype=torch.float64).reshape(-1).sort().values
    n = x.numel()
    f = torch.as_tensor(cdf(x), dtype=torch.float64)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(torch.maximum(i / n - f, f - (i - 1) / n).max())


def ks_two_sample(a: torch.Tensor, b: torch.Tensor) -> float:
    """The two-sample Kolmogorov-Smirnov statistic sup_x |F_a(x) - F_b(x)| of two 1-D samples (the
    empirical CDFs compared at every point of either sample, ties included)."""
    a = torch.as_tensor(a, dtype=torch.float64).reshape(-1).sort().values
    b = torch.as_tensor(b, dtype=torch.float64).reshape(-1).sort().values
    points = torch.cat([a, b])
    fa = torch.searchsorted(a, points, right=True).double() / a.numel()
    fb = torch.searchsorted(b, points, right=True).double() / b.numel()
    return float((fa - fb).abs().max())


def mode_coverage(samples: torch.Tensor, centres: torch.Tensor, std: float, n_sigma: float = 3.0,
                  min_share: float = MODE_MIN_SHARE) -> dict[str, Any]:
    """Mode collapse on a mixture of isotropic Gaussians: a sample is of high quality if it lies within
    ``n_sigma`` standard deviations of its nearest centre (Srivastava et al. 2017); a mode is covered if
    at least ``min_share`` of all samples are high-quality samples nearest to it (PacGAN's 20 of 2,500).
    Returns ``modes_covered``, ``high_quality_share`` and the per-mode ``counts``."""
    x = torch.as_tensor(samples, dtype=torch.float64)
    c = torch.as_tensor(centres, dtype=torch.float64)
    d = torch.cdist(x, c)
    dist_min, nearest = d.min(1)
    good = dist_min <= n_sigma * std
    counts = torch.bincount(nearest[good], minlength=len(c))
    need = max(1, math.ceil(min_share * x.shape[0] - 1e-9))
    return {
        "modes_covered": int((counts >= need).sum()),
        "high_quality_share": float(good.double().mean()),
        "counts": counts.tolist(),
    }


def toy2d_modes(data_spec: Any) -> tuple[torch.Tensor, float] | None:
    """(centres, std) of a Gaussian-mixture ``toy2d`` spec (ring8, grid25), else ``None``."""
    if data_spec is None or data_spec.name != "toy2d" or data_spec.distribution is None:
        return None
    from ppgen.data.toy import TOY2D

    toy = TOY2D.get(data_spec.distribution)
    if toy is None or toy.centres is None or toy.std is None:
        return None
    return toy.centres, toy.std
