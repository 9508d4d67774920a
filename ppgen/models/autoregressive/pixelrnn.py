"""PixelRNN with Row LSTM layers: an autoregressive image model with an exact likelihood.

As in :mod:`ppgen.models.autoregressive.base`, p(x) = prod_i p(x_i | x_<i) over pixels in raster order, with a
Bernoulli likelihood for binarized images or a Categorical over grey levels for 8-bit ones, fitted by
the ``svi`` routine with an empty guide (maximum likelihood) or with a Gaussian weight prior (MAP), and
optionally class-conditional (p(x, y) = p(y) p(x | y), classified by Bayes' rule).

The network (van den Oord et al. 2016a, Sec. 3.1 and Table 1): a 7x7 mask-A convolution, then Row LSTM
layers, then two 1x1 output layers. A Row LSTM processes the image row by row from the top; each row's
LSTM state is computed for all columns at once:

    [o, f, i, g] = sigma(K_ss * h_{r-1} + K_is * x_r)   (g with tanh instead of sigma)
    c_r = f . c_{r-1} + i . g,      h_r = o . tanh(c_r)

where K_is (input to state) is a 1 x k convolution along the row with mask B and K_ss (state to state) an
unmasked 1 x k convolution over the previous row's state. Each layer is residual: a 1x1 convolution
maps the h-unit state back to the 2h-channel stream and is added to the layer's input. The receptive
field is a triangle above the pixel, which the paper notes misses part of the available context.

Fast sampling: the state-to-state term of row r depends only on the finished row r - 1, so it is
computed once per row; the input-to-state term and the LSTM update at (r, c) need only the pixels
before (r, c) and are computed once, at step (r, c). A whole image then costs about one forward pass.

References:
    van den Oord, Kalchbrenner & Kavukcuoglu (2016), Pixel Recurrent Neural Networks, ICML,
    arXiv:1601.06759.
    Hochreiter & Schmidhuber (1997), Long Short-Term Memory, Neural Computation 9(8).
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


class RowLSTMNetSpec(Strict):
    """``hidden`` (h): LSTM units per layer; ``channels`` (2h in the paper): width of the residual
    stream between layers; ``kernel``: the width k of the 1 x k input-to-state and state-to-state
    convolutions."""

    hidden: int = Field(32, ge=1, le=2048)
    channels: int = Field(64, ge=1, le=4096)
    first_kernel: int = Field(7, ge=1, le=31, description="side of the first, mask-A convolution")
    kernel: int = Field(3, ge=1, le=31)
    layers: int = Field(2, ge=1, le=64)
    head: int = Field(64, ge=1, le=4096)

    _odd_kernels = field_validator("first_kernel", "kernel")(odd_kernel)


class PixelRNNSpec(PixelModelSpec):
    family: Literal["pixelrnn"] = "pixelrnn"
    net: RowLSTMNetSpec = Field(default_factory=RowLSTMNetSpec)


class RowLSTMLayer(nn.Module):
    def __init__(self, channels: int, hidden: int, kernel: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.i2s = MaskedConv2d(channels, 4 * hidden, raster_mask(1, kernel, include_centre=True))
        self.s2s = nn.Conv1d(hidden, 4 * hidden, kernel, padding=kernel // 2)
        self.out = nn.Conv2d(hidden, channels, 1)


def lstm_update(gates: torch.Tensor, c_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(h, c) from the 4h pre-activations [o, f, i, g] (channel dimension 1) and the previous cell."""
    o, f, i, g = gates.chunk(4, dim=1)
    c = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


class RowLSTMNet(nn.Module):
    def __init__(self, spec: RowLSTMNetSpec, n_out: int, num_classes: int | None) -> None:
        super().__init__()
        k0 = spec.first_kernel
        self.first = MaskedConv2d(1, spec.channels, raster_mask(k0, k0, include_centre=False))
        self.layers = nn.ModuleList(RowLSTMLayer(spec.channels, spec.hidden, spec.kernel) for _ in range(spec.layers))
        self.head1 = nn.Conv2d(spec.channels, spec.head, 1)
        self.head2 = nn.Conv2d(spec.head, n_out, 1)
        self.cond = ClassBias(num_classes, [spec.channels] + [4 * spec.hidden] * spec.layers)

    def forward(self, x_in: torch.Tensor, y: torch.Tensor | None = None,
                keep: list[tuple[torch.Tensor, ...]] | None = None) -> torch.Tensor:
        """Logits (n, n_out, H, W); ``keep`` collects each layer's (input, h, c) maps for the stepper."""
        e = self.cond(y)
        z = add_bias(self.first(x_in), e[0])
        n, _, rows, width = z.shape
        for layer, el in zip(self.layers, e[1:]):
            pre = add_bias(layer.i2s(z), el)
            h = z.new_zeros(n, layer.hidden, width)
            c = torch.zeros_like(h)
            hs, cs = [], []
            for r in range(rows):
                h, c = lstm_update(pre[:, :, r, :] + layer.s2s(h), c)
                hs.append(h)
                cs.append(c)
            h_map = torch.stack(hs, dim=2)
            if keep is not None:
                keep.append((z, h_map, torch.stack(cs, dim=2)))
            z = z + layer.out(h_map)
        return self.head2(F.relu(self.head1(F.relu(z))))

    def stepper(self, x_in: torch.Tensor, y: torch.Tensor | None, start: int) -> "RowLSTMStepper":
        return RowLSTMStepper(self, x_in, y, start)


