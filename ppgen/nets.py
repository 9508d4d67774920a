"""Network blocks shared by the families: MLPs, convolutional encoders/decoders, masked convolutions.

They are plain ``torch.nn`` modules (not PyroModules): the families own the Pyro sites, the networks
only compute parameters of distributions, and plain modules keep the per-step overhead low.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import torch
from torch import nn
from pydantic import Field

from ppgen.spec import Strict

Activation = Literal["relu", "tanh", "softplus", "elu", "leaky_relu", "gelu"]


def activation(name: str) -> nn.Module:
    return {
        "relu": nn.ReLU(),
        "tanh": nn.Tanh(),
        "softplus": nn.Softplus(),
        "elu": nn.ELU(),
        "leaky_relu": nn.LeakyReLU(0.2),
        "gelu": nn.GELU(),
    }[name]


class NetSpec(Strict):
    """A network: ``mlp`` (hidden layer widths), ``conv`` (channel widths of stride-2 stages) or
    ``linear`` (a single affine map, which with a Gaussian likelihood makes probabilistic PCA)."""

    kind: Literal["mlp", "conv", "linear"] = "mlp"
    hidden: list[int] = Field(default_factory=lambda: [400])
    activation: Activation = "relu"


def mlp(sizes: Sequence[int], act: str = "relu") -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(activation(act))
    return nn.Sequential(*layers)


class ConvEncoder(nn.Module):
    """Stride-2 convolutions down to a small map, then a linear layer to ``out_dim`` features."""

    def __init__(self, event_shape: tuple[int, ...], channels: Sequence[int], out_dim: int, act: str = "relu"):
        super().__init__()
        c, h, w = event_shape
        layers: list[nn.Module] = []
        for ch in channels:
            layers += [nn.Conv2d(c, ch, 4 if h >= 8 else 3, stride=2, padding=1), activation(act)]
            c, h, w = ch, _down(h), _down(w)
        self.body = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            n_feat = self.body(torch.zeros(1, *event_shape)).shape[1]
        self.head = nn.Linear(n_feat, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _down(n: int) -> int:
    return (n + 1) // 2


class ConvDecoder(nn.Module):
    """A linear layer to a small map, then stride-2 transposed convolutions (each doubling the side)
    up to ``event_shape``; a final crop handles odd sides (7 -> 4 -> 8 -> crop to 7)."""

    def __init__(self, in_dim: int, channels: Sequence[int], event_shape: tuple[int, ...], act: str = "relu"):
        super().__init__()
        c_out, h, w = event_shape
        self.out_hw = (h, w)
        h0, w0 = h, w
        for _ in channels:
            h0, w0 = _down(h0), _down(w0)
        chans = list(reversed(list(channels)))
        self.shape0 = (chans[0], h0, w0)
        self.head = nn.Sequential(nn.Linear(in_dim, chans[0] * h0 * w0), activation(act))
        layers: list[nn.Module] = []
        for i, ch in enumerate(chans):
            c_next = chans[i + 1] if i + 1 < len(chans) else c_out
            layers.append(nn.ConvTranspose2d(ch, c_next, 4, stride=2, padding=1))
            if i + 1 < len(chans):
                layers.append(activation(act))
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.body(self.head(z).view(-1, *self.shape0))
        return out[..., : self.out_hw[0], : self.out_hw[1]]


def build_encoder(spec: NetSpec, event_shape: tuple[int, ...], out_dim: int) -> nn.Module:
    """A network from x (batch, *event_shape) to ``out_dim`` features."""
    d = math.prod(event_shape)
    if spec.kind == "linear":
        return nn.Sequential(nn.Flatten(), nn.Linear(d, out_dim))
    if spec.kind == "mlp":
        return nn.Sequential(nn.Flatten(), mlp([d, *spec.hidden, out_dim], spec.activation))
    if len(event_shape) != 3:
        raise ValueError(f"a conv network needs image data (C, H, W), got event shape {event_shape}")
    return ConvEncoder(event_shape, spec.hidden, out_dim, spec.activation)


def build_decoder(spec: NetSpec, in_dim: int, event_shape: tuple[int, ...], channels_out: int = 1) -> nn.Module:
    """A network from z (batch, in_dim) to ``(batch, channels_out * C, H, W)`` or ``(batch, channels_out * D)``
    reshaped to ``event_shape`` when ``channels_out == 1``."""
    d = math.prod(event_shape)
    if spec.kind in ("linear", "mlp"):
        sizes = [in_dim, d * channels_out] if spec.kind == "linear" else [in_dim, *spec.hidden, d * channels_out]
        shape = (channels_out, *event_shape) if channels_out > 1 else tuple(event_shape)
        return nn.Sequential(mlp(sizes, spec.activation), nn.Unflatten(1, shape))
    if len(event_shape) != 3:
        raise ValueError(f"a conv network needs image data (C, H, W), got event shape {event_shape}")
    c, h, w = event_shape
    net = ConvDecoder(in_dim, spec.hidden, (c * channels_out, h, w), spec.activation)
    if channels_out == 1:
        return net
    return nn.Sequential(net, nn.Unflatten(1, (channels_out, c)))
