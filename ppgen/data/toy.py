"""Toy distributions with known truth: 1-D densities with exact CDF and inverse CDF, and 2-D benchmarks.

1-D (``toy1d``, event shape (1,)):

- ``normal``: N(0, 1);
- ``exponential``: Exponential(rate 1);
- ``mixture``: 0.5 N(-2, 0.5^2) + 0.5 N(2, 0.5^2) (labels: the component).

Each is a :class:`Toy1D` with exact ``cdf(x)``, ``icdf(u)`` and ``log_prob(x)`` as torch functions, so a
generator can be compared with the exact inverse CDF (for a 1-D GAN the optimal generator of uniform
noise is ``icdf``).

2-D (``toy2d``, event shape (2,)):

- ``ring8``: 8 Gaussians evenly on a circle of radius 2 with std 0.02, the mode-collapse check of
  Metz et al., "Unrolled GANs" (2017) (labels: the component; see :data:`RING8_CENTRES`, :data:`RING8_STD`);
- ``grid25``: 25 Gaussians on the 5x5 grid {-4, -2, 0, 2, 4}^2 with std 0.05, as in Srivastava et al.,
  "VEEGAN" (2017) and Lin et al., "PacGAN" (2018) (labels: the component);
- ``moons``: scikit-learn's ``make_moons`` with noise 0.05 (labels: the moon);
- ``spiral``: two interleaved spiral arms, the "2spirals" density of Grathwohl et al., "FFJORD" (2019)
  (labels: the arm).

All samples are drawn from a fixed seed, so a spec always gives the same data; the checksum is the SHA-256
of the generating parameters.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ppgen.data.sources import Arrays, sha256_bytes, split_arrays
from ppgen.spec import DataSpec, SpecError

#: Seed of every toy sample.
TOY_SEED = 0
#: Default number of toy examples (train + val + test).
DEFAULT_N = 10_000
#: Bump when the generating code changes, so that checksums change with it.
TOY_VERSION = 1


# --------------------------------------------------------------------------- 1-D


@dataclass(frozen=True)
class Toy1D:
    """A 1-D distribution: a mixture of ``kind`` components (normal or exponential) with exact CDFs.

    ``weights``, ``locs`` and ``scales`` describe the components; for ``exponential`` the scale is
    1 / rate and the location is the left end of the support.
    """

    name: str
    kind: str  # "normal" | "exponential"
    weights: tuple[float, ...]
    locs: tuple[float, ...]
    scales: tuple[float, ...]

    def _params(self, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        kw = {"dtype": ref.dtype if ref.is_floating_point() else torch.float64, "device": ref.device}
        return torch.tensor(self.weights, **kw), torch.tensor(self.locs, **kw), torch.tensor(self.scales, **kw)

    def cdf(self, x: torch.Tensor) -> torch.Tensor:
        """P(X <= x), elementwise."""
        x = torch.as_tensor(x)
        w, loc, scale = self._params(x)
        z = (x.to(w.dtype).unsqueeze(-1) - loc) / scale
        if self.kind == "normal":
            comp = torch.special.ndtr(z)
        else:
            comp = -torch.expm1(-z.clamp(min=0))
        return (w * comp).sum(-1)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log density, elementwise."""
        x = torch.as_tensor(x)
        w, loc, scale = self._params(x)
        z = (x.to(w.dtype).unsqueeze(-1) - loc) / scale
        if self.kind == "normal":
            comp = -0.5 * z**2 - torch.log(scale) - 0.5 * math.log(2 * math.pi)
        else:
            comp = torch.where(z >= 0, -z - torch.log(scale), torch.full_like(z, -math.inf))
        return torch.logsumexp(torch.log(w) + comp, -1)

    def icdf(self, u: torch.Tensor, *, iters: int = 200) -> torch.Tensor:
        """The quantile function: x with cdf(x) = u. Closed form for one component, else bisection.

        ``u`` = 0 and 1 give the ends of the support (-inf or 0, and +inf); ``u`` outside [0, 1] gives NaN.
        Bisection runs in float64 on a bracket that holds all but 1e-300 of the mass and halves it
        ``iters`` times, so the result is exact to the precision of the returned dtype.
        """
        u = torch.as_tensor(u)
        out_dtype = u.dtype if u.is_floating_point() else torch.get_default_dtype()
        u64 = u.to(torch.float64)
        w, loc, scale = self._params(u64)
        if len(self.weights) == 1:
            if self.kind == "normal":
                x = loc[0] + scale[0] * torch.special.ndtri(u64)
            else:
                x = loc[0] - scale[0] * torch.log1p(-u64)
        else:
            # Bracket: every component's quantile at 1e-300 and 1 - 1e-300 lies inside.
            reach = 40.0 if self.kind == "normal" else 700.0
            lo = torch.full_like(u64, float((loc - reach * scale).min()) if self.kind == "normal" else float(loc.min()))
            hi = torch.full_like(u64, float((loc + reach * scale).max()))
            target = u64.clamp(0, 1)
            for _ in range(iters):
                mid = 0.5 * (lo + hi)
                below = self.cdf(mid) < target
                lo = torch.where(below, mid, lo)
                hi = torch.where(below, hi, mid)
                if bool(((hi - lo) <= 1e-15 * (1 + hi.abs())).all()):
                    break
            x = 0.5 * (lo + hi)
            left = -math.inf if self.kind == "normal" else float(loc.min())
            x = torch.where(u64 <= 0, torch.full_like(x, left), x)
            x = torch.where(u64 >= 1, torch.full_like(x, math.inf), x)
        x = torch.where((u64 < 0) | (u64 > 1) | torch.isnan(u64), torch.full_like(x, math.nan), x)
        return x.to(out_dtype)

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` float64 draws and the index of the component each came from."""
        w, loc, scale = self._params(torch.zeros((), dtype=torch.float64))
        comp = torch.multinomial(w, n, replacement=True, generator=generator)
        if self.kind == "normal":
            eps = torch.randn(n, generator=generator, dtype=torch.float64)
        else:
            eps = -torch.log1p(-torch.rand(n, generator=generator, dtype=torch.float64))
        return loc[comp] + scale[comp] * eps, comp


TOY1D: dict[str, Toy1D] = {
    "normal": Toy1D("normal", "normal", (1.0,), (0.0,), (1.0,)),
    "exponential": Toy1D("exponential", "exponential", (1.0,), (0.0,), (1.0,)),
    "mixture": Toy1D("mixture", "normal", (0.5, 0.5), (-2.0, 2.0), (0.5, 0.5)),
}


def toy1d(name: str) -> Toy1D:
    """The named 1-D distribution; an unknown name is a :class:`SpecError` listing the known ones."""
    try:
        return TOY1D[name]
    except KeyError:
        raise SpecError(
            f"data.distribution {name!r} is not a toy1d distribution; accepted: {', '.join(TOY1D)}"
        ) from None


# --------------------------------------------------------------------------- 2-D

#: The 8 centres of ``ring8``: (2 cos(2 pi k / 8), 2 sin(2 pi k / 8)), k = 0..7.
RING8_CENTRES = torch.tensor(
    [[2 * math.cos(2 * math.pi * k / 8), 2 * math.sin(2 * math.pi * k / 8)] for k in range(8)], dtype=torch.float64
)
#: The standard deviation of each ``ring8`` component.
RING8_STD = 0.02
#: The 25 centres of ``grid25``: {-4, -2, 0, 2, 4}^2, row-major in (x, y).
GRID25_CENTRES = torch.tensor([[float(a), float(b)] for a in (-4, -2, 0, 2, 4) for b in (-4, -2, 0, 2, 4)], dtype=torch.float64)
#: The standard deviation of each ``grid25`` component.
GRID25_STD = 0.05
MOONS_NOISE = 0.05
SPIRAL_NOISE = 0.1


@dataclass(frozen=True)
class Toy2D:
    """A 2-D toy distribution; ``centres`` and ``std`` are set for the Gaussian mixtures."""

    name: str
    num_classes: int | None
    centres: torch.Tensor | None = field(default=None, compare=False)
    std: float | None = None


TOY2D: dict[str, Toy2D] = {
    "ring8": Toy2D("ring8", 8, RING8_CENTRES, RING8_STD),
    "grid25": Toy2D("grid25", 25, GRID25_CENTRES, GRID25_STD),
    "moons": Toy2D("moons", 2),
    "spiral": Toy2D("spiral", 2),
}


def toy2d(name: str) -> Toy2D:
    """The named 2-D distribution; an unknown name is a :class:`SpecError` listing the known ones."""
    try:
        return TOY2D[name]
    except KeyError:
        raise SpecError(
            f"data.distribution {name!r} is not a toy2d distribution; accepted: {', '.join(TOY2D)}"
        ) from None


def sample_toy2d(name: str, n: int, seed: int = TOY_SEED) -> tuple[np.ndarray, np.ndarray]:
    """``n`` float64 points (n, 2) of the named distribution and their labels (component, moon or arm)."""
    dist = toy2d(name)
    gen = torch.Generator().manual_seed(seed)
    if dist.centres is not None:
        k = len(dist.centres)
        comp = torch.randint(k, (n,), generator=gen)
        x = dist.centres[comp] + dist.std * torch.randn(n, 2, generator=gen, dtype=torch.float64)
        return x.numpy(), comp.numpy().astype(np.int64)
    if name == "moons":
        from sklearn.datasets import make_moons

        x, y = make_moons(n_samples=n, noise=MOONS_NOISE, random_state=seed)
        return x.astype(np.float64), y.astype(np.int64)
    # spiral ("2spirals" of FFJORD's toy data): angle sqrt(t) * 540 degrees, two arms through the origin.
    half = (n + 1) // 2
    t = torch.sqrt(torch.rand(half, 1, generator=gen, dtype=torch.float64)) * 540 * (2 * math.pi) / 360
    arm = torch.cat([-torch.cos(t) * t, torch.sin(t) * t], 1) + torch.rand(half, 2, generator=gen, dtype=torch.float64) * 0.5
    x = torch.cat([arm, -arm])[:n] / 3 + SPIRAL_NOISE * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    y = torch.cat([torch.zeros(half, dtype=torch.int64), torch.ones(half, dtype=torch.int64)])[:n]
    perm = torch.randperm(n, generator=gen)
    return x[perm].numpy(), y[perm].numpy()


# --------------------------------------------------------------------------- loading


def _checksum(params: dict) -> str:
    return sha256_bytes(json.dumps({**params, "version": TOY_VERSION, "seed": TOY_SEED}, sort_keys=True).encode())


def _distribution(spec: DataSpec, known: dict) -> str:
    if spec.distribution is None:
        raise SpecError(f"data.distribution is required for {spec.name}; accepted: {', '.join(known)}")
    return spec.distribution


def load_toy1d(spec: DataSpec) -> Arrays:
    """``spec.n`` draws (default 10000) of a :class:`Toy1D`, shape (n, 1)."""
    dist = toy1d(_distribution(spec, TOY1D))
    n = spec.n or DEFAULT_N
    x, comp = dist.sample(n, torch.Generator().manual_seed(TOY_SEED))
    x_np = x.numpy()[:, None]
    labels = comp.numpy().astype(np.int64) if len(dist.weights) > 1 else None
    checksum = _checksum({"name": "toy1d", "distribution": dist.name, "n": n})
    # iid draws: consecutive blocks are the splits
    return split_arrays(x_np, labels, spec, checksum, len(dist.weights) if labels is not None else None, ordered=True)


def load_toy2d(spec: DataSpec) -> Arrays:
    """``spec.n`` draws (default 10000) of a :class:`Toy2D`, shape (n, 2)."""
    name = _distribution(spec, TOY2D)
    dist = toy2d(name)
    n = spec.n or DEFAULT_N
    x, y = sample_toy2d(name, n)
    checksum = _checksum({"name": "toy2d", "distribution": name, "n": n})
    return split_arrays(x, y, spec, checksum, dist.num_classes, ordered=True)
