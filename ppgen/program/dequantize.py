"""Uniform dequantization: a density on continuous values as a likelihood of quantized pixel data.

Pixel data take L levels: an intensity x is k / scale for a whole k in 0..L-1 (MNIST: byte / 256, L = 256;
scikit-learn's digits: count / 16, L = 17). A density p on the unit cube gives the L^D cells
[k / L, (k + 1) / L) probabilities P(k) = integral over the cell of p(y) dy, and with y = (k + u) / L,
u ~ Uniform[0, 1)^D (the dequantization noise)

    log P(k) = log E_u[p((k + u) / L)] - D log L >= E_u[log p((k + u) / L)] - D log L

(Jensen; Theis, van den Oord & Bethge 2016; Uria et al. 2013). One draw of u per example is the usual
reported bound (Dinh et al. 2017); k draws averaged inside the log are an importance-sampling estimate
with the uniform noise as proposal, which tightens towards log P(k) as k grows (Ho et al. 2019), so
``ppgen evaluate`` reports test_nll_nats with k draws and the one-draw bound as elbo. Both are in nats
of the discrete data, so bits/dim compares directly with a 256-way (or L-way) categorical likelihood.

A site declares it with ``dequantize: uniform`` (or ``{kind: uniform, levels: L, scale: s}``) on the
observed site x; the levels and scale default to how ppgen reads each data set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field
from pyro.distributions.torch_distribution import TorchDistribution
from torch.distributions import constraints

from ppgen.spec import SpecError, Strict


class DequantizeDecl(Strict):
    """``dequantize`` of an observed site: uniform noise over each level's cell."""

    kind: Literal["uniform"] = "uniform"
    levels: int | None = Field(None, ge=2, le=65536, description="number of levels L (default: the data's)")
    scale: float | None = Field(None, gt=0, description="an intensity is level / scale (default: the data's)")


@dataclass(frozen=True)
class Dequant:
    levels: int
    scale: float


def check(where: str, value: Any, entry: Any, part: str, observed: str | None) -> DequantizeDecl:
    """Structural checks (no data needed)."""
    if part != "model" or observed != "x":
        raise SpecError(f"{where}.dequantize: applies to the model's observed site x only")
    if entry.discrete or entry.name in ("Delta", "MixtureSameFamily"):
        raise SpecError(f"{where}.dequantize: {entry.name} is not a density on continuous values; dequantize a "
                        "continuous likelihood (TransformedDistribution, Normal, ...) or use PixelCategorical")
    return value if isinstance(value, DequantizeDecl) else DequantizeDecl()


def resolve(where: str, decl: DequantizeDecl, info: Any, data_name: str) -> Dequant:
    """Levels and scale for these data."""
    if info.kind == "binary":
        raise SpecError(f"{where}.dequantize: the data are binarized; set data.binarize: none to model grey levels")
    if data_name in ("toy1d", "toy2d", "toymix", "toyseq", "macro"):
        raise SpecError(f"{where}.dequantize: {data_name} data are continuous already; dequantization is for "
                        "quantized pixel data (mnist, digits, images, an npz of levels)")
    levels = decl.levels if decl.levels is not None else (17 if data_name == "digits" else 256)
    scale = decl.scale if decl.scale is not None else float({"mnist": 256, "digits": 16}.get(data_name, levels - 1))
    return Dequant(int(levels), float(scale))


class Dequantized(TorchDistribution):
    """The levels k / scale, k in 0..L-1, of a density on [0, 1)^D: ``log_prob`` is the one-draw bound
    log p((k + u) / L) - D log L with fresh noise u (a stochastic lower bound of log P(k)); ``sample``
    draws y from the density and returns its cell's level (values outside [0, 1) go to the nearest level)."""

    arg_constraints: dict = {}
    support = constraints.unit_interval
    has_rsample = False

    def __init__(self, density: Any, levels: int, scale: float) -> None:
        self.density = density
        self.levels, self.scale = int(levels), float(scale)
        super().__init__(density.batch_shape, density.event_shape, validate_args=False)

    def expand(self, batch_shape: Any, _instance: Any = None) -> "Dequantized":
        return Dequantized(self.density.expand(torch.Size(batch_shape)), self.levels, self.scale)

    def level(self, value: torch.Tensor) -> torch.Tensor:
        k = torch.round(value * self.scale)
        if (k - value * self.scale).abs().max() > 1e-3 or k.min() < 0 or k.max() > self.levels - 1:
            raise ValueError(
                f"dequantize with {self.levels} levels and scale {self.scale:g} needs intensities k / {self.scale:g} "
                f"for whole k in 0..{self.levels - 1}; these data are not. Set dequantize's levels and scale to how "
                "the data were quantized")
        return k

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        k = self.level(value)
        shape = torch.broadcast_shapes(k.shape, self.batch_shape + self.event_shape)
        u = torch.rand(shape, dtype=value.dtype, device=value.device)
        y = (k.expand(shape) + u) / self.levels
        n = math.prod(self.event_shape)
        return self.density.log_prob(y) - n * math.log(self.levels)

    def sample(self, sample_shape: Any = torch.Size()) -> torch.Tensor:
        y = self.density.sample(sample_shape)
        k = torch.floor(y * self.levels).clamp(0, self.levels - 1)
        return k / self.scale
