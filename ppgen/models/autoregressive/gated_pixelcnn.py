"""Gated PixelCNN (van den Oord et al. 2016b): a vertical stack that sees whole rows above (shifted down one
row) and a horizontal stack that sees the current row to the left, joined by 1x1 links and gated units
tanh(a) * sigmoid(b). Its receptive field has no blind spot. What the autoregressive image families share
is :class:`~ppgen.models.autoregressive.base.PixelFamily`.

References:
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
from ppgen.models.autoregressive.layers import ClassBias, add_bias, add_bias_last, fill_caches, gate
from ppgen.models.autoregressive.masked import MaskedConv2d, Padded, PointConv, down_shift, pointwise, raster_mask, vertical_mask
from ppgen.models.autoregressive.spec import PixelModelSpec, odd_kernel
from ppgen.registry import register_family
from ppgen.spec import Strict


class GatedNetSpec(Strict):
    """``channels`` (p in the paper): gated units per layer in each stack; ``layers``: gated layers, the
    first with ``first_kernel`` (mask A in the horizontal stack), the others with ``kernel``."""

    channels: int = Field(32, ge=1, le=2048)
    first_kernel: int = Field(7, ge=1, le=31)
    kernel: int = Field(3, ge=1, le=31)
    layers: int = Field(6, ge=1, le=128)
    head: int = Field(64, ge=1, le=4096)

    _odd_kernels = field_validator("first_kernel", "kernel")(odd_kernel)


class GatedPixelCNNSpec(PixelModelSpec):
    family: Literal["gated_pixelcnn"] = "gated_pixelcnn"
    net: GatedNetSpec = Field(default_factory=GatedNetSpec)


class GatedLayer(nn.Module):
    """One layer of both stacks (van den Oord et al. 2016b, Fig. 2). The vertical convolution sees rows
    up to the current one; its output reaches the horizontal stack shifted one row down, so only rows
    strictly above. The horizontal convolution sees the current row left of the pixel (mask A, first
    layer) or up to it (mask B)."""

    def __init__(self, in_channels: int, p: int, kernel: int, first: bool) -> None:
        super().__init__()
        self.first = first
        self.v = MaskedConv2d(in_channels, 2 * p, vertical_mask(kernel, kernel))
        self.h = MaskedConv2d(in_channels, 2 * p, raster_mask(1, kernel, include_centre=not first))
        self.v2h = nn.Conv2d(2 * p, 2 * p, 1)
        self.out = nn.Conv2d(p, p, 1)


class GatedPixelCNNNet(nn.Module):
    def __init__(self, spec: GatedNetSpec, n_out: int, num_classes: int | None) -> None:
        super().__init__()
        p = spec.channels
        self.layers = nn.ModuleList(
            [GatedLayer(1, p, spec.first_kernel, True)]
            + [GatedLayer(p, p, spec.kernel, False) for _ in range(spec.layers - 1)]
        )
        self.head1 = nn.Conv2d(p, spec.head, 1)
        self.head2 = nn.Conv2d(spec.head, n_out, 1)
        self.cond = ClassBias(num_classes, [2 * p, 2 * p] * spec.layers)

    def forward(self, x_in: torch.Tensor, y: torch.Tensor | None = None,
                keep: list[tuple[torch.Tensor, ...]] | None = None) -> torch.Tensor:
        """Logits (n, n_out, H, W); ``keep`` collects (vertical input, horizontal input, shifted
        vertical-to-horizontal map) of each layer for the stepper."""
        e = self.cond(y)
        v = h = x_in
        for i, layer in enumerate(self.layers):
            vp = add_bias(layer.v(v), e[2 * i])
            vs = down_shift(layer.v2h(vp))
            if keep is not None:
                keep.append((v, h, vs))
            hn = layer.out(gate(add_bias(layer.h(h) + vs, e[2 * i + 1])))
            h = hn if layer.first else h + hn
            v = gate(vp)
        return self.head2(F.relu(self.head1(F.relu(h))))

    def stepper(self, x_in: torch.Tensor, y: torch.Tensor | None, start: int) -> "GatedStepper":
        return GatedStepper(self, x_in, y, start)


class GatedStepper:
    """Fast Gated PixelCNN sampling: the vertical stack of row r - 1 is computed once, a whole row at a
    time, when row r - 1 is complete; the horizontal stack one pixel at a time from cached maps."""

    def __init__(self, net: GatedPixelCNNNet, x_in: torch.Tensor, y: torch.Tensor | None, start: int) -> None:
        keep = fill_caches(net, x_in, y, start)
        self.net = net
        self.e = net.cond(y)
        self.x = Padded(x_in, net.layers[0].v.kernel_size[0] // 2)
        self.vbufs = [self.x] + [Padded(v, layer.v.kernel_size[0] // 2) for (v, _, _), layer in zip(keep[1:], net.layers[1:])]
        self.hbufs = [self.x] + [Padded(h, layer.h.kernel_size[1] // 2) for (_, h, _), layer in zip(keep[1:], net.layers[1:])]
        self.vs_full: list[torch.Tensor] | None = [vs for _, _, vs in keep]
        self.vconv = [PointConv(layer.v) for layer in net.layers]
        self.hconv = [PointConv(layer.h) for layer in net.layers]
        self.vs_row: list[torch.Tensor] = []  # per layer, channels-last (n, W, 2p)
        self.row: int | None = None

    def _enter_row(self, r: int) -> None:
        if self.vs_full is not None:  # the first row visited: its vertical input is in the full pass
            self.vs_row = [vs[:, :, r, :].transpose(1, 2).contiguous() for vs in self.vs_full]
            self.vs_full = None
        else:
            # Row r - 1 of the canvas is now complete: run the vertical stack along it, once.
            layers = self.net.layers
            for i, layer in enumerate(layers):
                vp = add_bias_last(self.vconv[i].row(self.vbufs[i], r - 1), self.e[2 * i])
                if i + 1 < len(layers):
                    self.vbufs[i + 1].put_row(r - 1, gate(vp, dim=-1))
                self.vs_row[i] = pointwise(layer.v2h, vp)
        self.row = r

    def logits_at(self, r: int, c: int) -> torch.Tensor:
        if r != self.row:
            self._enter_row(r)
        layers, e = self.net.layers, self.e
        h = None
        for i, layer in enumerate(layers):
            hp = self.hconv[i].at(self.hbufs[i], r, c) + self.vs_row[i][:, c]
            hn = pointwise(layer.out, gate(add_bias(hp, e[2 * i + 1])))
            h = hn if h is None else h + hn
            if i + 1 < len(layers):
                self.hbufs[i + 1].put(r, c, h)
        net = self.net
        return pointwise(net.head2, F.relu(pointwise(net.head1, F.relu(h))))

    def set_pixel(self, r: int, c: int, value: torch.Tensor) -> None:
        self.x.put(r, c, value)


@register_family("gated_pixelcnn")
class GatedPixelCNN(PixelFamily):
    """Gated PixelCNN with vertical and horizontal stacks, no blind spot (van den Oord et al. 2016b)."""

    Spec = GatedPixelCNNSpec

    def build_net(self, n_out: int, num_classes: int | None) -> nn.Module:
        return GatedPixelCNNNet(self.spec.net, n_out, num_classes)
