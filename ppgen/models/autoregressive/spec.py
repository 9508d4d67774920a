"""The spec sections the autoregressive image families share (PixelCNN, Gated PixelCNN, PixelRNN): the
pixel likelihood, the weight prior, class conditioning, and the rule that a masked kernel is odd."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ppgen.spec import ModelSpec, Strict, changed


class PixelLikelihoodSpec(Strict):
    """The distribution of one pixel given the pixels before it.

    ``auto`` takes ``bernoulli`` for binarized data and ``categorical`` for intensities
    (``data.binarize: none``). The categorical has ``levels`` grey values; a pixel of intensity v is
    level round(v * ``scale``). Left out, they follow the data: MNIST stores byte / 256 (256 levels,
    scale 256), scikit-learn's digits count / 16 (17 levels, scale 16), images and integer npz files
    byte / 255 (256 levels, scale 255).
    """

    kind: Literal["auto", "bernoulli", "categorical"] = "auto"
    levels: int | None = Field(None, ge=2, le=4096, description="number of grey values (categorical)")
    scale: float | None = Field(None, gt=0, description="level = round(intensity * scale) (categorical)")

    @model_validator(mode="after")
    def _check(self) -> "PixelLikelihoodSpec":
        if self.kind == "bernoulli" and (self.levels is not None or self.scale is not None):
            raise ValueError("likelihood.levels and likelihood.scale apply to kind 'categorical', not 'bernoulli'")
        return self


class WeightPriorSpec(Strict):
    """``none``: maximum likelihood. ``normal``: every parameter theta_j ~ Normal(0, ``scale``^2) and the
    fit is the MAP estimate; the log prior enters the per-example loss as log p(theta) / ``num_data``
    (left out: the number of training examples of the spec's data)."""

    kind: Literal["none", "normal"] = "none"
    scale: float = Field(1.0, gt=0, description="standard deviation of the Normal prior on each weight")
    num_data: int | None = Field(None, ge=1, description="N in log p(theta) / N; default: the training-set size")

    @model_validator(mode="after")
    def _check(self) -> "WeightPriorSpec":
        unused = changed(self, "scale", "num_data") if self.kind == "none" else []
        if unused:
            raise ValueError(f"prior.{unused[0]} applies only with prior.kind 'normal'")
        return self


class PixelModelSpec(ModelSpec):
    """What the autoregressive image families share: the pixel likelihood, the weight prior and whether
    the model is class-conditional."""

    likelihood: PixelLikelihoodSpec = Field(default_factory=PixelLikelihoodSpec)
    prior: WeightPriorSpec = Field(default_factory=WeightPriorSpec)
    conditional: bool = Field(False, description="model p(x, y) = p(y) p(x | y) with the data's labels")

    @model_validator(mode="after")
    def _check_images(self) -> "PixelModelSpec":
        if self.data.name in ("toy1d", "toy2d"):
            raise ValueError(f"family {self.family!r} models images; data.name {self.data.name!r} holds points")
        return self


def odd_kernel(value: int, info: Any) -> int:
    if value % 2 == 0:
        raise ValueError(f"must be odd so that a masked kernel has a centre pixel, got {value}")
    return value
