"""Toy Gaussian mixtures with known parameters (``toymix``), for checking that a mixture model recovers
what generated the data and that model comparison finds the number of components.

``data.distribution`` (default ``blobs3``); ``data.n`` points (default 1000), iid, split into consecutive
blocks train/val/test; labels ``y`` are the generating components:

- ``blobs3``: 2-D, weights (0.5, 0.3, 0.2), means (-3, 0), (2, 2), (1, -3), standard deviations
  (0.8, 0.5), (0.6, 0.6), (0.5, 0.9) and correlations 0.5, 0, -0.4 -- separated, unequal and tilted;
- ``trio1d``: 1-D, weights (0.3, 0.4, 0.3), means (-5, 0, 5), standard deviations (0.6, 0.8, 0.5);
- ``duo1d``: 1-D, weights (0.6, 0.4), means (-2, 2), standard deviations (0.7, 0.5).

:func:`mixture` gives each as a :class:`ToyMixture` with its exact ``log_prob``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import torch

from ppgen.data.sources import Arrays, sha256_bytes
from ppgen.spec import DataSpec, SpecError

#: Seed of every toy mixture sample.
MIX_SEED = 0
#: Default number of points.
DEFAULT_N = 1000
#: Bump when the generating code changes, so that checksums change with it.
MIX_VERSION = 1


@dataclass(frozen=True)
class ToyMixture:
    """Weights (K,), means (K, D), standard deviations (K, D) and correlations (K,) (2-D only)."""

    name: str
    weights: tuple[float, ...]
    locs: tuple[tuple[float, ...], ...]
    scales: tuple[tuple[float, ...], ...]
    correlations: tuple[float, ...] = ()

    @property
    def components(self) -> int:
        return len(self.weights)

    @property
    def dim(self) -> int:
        return len(self.locs[0])

    def covariances(self) -> torch.Tensor:
        """(K, D, D) float64."""
        s = torch.tensor(self.scales, dtype=torch.float64)
        cov = torch.diag_embed(s**2)
        for k, r in enumerate(self.correlations):
            cov[k, 0, 1] = cov[k, 1, 0] = r * s[k, 0] * s[k, 1]
        return cov

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"weights": torch.tensor(self.weights, dtype=torch.float64),
                "locs": torch.tensor(self.locs, dtype=torch.float64), "covariances": self.covariances()}

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log density of points (N, D)."""
        p = self.tensors()
        comp = torch.distributions.MultivariateNormal(p["locs"], covariance_matrix=p["covariances"])
        return torch.logsumexp(torch.log(p["weights"]) + comp.log_prob(x.double()[:, None, :]), -1)

    def sample(self, n: int, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
        p = self.tensors()
        z = torch.multinomial(p["weights"], n, replacement=True, generator=generator)
        chol = torch.linalg.cholesky(p["covariances"])
        eps = torch.randn(n, self.dim, 1, generator=generator, dtype=torch.float64)
        x = p["locs"][z] + (chol[z] @ eps)[..., 0]
        return x.numpy(), z.numpy().astype(np.int64)


TOYMIX: dict[str, ToyMixture] = {
    "blobs3": ToyMixture("blobs3", (0.5, 0.3, 0.2), ((-3.0, 0.0), (2.0, 2.0), (1.0, -3.0)),
                         ((0.8, 0.5), (0.6, 0.6), (0.5, 0.9)), (0.5, 0.0, -0.4)),
    "trio1d": ToyMixture("trio1d", (0.3, 0.4, 0.3), ((-5.0,), (0.0,), (5.0,)), ((0.6,), (0.8,), (0.5,))),
    "duo1d": ToyMixture("duo1d", (0.6, 0.4), ((-2.0,), (2.0,)), ((0.7,), (0.5,))),
}
assert all(math.isclose(sum(m.weights), 1.0) for m in TOYMIX.values())


def mixture(name: str) -> ToyMixture:
    try:
        return TOYMIX[name]
    except KeyError:
        raise SpecError(f"data.distribution {name!r} is not a toymix mixture; accepted: {', '.join(TOYMIX)}") from None


def load_toymix(spec: DataSpec) -> Arrays:
    """``data.n`` points (default 1000) of a :class:`ToyMixture`, shape (n, D), labels the components."""
    mix = mixture(spec.distribution or "blobs3")
    n = spec.n or DEFAULT_N
    x, z = mix.sample(n, torch.Generator().manual_seed(MIX_SEED))
    n_val = max(1, int(round(n * spec.val_fraction)))
    n_test = max(1, int(round(n * spec.test_fraction)))
    a = n - n_val - n_test
    if a < 1:
        raise SpecError(f"data.n={n} is too small to split into train/val/test; use data.n >= 10")
    b = a + n_val
    checksum = sha256_bytes(json.dumps({"name": "toymix", "distribution": mix.name, "n": n, "seed": MIX_SEED,
                                        "version": MIX_VERSION}, sort_keys=True).encode())
    return Arrays(x[:a], x[a:b], x[b:], z[:a], z[a:b], z[b:], checksum=checksum, num_classes=mix.components)
