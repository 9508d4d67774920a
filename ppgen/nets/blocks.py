"""Network blocks shared by the families: MLPs, convolutional encoders/decoders, masked convolutions.

They are plain ``torch.nn`` modules (not PyroModules): the families own the Pyro sites, the networks
only compute parameters of distributions, and plain modules keep the per-step overhead low.
"""

from __future__ import annotations

import math
from typing import Annotated, Callable, Literal, Sequence

import torch
from torch import nn
from pydantic import Field, model_validator

from ppgen.spec import Strict, changed, key_of

Activation = Literal["relu", "tanh", "softplus", "elu", "leaky_relu", "gelu"]

#: Bounds on a network a spec may ask for: the widest layer, the most layers, and the most parameters
#: in one network (10^8 float32 weights are 400 MB, and an optimizer keeps two or three times that).
MAX_WIDTH = 65_536
MAX_LAYERS = 64
MAX_PARAMETERS = 100_000_000

Width = Annotated[int, Field(ge=1, le=MAX_WIDTH)]


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
    hidden: list[Width] = Field(default_factory=lambda: [400], max_length=MAX_LAYERS)
    activation: Activation = "relu"

    @model_validator(mode="after")
    def _check_kind(self) -> "NetSpec":
        if self.kind == "conv" and not self.hidden:
            raise ValueError("kind 'conv' needs at least one stage: list its channel widths in hidden, e.g. [32, 64]")
        unused = changed(self, "hidden", "activation") if self.kind == "linear" else []
        if unused:
            raise ValueError(f"{unused[0]} does not apply to kind 'linear' (a single affine map); drop it or choose kind 'mlp'")
        return self


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
    _check_conv(spec, event_shape, encoder=True)
    return _checked_build(spec, lambda: _encoder(spec, event_shape, out_dim))


def _encoder(spec: NetSpec, event_shape: tuple[int, ...], out_dim: int) -> nn.Module:
    d = math.prod(event_shape)
    if spec.kind == "linear":
        return nn.Sequential(nn.Flatten(), nn.Linear(d, out_dim))
    if spec.kind == "mlp":
        return nn.Sequential(nn.Flatten(), mlp([d, *spec.hidden, out_dim], spec.activation))
    return ConvEncoder(event_shape, spec.hidden, out_dim, spec.activation)


def build_decoder(spec: NetSpec, in_dim: int, event_shape: tuple[int, ...], channels_out: int = 1) -> nn.Module:
    """A network from z (batch, in_dim) to ``(batch, channels_out * C, H, W)`` or ``(batch, channels_out * D)``
    reshaped to ``event_shape`` when ``channels_out == 1``."""
    _check_conv(spec, event_shape, encoder=False)
    return _checked_build(spec, lambda: _decoder(spec, in_dim, event_shape, channels_out))


def _decoder(spec: NetSpec, in_dim: int, event_shape: tuple[int, ...], channels_out: int) -> nn.Module:
    d = math.prod(event_shape)
    if spec.kind in ("linear", "mlp"):
        sizes = [in_dim, d * channels_out] if spec.kind == "linear" else [in_dim, *spec.hidden, d * channels_out]
        shape = (channels_out, *event_shape) if channels_out > 1 else tuple(event_shape)
        return nn.Sequential(mlp(sizes, spec.activation), nn.Unflatten(1, shape))
    c, h, w = event_shape
    net = ConvDecoder(in_dim, spec.hidden, (c * channels_out, h, w), spec.activation)
    if channels_out == 1:
        return net
    return nn.Sequential(net, nn.Unflatten(1, (channels_out, c)))


def _check_conv(spec: NetSpec, event_shape: tuple[int, ...], encoder: bool) -> None:
    """A conv network needs images, large enough for each stride-2 stage's kernel (4 wide where the side
    is 8 or more, else 3; padding 1)."""
    if spec.kind != "conv":
        return
    key = key_of(spec, "the network")
    if len(event_shape) != 3:
        raise ValueError(f"{key}.kind 'conv' needs image data (C, H, W), got examples of shape {tuple(event_shape)}; "
                         "use kind 'mlp'")
    if not encoder:
        return
    _, h, w = event_shape
    for i in range(len(spec.hidden)):
        k = 4 if h >= 8 else 3
        if h + 2 < k or w + 2 < k:
            raise ValueError(
                f"{key}.hidden {spec.hidden}: stage {i + 1} of the conv network meets a {h}x{w} map, too small for its "
                f"{k}x{k} kernel (the data are {event_shape[1]}x{event_shape[2]} images); use fewer stages or kind 'mlp'")
        h, w = _down(h), _down(w)


def _checked_build(spec: NetSpec, make: Callable[[], nn.Module]) -> nn.Module:
    return checked_build(make, f"{key_of(spec, 'the network')}: kind {spec.kind!r} with hidden {spec.hidden}")


def checked_build(make: Callable[[], nn.Module], what: str) -> nn.Module:
    """``make()`` once on the meta device (no memory, no random numbers) to count the parameters, then
    for real if they are within :data:`MAX_PARAMETERS`; ``what`` names the network for the message."""
    with torch.device("meta"):
        n = sum(p.numel() for p in make().parameters())
    if n > MAX_PARAMETERS:
        raise ValueError(
            f"{what} on these data has {n:.3g} parameters ({4 * n / 2**30:.3g} GiB as float32), more than the "
            f"{MAX_PARAMETERS:.0e} allowed; use narrower layers")
    return make()
