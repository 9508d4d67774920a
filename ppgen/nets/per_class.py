"""An MLP with one set of weights per class: row ``i`` of the input goes through the network of class
``labels[i]``. The same function as ``K`` separate MLPs applied to the rows of their class (the tests
compare both), computed with one batched product per layer: the rows are grouped by class into a
``(K, most rows of one class, width)`` block, padded with zeros, and the padding is dropped at the end
(its outputs reach nothing, so it gets no gradient).

This is what makes "one model per class" (one VAE per digit, as in the generative classifiers of Schott
et al. 2019) a single declared network: ``per: y`` in the model language.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ppgen.nets.blocks import activation


class PerClassLinear(nn.Module):
    """``K`` affine maps ``in -> out``, initialised each as :class:`torch.nn.Linear` would be."""

    def __init__(self, classes: int, d_in: int, d_out: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(d_in) if d_in else 0.0
        self.weight = nn.Parameter(torch.empty(classes, d_in, d_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(classes, 1, d_out).uniform_(-bound, bound))

    def forward(self, blocks: torch.Tensor) -> torch.Tensor:
        """``blocks`` is ``(K, rows, in)``; returns ``(K, rows, out)``."""
        return torch.baddbmm(self.bias, blocks, self.weight)


class PerClassMLP(nn.Module):
    """``sizes`` as for :func:`ppgen.nets.blocks.mlp`, repeated for each of ``classes`` classes."""

    def __init__(self, classes: int, sizes: Sequence[int], act: str = "relu") -> None:
        super().__init__()
        if classes < 1:
            raise ValueError(f"a network per class needs at least one class, got {classes}")
        self.classes = classes
        layers: list[nn.Module] = []
        for i in range(len(sizes) - 1):
            layers.append(PerClassLinear(classes, sizes[i], sizes[i + 1]))
            if i < len(sizes) - 2:
                layers.append(activation(act))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``x`` is ``(N, in)``, ``labels`` ``(N,)`` integers in ``[0, classes)``; returns ``(N, out)``."""
        if x.dim() != 2 or labels.shape != x.shape[:1]:
            raise ValueError(f"expected rows (N, in) and one label per row, got {tuple(x.shape)} and {tuple(labels.shape)}")
        labels = labels.long()
        n, k = x.shape[0], self.classes
        if n and (int(labels.min()) < 0 or int(labels.max()) >= k):
            raise ValueError(f"labels must lie in [0, {k}), got values from {int(labels.min())} to {int(labels.max())}")
        order = torch.argsort(labels, stable=True)
        sorted_labels = labels[order]
        counts = torch.bincount(labels, minlength=k)
        starts = torch.cumsum(counts, 0) - counts
        pos = torch.arange(n, device=x.device) - starts[sorted_labels]
        rows = int(counts.max()) if n else 0
        blocks = x.new_zeros(k, rows, x.shape[1])
        blocks[sorted_labels, pos] = x[order]
        out_sorted = self.layers(blocks)[sorted_labels, pos]
        return out_sorted.new_empty(out_sorted.shape).index_copy(0, order, out_sorted)
