"""The GAN's networks and their spec sections: MLP generator and discriminator, and the DCGAN design of
Radford et al. (transposed convolutions with batch norm in G, strided convolutions with leaky ReLU in D).
The discriminator outputs a real score (a logit for the minimax and non-saturating losses, a critic value
for the Wasserstein and hinge losses). The family is :class:`ppgen.models.gan.GAN`.

References:
    Goodfellow et al. (2014), Generative Adversarial Nets, NeurIPS; arXiv:1406.2661.
    Radford, Metz & Chintala (2016), Unsupervised Representation Learning with Deep Convolutional
    Generative Adversarial Networks, ICLR; arXiv:1511.06434.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from ppgen.nets.blocks import MAX_LAYERS, Activation, Width, activation, checked_build
from ppgen.spec import Strict


class GeneratorSpec(Strict):
    """G(z). ``mlp``: ``hidden`` are the widths of the hidden layers. ``conv`` (DCGAN): ``hidden`` are the
    channels of the feature maps from the smallest up, each transposed convolution doubling the side
    (e.g. [128, 64] makes 7x7x128 -> 14x14x64 -> 28x28). ``output``: the last non-linearity, which sets
    the support of G(z): ``auto`` is a sigmoid for images (intensities in [0, 1]) and the identity
    otherwise; ``softplus`` for positive data, ``tanh`` for data in [-1, 1]."""

    kind: Literal["mlp", "conv"] = "mlp"
    hidden: list[Width] = Field(default_factory=lambda: [256, 512], max_length=MAX_LAYERS)
    activation: Activation = "relu"
    norm: Literal["none", "batch"] = "none"
    output: Literal["auto", "sigmoid", "tanh", "identity", "softplus"] = "auto"

    @model_validator(mode="after")
    def _check(self) -> "GeneratorSpec":
        _check_widths(self.hidden, "generator.hidden", self.kind)
        return self


class DiscriminatorSpec(Strict):
    """D(x), one real score per example. ``mlp``: hidden widths; ``conv``: channels of stride-2
    convolutions (e.g. [64, 128]). ``norm``: batch norm as in DCGAN, or layer norm, which unlike batch
    norm suits a gradient penalty (it does not mix examples). ``dropout`` after each hidden layer."""

    kind: Literal["mlp", "conv"] = "mlp"
    hidden: list[Width] = Field(default_factory=lambda: [512, 256], max_length=MAX_LAYERS)
    activation: Activation = "leaky_relu"
    norm: Literal["none", "batch", "layer"] = "none"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _check(self) -> "DiscriminatorSpec":
        _check_widths(self.hidden, "discriminator.hidden", self.kind)
        return self


def _check_widths(widths: list[int], where: str, kind: str) -> None:
    bad = [w for w in widths if w < 1]
    if bad:
        raise ValueError(f"{where}: widths must be positive integers, got {bad}")
    if kind == "conv" and not widths:
        raise ValueError(f"{where}: a conv network needs at least one stage of channels, e.g. [64, 128]")


def _output(name: str) -> nn.Module:
    return {"sigmoid": nn.Sigmoid(), "tanh": nn.Tanh(), "identity": nn.Identity(), "softplus": nn.Softplus()}[name]


class _Standardize(nn.Module):
    """z -> (z - mean) / std of the prior: a Uniform(0, 1) input becomes zero-mean, unit-variance like a
    Normal one, so the same initialisation and step sizes suit both priors."""

    def __init__(self, loc: float, scale: float) -> None:
        super().__init__()
        self.register_buffer("loc", torch.tensor(float(loc)))
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.loc) / self.scale


class MLPGenerator(nn.Module):
    """z -> hidden layers (optionally batch-normed) -> prod(event_shape) values -> output non-linearity."""

    def __init__(self, z_dim: int, event_shape: tuple[int, ...], spec: GeneratorSpec, output: str,
                 z_moments: tuple[float, float] = (0.0, 1.0)) -> None:
        super().__init__()
        self.standardize = _Standardize(*z_moments)
        layers: list[nn.Module] = []
        width = z_dim
        for h in spec.hidden:
            layers.append(nn.Linear(width, h))
            if spec.norm == "batch":
                layers.append(nn.BatchNorm1d(h))
            layers.append(activation(spec.activation))
            width = h
        layers += [nn.Linear(width, math.prod(event_shape)), _output(output), nn.Unflatten(1, tuple(event_shape))]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.standardize(z))


class ConvGenerator(nn.Module):
    """DCGAN's generator (Radford et al. 2016, fig. 1): a linear projection of z to the smallest feature
    map, then stride-2 transposed convolutions (kernel 4) that double the side, batch norm and ReLU
    between them; a crop handles sides that are not powers of two (7 -> 14 -> 28, or 2 -> 4 -> 8)."""

    def __init__(self, z_dim: int, event_shape: tuple[int, ...], spec: GeneratorSpec, output: str,
                 z_moments: tuple[float, float] = (0.0, 1.0)) -> None:
        super().__init__()
        self.standardize = _Standardize(*z_moments)
        c_out, h, w = event_shape
        h0, w0 = h, w
        for _ in spec.hidden:
            h0, w0 = (h0 + 1) // 2, (w0 + 1) // 2
        chans = list(spec.hidden)
        self.shape0 = (chans[0], h0, w0)
        self.out_hw = (h, w)
        bn = spec.norm == "batch"
        head: list[nn.Module] = [nn.Linear(z_dim, chans[0] * h0 * w0)]
        self.head = nn.Sequential(*head)
        body: list[nn.Module] = [nn.BatchNorm2d(chans[0]) if bn else nn.Identity(), activation(spec.activation)]
        for i, ch in enumerate(chans):
            nxt = chans[i + 1] if i + 1 < len(chans) else c_out
            body.append(nn.ConvTranspose2d(ch, nxt, 4, stride=2, padding=1))
            if i + 1 < len(chans):
                body += [nn.BatchNorm2d(nxt) if bn else nn.Identity(), activation(spec.activation)]
        body.append(_output(output))
        self.body = nn.Sequential(*body)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.body(self.head(self.standardize(z)).view(-1, *self.shape0))
        return out[..., : self.out_hw[0], : self.out_hw[1]]


class MLPDiscriminator(nn.Module):
    def __init__(self, event_shape: tuple[int, ...], spec: DiscriminatorSpec) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(event_shape)
        for h in spec.hidden:
            layers.append(nn.Linear(width, h))
            if spec.norm == "batch":
                layers.append(nn.BatchNorm1d(h))
            elif spec.norm == "layer":
                layers.append(nn.LayerNorm(h))
            layers.append(activation(spec.activation))
            if spec.dropout > 0:
                layers.append(nn.Dropout(spec.dropout))
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class ConvDiscriminator(nn.Module):
    """DCGAN's discriminator: stride-2 convolutions (kernel 4, or 3 on maps under 8 pixels) with leaky
    ReLU, normalisation on every stage but the first (as in the paper), then a linear score."""

    def __init__(self, event_shape: tuple[int, ...], spec: DiscriminatorSpec) -> None:
        super().__init__()
        c, h, w = event_shape
        layers: list[nn.Module] = []
        for i, ch in enumerate(spec.hidden):
            layers.append(nn.Conv2d(c, ch, 4 if min(h, w) >= 8 else 3, stride=2, padding=1))
            h, w = (h + 1) // 2, (w + 1) // 2
            if i > 0 and spec.norm == "batch":
                layers.append(nn.BatchNorm2d(ch))
            elif i > 0 and spec.norm == "layer":
                layers.append(nn.GroupNorm(1, ch))  # one group: layer norm over (C, H, W) of each example
            layers.append(activation(spec.activation))
            if spec.dropout > 0:
                layers.append(nn.Dropout(spec.dropout))
            c = ch
        self.body = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            n_feat = self.body(torch.zeros(2, *event_shape)).shape[1]
        self.head = nn.Linear(n_feat, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)).squeeze(-1)


def build_generator(spec: GeneratorSpec, z_dim: int, event_shape: tuple[int, ...], output: str,
                    z_moments: tuple[float, float] = (0.0, 1.0)) -> nn.Module:
    """G for z of the given prior (mean, std), which the generator's first step standardizes."""
    what = f"generator: kind {spec.kind!r} with hidden {spec.hidden}"
    if spec.kind == "mlp":
        return checked_build(lambda: MLPGenerator(z_dim, event_shape, spec, output, z_moments), what)
    if len(event_shape) != 3:
        raise ValueError(f"generator.kind 'conv' needs image data (C, H, W), got event shape {event_shape}; use 'mlp'")
    return checked_build(lambda: ConvGenerator(z_dim, event_shape, spec, output, z_moments), what)


def build_discriminator(spec: DiscriminatorSpec, event_shape: tuple[int, ...]) -> nn.Module:
    what = f"discriminator: kind {spec.kind!r} with hidden {spec.hidden}"
    if spec.kind == "mlp":
        return checked_build(lambda: MLPDiscriminator(event_shape, spec), what)
    if len(event_shape) != 3:
        raise ValueError(
            f"discriminator.kind 'conv' needs image data (C, H, W), got event shape {event_shape}; use 'mlp'"
        )
    return checked_build(lambda: ConvDiscriminator(event_shape, spec), what)
