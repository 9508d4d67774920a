"""Pieces the autoregressive image networks share: per-layer class biases (conditioning on a label), the
gated unit, and fast sampling's :class:`Stepper` protocol with the caches a stepper starts from.

References:
    van den Oord, Kalchbrenner, Vinyals, Espeholt, Graves & Kavukcuoglu (2016b), Conditional Image
    Generation with PixelCNN Decoders, NeurIPS, arXiv:1606.05328.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn


class ClassBias(nn.Module):
    """Class-dependent biases for each layer: V_l^T onehot(y) (van den Oord et al. 2016b, eq. 4),
    started at zero so a conditional model starts as the unconditional one."""

    def __init__(self, num_classes: int | None, sizes: list[int]) -> None:
        super().__init__()
        self.sizes = list(sizes)
        self.table = nn.Embedding(num_classes, sum(self.sizes)) if num_classes else None
        if self.table is not None:
            nn.init.zeros_(self.table.weight)

    def forward(self, y: torch.Tensor | None) -> list[torch.Tensor | None]:
        if self.table is None:
            return [None] * len(self.sizes)
        if y is None:
            raise ValueError("this model is class-conditional: pass the labels y")
        return list(self.table(y).split(self.sizes, dim=1))


def add_bias(t: torch.Tensor, e: torch.Tensor | None) -> torch.Tensor:
    """``t`` (n, C, ...) plus a per-example (n, C) bias, broadcast over the trailing dimensions."""
    if e is None:
        return t
    return t + e.reshape(e.shape + (1,) * (t.dim() - 2))


def add_bias_last(t: torch.Tensor, e: torch.Tensor | None) -> torch.Tensor:
    """Channels-last ``t`` (n, ..., C) plus a per-example (n, C) bias."""
    if e is None:
        return t
    return t + e.reshape(e.shape[:1] + (1,) * (t.dim() - 2) + e.shape[1:])


def gate(t: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """The gated unit tanh(a) * sigmoid(b) over the two halves of the channel dimension ``dim``."""
    a, b = t.chunk(2, dim=dim)
    return torch.tanh(a) * torch.sigmoid(b)


def fill_caches(net: nn.Module, x_in: torch.Tensor, y: torch.Tensor | None, start: int) -> list[Any]:
    """The activation maps a stepper starts from: the network's intermediate maps on the canvas. From
    ``start == 0`` every cached value is written before it is read, so zero maps of the right shapes
    (found with a one-image pass) replace the full pass."""
    keep: list[Any] = []
    if start > 0:
        net(x_in, y, keep=keep)
        return keep
    net(x_in[:1], None if y is None else y[:1], keep=keep)
    n = x_in.shape[0]

    def zeros(t: torch.Tensor) -> torch.Tensor:
        return t.new_zeros(n, *t.shape[1:])

    return [tuple(zeros(t) for t in item) if isinstance(item, tuple) else zeros(item) for item in keep]


class Stepper(Protocol):
    """Incremental evaluation of a network for sampling, built from a canvas whose pixels before
    ``start`` are final. ``logits_at`` is called for each pixel in raster order from ``start``, each
    followed by ``set_pixel`` with the drawn value (as network input, shape (n, 1))."""

    def logits_at(self, r: int, c: int) -> torch.Tensor: ...

    def set_pixel(self, r: int, c: int, value: torch.Tensor) -> None: ...
