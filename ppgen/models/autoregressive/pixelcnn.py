"""PixelCNN (van den Oord et al. 2016a): a 7x7 mask-A convolution, residual blocks (1x1, kxk mask B, 1x1)
and two 1x1 output layers. Stacked masked kernels grow a receptive field that misses a wedge to the upper
right of each pixel, the "blind spot" (van den Oord et al. 2016b, Fig. 1). What the autoregressive image
families share (likelihoods, prior, class conditioning, exact log-likelihood, sampling) is
:class:`~ppgen.models.autoregressive.base.PixelFamily`.

References:
    van den Oord, Kalchbrenner & Kavukcuoglu (2016a), Pixel Recurrent Neural Networks, ICML,
    arXiv:1601.06759.
    van den Oord, Kalchbrenner, Vinyals, Espeholt, Graves & Kavukcuoglu (2016b), Conditional Image
    Generation with PixelCNN Decoders, NeurIPS, arXiv:1606.05328.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from ppgen.models.autoregressive.base import PixelFamily
from ppgen.models.autoregressive.layers import ClassBias, add_bias, fill_caches
from ppgen.models.autoregressive.masked import MaskedConv2d, Padded, PointConv, pointwise, raster_mask
from ppgen.models.autoregressive.spec import PixelModelSpec, odd_kernel
from ppgen.registry import register_family
from ppgen.spec import Strict


class PixelCNNNetSpec(Strict):
    """``channels`` (2h in the paper) is the width of the residual stream; each residual block reduces it
    to ``channels // 2`` for its masked ``kernel`` x ``kernel`` convolution. ``head``: width of the first
    of the two 1x1 output layers."""

    channels: int = Field(64, ge=2, le=2048)
    first_kernel: int = Field(7, ge=1, le=31, description="side of the first, mask-A convolution")
    kernel: int = Field(3, ge=1, le=31, description="side of the mask-B convolutions of the residual blocks")
    blocks: int = Field(5, ge=0, le=128, description="number of residual blocks")
    head: int = Field(64, ge=1, le=4096)

    _odd_kernels = field_validator("first_kernel", "kernel")(odd_kernel)


class PixelCNNSpec(PixelModelSpec):
    family: Literal["pixelcnn"] = "pixelcnn"
    net: PixelCNNNetSpec = Field(default_factory=PixelCNNNetSpec)


class ResidualBlock(nn.Module):
    """ReLU, 1x1 (2h -> h), ReLU, kxk mask B (h -> h), ReLU, 1x1 (h -> 2h), added to the input
    (van den Oord et al. 2016a, Fig. 5)."""

    def __init__(self, channels: int, inner: int, kernel: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, inner, 1)
        self.masked = MaskedConv2d(inner, inner, raster_mask(kernel, kernel, include_centre=True))
        self.expand = nn.Conv2d(inner, channels, 1)


class PixelCNNNet(nn.Module):
    def __init__(self, spec: PixelCNNNetSpec, n_out: int, num_classes: int | None) -> None:
        super().__init__()
        ch, inner = spec.channels, max(1, spec.channels // 2)
        k0 = spec.first_kernel
        self.first = MaskedConv2d(1, ch, raster_mask(k0, k0, include_centre=False))
        self.blocks = nn.ModuleList(ResidualBlock(ch, inner, spec.kernel) for _ in range(spec.blocks))
        self.head1 = nn.Conv2d(ch, spec.head, 1)
        self.head2 = nn.Conv2d(spec.head, n_out, 1)
        self.cond = ClassBias(num_classes, [ch] + [inner] * spec.blocks)

    def forward(self, x_in: torch.Tensor, y: torch.Tensor | None = None,
                keep: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Logits (n, n_out, H, W); ``keep`` collects each block's masked-conv input for the stepper."""
        e = self.cond(y)
        z = add_bias(self.first(x_in), e[0])
        for block, eb in zip(self.blocks, e[1:]):
            a = F.relu(block.reduce(F.relu(z)))
            if keep is not None:
                keep.append(a)
            z = z + block.expand(F.relu(add_bias(block.masked(a), eb)))
        return self.head2(F.relu(self.head1(F.relu(z))))

    def stepper(self, x_in: torch.Tensor, y: torch.Tensor | None, start: int) -> "PixelCNNStepper":
        return PixelCNNStepper(self, x_in, y, start)


class PixelCNNStepper:
    """Fast PixelCNN sampling: every activation at pixel (r, c) depends only on activations at or before
    (r, c) in raster order, so each is computed once, at step (r, c), from cached maps. One full pass
    over the canvas fills the caches for the pixels already known (all of them for a completion)."""

    def __init__(self, net: PixelCNNNet, x_in: torch.Tensor, y: torch.Tensor | None, start: int) -> None:
        acts = fill_caches(net, x_in, y, start)
        self.net = net
        self.e = net.cond(y)
        self.x = Padded(x_in, net.first.kernel_size[0] // 2)
        self.first = PointConv(net.first)
        self.bufs = [Padded(a, b.masked.kernel_size[0] // 2) for a, b in zip(acts, net.blocks)]
        self.mids = [PointConv(b.masked) for b in net.blocks]

    def logits_at(self, r: int, c: int) -> torch.Tensor:
        net, e = self.net, self.e
        z = add_bias(self.first.at(self.x, r, c), e[0])
        for block, buf, mid, eb in zip(net.blocks, self.bufs, self.mids, e[1:]):
            a = F.relu(pointwise(block.reduce, F.relu(z)))
            buf.put(r, c, a)
            z = z + pointwise(block.expand, F.relu(add_bias(mid.at(buf, r, c), eb)))
        return pointwise(net.head2, F.relu(pointwise(net.head1, F.relu(z))))

    def set_pixel(self, r: int, c: int, value: torch.Tensor) -> None:
        self.x.put(r, c, value)


@register_family("pixelcnn")
class PixelCNN(PixelFamily):
    """PixelCNN with masks A and B and residual blocks (van den Oord et al. 2016a)."""

    Spec = PixelCNNSpec

    def build_net(self, n_out: int, num_classes: int | None) -> nn.Module:
        return PixelCNNNet(self.spec.net, n_out, num_classes)
