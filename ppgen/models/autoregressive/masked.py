"""Masked convolutions for raster-order autoregressive image models, and their evaluation at one pixel
or one row for incremental sampling.

An autoregressive image model factorises p(x) = prod_i p(x_i | x_<i) over pixels in raster order (row by
row, left to right). A convolution keeps that order when its kernel is multiplied by a fixed 0/1 mask
that zeroes every tap at or after the centre (mask A, for the first layer, which must not see the pixel
it predicts) or after the centre (mask B, for later layers, whose centre already only summarises the
past). The vertical mask of the Gated PixelCNN keeps whole rows up to the centre row; it is used with a
one-row downward shift so that its outputs only summarise rows strictly above.

Every mask here is zero below the centre row. So an output at (r, c) reads input rows r - kh//2 .. r
only, and the convolution can be evaluated at a single position (``at``) or along a single row (``row``)
from a zero-padded activation buffer (:class:`Padded`), giving the same numbers as the full convolution
there without computing anything else. That is what lets a sampler compute each activation once, when
its inputs are final, instead of re-running the whole network for every pixel.

References:
    van den Oord, Kalchbrenner & Kavukcuoglu (2016), Pixel Recurrent Neural Networks, ICML,
    arXiv:1601.06759 (masks A and B, Sec. 3.4).
    van den Oord, Kalchbrenner, Vinyals, Espeholt, Graves & Kavukcuoglu (2016), Conditional Image
    Generation with PixelCNN Decoders, NeurIPS, arXiv:1606.05328 (vertical and horizontal stacks).
    Ramachandran, Paine, Khorrami, Babaeizadeh, Chang, Zhang, Hasegawa-Johnson, Campbell & Huang (2017),
    Fast Generation for Convolutional Autoregressive Models, arXiv:1704.06001 (caching for generation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def raster_mask(kh: int, kw: int, include_centre: bool) -> torch.Tensor:
    """A (kh, kw) mask keeping every row above the centre and, in the centre row, the taps left of the
    centre (mask A) or left of and at the centre (mask B, ``include_centre``)."""
    _check_odd(kh, kw)
    m = torch.zeros(kh, kw)
    m[: kh // 2, :] = 1.0
    m[kh // 2, : kw // 2 + int(include_centre)] = 1.0
    return m


def vertical_mask(kh: int, kw: int) -> torch.Tensor:
    """A (kh, kw) mask keeping whole rows up to and including the centre row (the vertical stack)."""
    _check_odd(kh, kw)
    m = torch.zeros(kh, kw)
    m[: kh // 2 + 1, :] = 1.0
    return m


def _check_odd(kh: int, kw: int) -> None:
    if kh < 1 or kw < 1 or kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"masked kernels need odd sides so that they have a centre, got {kh}x{kw}")


class MaskedConv2d(nn.Conv2d):
    """A same-size 2-D convolution whose kernel is multiplied by a fixed mask before every use, so
    masked taps are exactly zero in the output and receive zero gradient.

    The mask must be zero below the centre row (all of :func:`raster_mask` and :func:`vertical_mask`
    are); the zero padding is ``kh//2`` rows and ``kw//2`` columns on each side.
    """

    def __init__(self, in_channels: int, out_channels: int, mask: torch.Tensor, bias: bool = True) -> None:
        kh, kw = mask.shape
        _check_odd(kh, kw)
        if mask[kh // 2 + 1 :].any():
            raise ValueError("a raster-order mask must be zero below its centre row")
        super().__init__(in_channels, out_channels, (kh, kw), padding=(kh // 2, kw // 2), bias=bias)
        # Not persistent: the mask is a function of the architecture, not a learned or saved quantity.
        self.register_buffer("mask", mask.clone().reshape(1, 1, kh, kw), persistent=False)

    def masked_weight(self) -> torch.Tensor:
        return self.weight * self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.masked_weight(), self.bias, padding=self.padding)


def down_shift(x: torch.Tensor) -> torch.Tensor:
    """Move a (n, C, H, W) map one row down, filling row 0 with zeros: row r then holds what row r - 1
    held, i.e. only information from rows strictly above r."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1, :]


# --------------------------------------------------------------------------- incremental evaluation


class Padded:
    """A zero-padded activation map for incremental evaluation, stored channels-last as
    (n, H + pad, W + 2 pad, C) so that a kernel's patch at one position is a few contiguous runs of
    memory: image position (r, c) lives at (r + pad, c + pad). The zeros around it are the
    convolution's zero padding; no bottom padding is kept because no mask reads rows below the centre.

    Positions not yet written hold whatever the map was filled with; masked taps never read them.
    """

    def __init__(self, full: torch.Tensor, pad: int) -> None:
        n, ch, h, w = full.shape
        self.pad = pad
        self.width = w
        self.data = full.new_zeros(n, h + pad, w + 2 * pad, ch)
        self.data[:, pad:, pad : pad + w, :] = full.permute(0, 2, 3, 1)

    def put(self, r: int, c: int, value: torch.Tensor) -> None:
        """Write (n, C) values at image position (r, c)."""
        self.data[:, r + self.pad, c + self.pad, :] = value

    def put_row(self, r: int, values: torch.Tensor) -> None:
        """Write (n, W, C) values (channels-last) into image row r."""
        self.data[:, r + self.pad, self.pad : self.pad + self.width, :] = values


class PointConv:
    """A :class:`MaskedConv2d` frozen for sampling: its masked kernel cut to the rows up to the centre
    (the only ones that can be non-zero) and flattened once in the buffers' channels-last order, so that
    one output position costs one small matrix product. Build it inside ``torch.no_grad()``; rebuild it
    if the weights change."""

    def __init__(self, conv: MaskedConv2d) -> None:
        kh, kw = conv.kernel_size
        self.ph, self.pw, self.kw = kh // 2, kw // 2, kw
        self.weight = conv.masked_weight()[:, :, : self.ph + 1, :].contiguous()
        cout = self.weight.shape[0]
        self.flat_t = self.weight.permute(0, 2, 3, 1).reshape(cout, -1).t().contiguous()
        self.bias = conv.bias if conv.bias is not None else self.weight.new_zeros(cout)

    def at(self, buf: Padded, r: int, c: int) -> torch.Tensor:
        """The convolution's (n, C_out) output at image position (r, c)."""
        r0, c0 = r + buf.pad - self.ph, c + buf.pad - self.pw
        patch = buf.data[:, r0 : r0 + self.ph + 1, c0 : c0 + self.kw, :]
        return torch.addmm(self.bias, patch.reshape(patch.shape[0], -1), self.flat_t)

    def row(self, buf: Padded, r: int) -> torch.Tensor:
        """The convolution's output along image row r, channels-last: (n, W, C_out)."""
        r0, c0 = r + buf.pad - self.ph, buf.pad - self.pw
        rows = buf.data[:, r0 : r0 + self.ph + 1, c0 : c0 + buf.width + 2 * self.pw, :]
        # (n, ph+1, W, C, kw) -> one row of patches per output column, in the flattened kernel's order.
        patches = rows.unfold(2, self.kw, 1).permute(0, 2, 1, 4, 3)
        n, w = patches.shape[0], patches.shape[1]
        out = torch.addmm(self.bias, patches.reshape(n * w, -1), self.flat_t)
        return out.reshape(n, w, -1)


def pointwise(conv: nn.Conv2d | nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution applied to channels-last values: (n, C_in) vectors or (n, W, C_in) rows."""
    return F.linear(x, conv.weight.reshape(conv.weight.shape[0], -1), conv.bias)