class RowLSTMStepper:
    """Fast Row LSTM sampling: per layer, the state-to-state term once per row, the input-to-state term
    and the LSTM update once per pixel. Row states are kept channels-last, (n, W, h), so that one
    column is contiguous."""

    def __init__(self, net: RowLSTMNet, x_in: torch.Tensor, y: torch.Tensor | None, start: int) -> None:
        keep = fill_caches(net, x_in, y, start)
        self.net = net
        self.e = net.cond(y)
        self.x = Padded(x_in, net.first.kernel_size[0] // 2)
        self.first = PointConv(net.first)
        self.zbufs = [Padded(z, layer.i2s.kernel_size[1] // 2) for (z, _, _), layer in zip(keep, net.layers)]
        self.i2s = [PointConv(layer.i2s) for layer in net.layers]
        self.maps: list[tuple[torch.Tensor, torch.Tensor]] | None = [(h, c) for _, h, c in keep]
        self.h_cur: list[torch.Tensor] = []
        self.c_cur: list[torch.Tensor] = []
        self.c_prev: list[torch.Tensor] = []
        self.s2s_row: list[torch.Tensor] = []
        self.row: int | None = None

    def _enter_row(self, r: int) -> None:
        if self.maps is not None:  # the first row visited: states before it come from the full pass
            def rows(m: torch.Tensor, i: int) -> torch.Tensor:
                return m[:, :, i, :].transpose(1, 2).contiguous() if i >= 0 else m.new_zeros(m.shape[0], m.shape[3], m.shape[1])

            h_prev = [rows(h, r - 1) for h, _ in self.maps]
            self.c_prev = [rows(c, r - 1) for _, c in self.maps]
            # Columns before the start of a completion are final in the full pass; the rest is overwritten.
            self.h_cur = [rows(h, r) for h, _ in self.maps]
            self.c_cur = [rows(c, r) for _, c in self.maps]
            self.maps = None
        else:
            h_prev, self.c_prev = self.h_cur, self.c_cur
            self.h_cur = [torch.empty_like(h) for h in h_prev]
            self.c_cur = [torch.empty_like(c) for c in self.c_prev]
        # The state-to-state convolution over the finished row above, once per row and layer.
        self.s2s_row = [layer.s2s(h.transpose(1, 2)).transpose(1, 2).contiguous()
                        for layer, h in zip(self.net.layers, h_prev)]
        self.row = r

    def logits_at(self, r: int, c: int) -> torch.Tensor:
        if r != self.row:
            self._enter_row(r)
        net, e = self.net, self.e
        z = add_bias(self.first.at(self.x, r, c), e[0])
        for i, layer in enumerate(net.layers):
            self.zbufs[i].put(r, c, z)
            gates = add_bias(self.i2s[i].at(self.zbufs[i], r, c), e[i + 1]) + self.s2s_row[i][:, c]
            h, cell = lstm_update(gates, self.c_prev[i][:, c])
            self.h_cur[i][:, c] = h
            self.c_cur[i][:, c] = cell
            z = z + pointwise(layer.out, h)
        return pointwise(net.head2, F.relu(pointwise(net.head1, F.relu(z))))

    def set_pixel(self, r: int, c: int, value: torch.Tensor) -> None:
        self.x.put(r, c, value)


@register_family("pixelrnn")
class PixelRNN(PixelFamily):
    """PixelRNN with Row LSTM layers (van den Oord et al. 2016a)."""

    Spec = PixelRNNSpec

    def build_net(self, n_out: int, num_classes: int | None) -> nn.Module:
        return RowLSTMNet(self.spec.net, n_out, num_classes)
