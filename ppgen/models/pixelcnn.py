"""PixelCNN and Gated PixelCNN: autoregressive image models with an exact likelihood.

An image of H x W pixels is generated one pixel at a time in raster order,
p(x) = prod_i p(x_i | x_1, ..., x_{i-1}), each conditional computed by a network whose convolutions are
masked so that the output at pixel i sees only the pixels before it (masks A and B, see
:mod:`ppgen.masked`). The likelihood of a whole image is one forward pass, so training is maximum
likelihood and evaluation is exact: no bound, no estimator, standard errors of zero.

- **PixelCNN** (van den Oord et al. 2016a): a 7x7 mask-A convolution, residual blocks (1x1, kxk mask B,
  1x1) and two 1x1 output layers. Stacked masked kernels grow a receptive field that misses a wedge
  to the upper right of each pixel, the "blind spot" (van den Oord et al. 2016b, Fig. 1).
- **Gated PixelCNN** (van den Oord et al. 2016b): a vertical stack that sees whole rows above (shifted
  down one row) and a horizontal stack that sees the current row to the left, joined by 1x1 links and
  gated units tanh(a) * sigmoid(b). Its receptive field has no blind spot.

Every family here is a Pyro model with one observed site ``x`` (and ``y`` when class-conditional): a
Bernoulli likelihood over all pixels for binarized images, a Categorical over ``levels`` grey values
for 8-bit grayscale (``data.binarize: none``). There are no latent variables, so with the empty guide
every ELBO that the ``svi`` routine offers *is* log p(x): SVI is maximum likelihood. A declared Gaussian
prior over the weights, ``prior.kind: normal``, adds log p(theta) to the model as a ``pyro.factor``
weighted by (batch size) / N, N the number of training examples, so that the per-example loss is
-log p(x) - log p(theta) / N and the optimum is the MAP estimate of p(theta | data).

The class-conditional variant (``conditional: true``) models p(x, y) = p(y) p(x | y) with a learned
class prior and per-layer class biases (van den Oord et al. 2016b, eq. 4 with a one-hot h). Bayes' rule
p(y | x) = p(x | y) p(y) / sum_y' p(x | y') p(y') turns it into a classifier, the lecture's point that a
joint model can always answer the discriminative question.

Sampling is pixel by pixel. The plain path re-runs the whole network for every pixel; the fast path
computes each activation once, when the pixels it depends on are final, from cached activation maps
(the idea of Paine et al. 2016 and Ramachandran et al. 2017), so drawing a whole image costs about one
forward pass. Both consume the same pre-drawn uniforms, so one seed gives the same images.

References:
    van den Oord, Kalchbrenner & Kavukcuoglu (2016a), Pixel Recurrent Neural Networks, ICML,
    arXiv:1601.06759.
    van den Oord, Kalchbrenner, Vinyals, Espeholt, Graves & Kavukcuoglu (2016b), Conditional Image
    Generation with PixelCNN Decoders, NeurIPS, arXiv:1606.05328.
    Paine, Khorrami, Chang, Zhang, Ramachandran, Hasegawa-Johnson & Huang (2016), Fast Wavenet
    Generation Algorithm, arXiv:1611.09482.
    Ramachandran et al. (2017), Fast Generation for Convolutional Autoregressive Models,
    arXiv:1704.06001.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, Protocol

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import nn

from ppgen.bounds import Bound, as_bound
from ppgen.contracts import DiagnosticFigures
from ppgen.data.core import DataInfo, Dataset
from ppgen.masked import MaskedConv2d, Padded, PointConv, down_shift, pointwise, raster_mask, vertical_mask
from ppgen.models.base import Family
from ppgen.registry import register_family
from ppgen.spec import ModelSpec, SpecError, Strict, changed

# --------------------------------------------------------------------------- specs


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


def _odd(value: int, info: Any) -> int:
    if value % 2 == 0:
        raise ValueError(f"must be odd so that a masked kernel has a centre pixel, got {value}")
    return value


class PixelCNNNetSpec(Strict):
    """``channels`` (2h in the paper) is the width of the residual stream; each residual block reduces it
    to ``channels // 2`` for its masked ``kernel`` x ``kernel`` convolution. ``head``: width of the first
    of the two 1x1 output layers."""

    channels: int = Field(64, ge=2, le=2048)
    first_kernel: int = Field(7, ge=1, le=31, description="side of the first, mask-A convolution")
    kernel: int = Field(3, ge=1, le=31, description="side of the mask-B convolutions of the residual blocks")
    blocks: int = Field(5, ge=0, le=128, description="number of residual blocks")
    head: int = Field(64, ge=1, le=4096)

    _odd_kernels = field_validator("first_kernel", "kernel")(_odd)


class PixelCNNSpec(PixelModelSpec):
    family: Literal["pixelcnn"] = "pixelcnn"
    net: PixelCNNNetSpec = Field(default_factory=PixelCNNNetSpec)


class GatedNetSpec(Strict):
    """``channels`` (p in the paper): gated units per layer in each stack; ``layers``: gated layers, the
    first with ``first_kernel`` (mask A in the horizontal stack), the others with ``kernel``."""

    channels: int = Field(32, ge=1, le=2048)
    first_kernel: int = Field(7, ge=1, le=31)
    kernel: int = Field(3, ge=1, le=31)
    layers: int = Field(6, ge=1, le=128)
    head: int = Field(64, ge=1, le=4096)

    _odd_kernels = field_validator("first_kernel", "kernel")(_odd)


class GatedPixelCNNSpec(PixelModelSpec):
    family: Literal["gated_pixelcnn"] = "gated_pixelcnn"
    net: GatedNetSpec = Field(default_factory=GatedNetSpec)


# --------------------------------------------------------------------------- shared pieces


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


class PixelFamily(Family, DiagnosticFigures):
    """The machinery every autoregressive image family shares: likelihood heads, the Pyro model and the
    empty guide, the fused loss, exact log-likelihoods, Bayes classification, sampling, completion and
    figures. A subclass builds ``self.net`` (a module mapping the network input (n, 1, H, W) and labels
    to output logits (n, K, H, W) and offering ``stepper(x_in, y, start)``) in :meth:`build_net`."""

    default_routine = "svi"
    variational_guide = True  # no latent sites, an empty guide: every ELBO is log p(x), SVI is maximum likelihood
    max_plate_nesting = 1
    # What fused_loss and the Pyro model compute -log p(x) from; a subclass that redefines one of them
    # without its own fused_loss is fitted through Pyro.
    fused_depends = ("model", "guide", "likelihood", "_pixel_dist", "logits", "net_input", "observed",
                     "pixel_log_probs", "log_prob", "log_prior", "class_log_prior", "num_data", "_labels")
    #: Images per forward pass when no gradient is needed (validation, evaluation): small batches keep
    #: the activation maps in cache; 500 MNIST images at once were 4x slower per image on a 2-core CPU.
    eval_chunk: int = 64

    def __init__(self, spec: PixelModelSpec, info: DataInfo) -> None:
        super().__init__(spec, info)
        shape = tuple(info.event_shape)
        if len(shape) != 3 or shape[0] != 1:
            raise ValueError(
                f"{spec.family} models one-channel images of shape (1, H, W); the data have event shape "
                f"{shape}. Use grayscale images (data.name mnist, digits or images)"
            )
        self.event_shape = shape
        self.height, self.width = shape[1], shape[2]
        kind = spec.likelihood.kind
        if kind == "auto":
            kind = "bernoulli" if info.kind == "binary" else "categorical"
        if kind == "bernoulli" and info.kind != "binary":
            raise ValueError(
                "likelihood.kind is 'bernoulli' but the data are intensities (data.binarize: none); set "
                "data.binarize to 'dynamic' or 'static', or likelihood.kind to 'categorical'"
            )
        if kind == "categorical" and info.kind == "binary":
            raise ValueError(
                "likelihood.kind is 'categorical' but the data are binarized; set data.binarize: none for "
                "8-bit grey values, or likelihood.kind to 'bernoulli'"
            )
        if kind == "bernoulli" and (spec.likelihood.levels is not None or spec.likelihood.scale is not None):
            raise ValueError("likelihood.levels and likelihood.scale apply to the categorical likelihood of grey values; "
                             "the data are binarized, so the likelihood is bernoulli: drop them or set data.binarize: none")
        self.kind = kind
        self.levels, self.scale = 2, 1.0
        if kind == "categorical":
            name = spec.data.name
            self.levels = spec.likelihood.levels or (17 if name == "digits" else 256)
            self.scale = float(spec.likelihood.scale or {"mnist": 256, "digits": 16}.get(name, self.levels - 1))
        self.num_classes: int | None = None
        if spec.conditional:
            if not info.num_classes:
                raise ValueError(
                    "conditional: true needs labelled data (mnist, digits, an npz with y, or an image folder "
                    "with one sub-folder per class); these data have no labels"
                )
            self.num_classes = int(info.num_classes)
        self._num_data = spec.prior.num_data or info.n_train
        self.net = self.build_net(1 if kind == "bernoulli" else self.levels, self.num_classes)
        if self.num_classes is not None:
            # log p(y) up to a constant; its maximum-likelihood value is the empirical class frequency.
            self.class_logits = nn.Parameter(torch.zeros(self.num_classes))

    def build_net(self, n_out: int, num_classes: int | None) -> nn.Module:
        raise NotImplementedError

    # -- data <-> network ----------------------------------------------------------------------
    def net_input(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel values in [-1, 1]: binary 0/1 or level / (levels - 1)."""
        if self.kind == "bernoulli":
            return 2.0 * x - 1.0
        return 2.0 * (x * self.scale) / (self.levels - 1) - 1.0

    def observed(self, x: torch.Tensor) -> torch.Tensor:
        """The value of the observed site: x itself (0/1) for Bernoulli, integer levels for Categorical;
        a ValueError, naming the fix, for values the likelihood cannot have produced."""
        if self.kind == "bernoulli":
            if not torch.all((x == 0) | (x == 1)):
                bad = x[(x != 0) & (x != 1)][0].item()
                raise ValueError(
                    f"the Bernoulli likelihood needs binary pixels (0 or 1), got a value {bad:g}; set "
                    "data.binarize to 'dynamic' or 'static'"
                )
            return x
        k = torch.round(x * self.scale)
        if (k - x * self.scale).abs().max() > 1e-3 or k.min() < 0 or k.max() > self.levels - 1:
            raise ValueError(
                f"the Categorical likelihood with {self.levels} levels and scale {self.scale:g} needs "
                f"intensities k / {self.scale:g} for integers k in 0..{self.levels - 1}; these data are not. "
                "Set likelihood.levels and likelihood.scale to how the data were quantized"
            )
        return k.long()

    def logits(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The network's output for every pixel in one pass: (n, 1, H, W) Bernoulli logits or
        (n, levels, H, W) Categorical logits of p(x_i | x_<i[, y])."""
        return self.net(self.net_input(x), y)

    def _pixel_dist(self, out: torch.Tensor) -> dist.Distribution:
        if self.kind == "bernoulli":
            return dist.Bernoulli(logits=out)
        return dist.Categorical(logits=out.permute(0, 2, 3, 1).unsqueeze(1))

    def likelihood(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dist.Distribution:
        """p(x | [y]) as one distribution over whole images (batch shape (n,), event shape (1, H, W)),
        its parameters computed from the observed x itself: the masks make this the autoregressive
        product."""
        return self._pixel_dist(self.logits(x, y)).to_event(3)

    def pixel_log_probs(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x_i | x_<i[, y]) for every pixel, shape (n, 1, H, W)."""
        out = self.logits(x, y)
        obs = self.observed(x)
        if self.kind == "bernoulli":
            return -F.binary_cross_entropy_with_logits(out, obs, reduction="none")
        return torch.log_softmax(out, dim=1).gather(1, obs)

    def log_prob(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Exact log p(x) (log p(x | y) when conditional), per example, in nats."""
        n, c = x.shape[0], self.eval_chunk
        if torch.is_grad_enabled() or n <= c:
            return self.pixel_log_probs(x, y).sum((1, 2, 3))
        return torch.cat([self.pixel_log_probs(x[s : s + c], None if y is None else y[s : s + c]).sum((1, 2, 3))
                          for s in range(0, n, c)])

    def class_log_prior(self) -> torch.Tensor:
        return torch.log_softmax(self.class_logits, 0)

    # -- the weight prior (MAP) ----------------------------------------------------------------
    def log_prior(self) -> torch.Tensor:
        """log p(theta) under Normal(0, scale^2) on every parameter (zero without a prior)."""
        if self.spec.prior.kind == "none":
            return self._zero()
        s = self.spec.prior.scale
        params = list(self.parameters())
        count = sum(p.numel() for p in params)
        sq = sum(p.pow(2).sum() for p in params)
        return -0.5 * sq / s**2 - count * (math.log(s) + 0.5 * math.log(2 * math.pi))

    def num_data(self) -> int:
        """N of log p(theta) / N: ``prior.num_data`` or the training-set size the model was built for."""
        if self._num_data is None:
            raise SpecError("prior.num_data: the model was built without the size of its training set "
                            "(DataInfo.n_train); set prior.num_data to the number of training examples")
        return self._num_data

    def _zero(self) -> torch.Tensor:
        return next(self.net.parameters()).new_zeros(())

    # -- Pyro model and guide ------------------------------------------------------------------
    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        n = x.shape[0]
        if self.spec.prior.kind == "normal":
            # SVI scales the model by 1/n, so this is log p(theta) / N per example: the MAP objective.
            pyro.factor("weight_prior", self.log_prior() * (n / self.num_data()))
        with pyro.plate("data", n):
            if self.num_classes is not None:
                y = self._labels(y, n)
                pyro.sample("y", dist.Categorical(logits=self.class_logits.expand(n, -1)), obs=y)
            return pyro.sample("x", self.likelihood(x, y), obs=self.observed(x))

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """Empty: there are no latent variables, so the ELBO is log p(x) exactly."""
        return None

    def _labels(self, y: torch.Tensor | None, n: int) -> torch.Tensor:
        if y is None:
            raise ValueError("this model is class-conditional (conditional: true): it needs the labels y")
        if y.shape != (n,):
            raise ValueError(f"labels y must have shape ({n},), got {tuple(y.shape)}")
        return y

    def fused_loss(self, x: torch.Tensor, elbo: Bound | str = "trace", num_particles: int = 1,
                   y: torch.Tensor | None = None) -> torch.Tensor:
        """Minus the summed objective of a batch without Pyro's tracing, equal to every bound of
        :data:`ppgen.bounds.BOUNDS` on this model with the empty guide: -sum log p(x) (and -log p(y) for a
        conditional model), minus the batch's share of the log weight prior for MAP."""
        # Without latent variables every particle of every bound equals log p(x): which bound, and how
        # many particles, change nothing (an unknown bound is still refused).
        as_bound(elbo, num_particles)
        loss = -self.log_prob(x, y).sum()
        if self.num_classes is not None:
            loss = loss - self.class_log_prior()[self._labels(y, x.shape[0])].sum()
        if self.spec.prior.kind == "normal":
            loss = loss - self.log_prior() * (x.shape[0] / self.num_data())
        return loss

    # -- exact likelihood and classification ---------------------------------------------------
    @torch.no_grad()
    def log_likelihood(
        self, x: torch.Tensor, k: int = 1000, y: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact per-example log p(x) in nats (log p(x | y) for a conditional model given y; without y
        the marginal log sum_y p(x | y) p(y)); the standard errors are zeros. ``k`` is unused."""
        if self.num_classes is None or y is not None:
            ll = self.log_prob(x, y)
        else:
            ll = torch.logsumexp(self.class_log_likelihoods(x) + self.class_log_prior(), dim=1)
        return ll, torch.zeros_like(ll)

    @torch.no_grad()
    def class_log_likelihoods(self, x: torch.Tensor, batch_size: int = 100) -> torch.Tensor:
        """log p(x | y) for every class y, shape (n, num_classes)."""
        if self.num_classes is None:
            raise ValueError("class_log_likelihoods needs a class-conditional model (conditional: true)")
        out = []
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size]
            cols = [self.log_prob(xb, torch.full((xb.shape[0],), k, dtype=torch.long, device=xb.device))
                    for k in range(self.num_classes)]
            out.append(torch.stack(cols, dim=1))
        return torch.cat(out)

    @torch.no_grad()
    def class_posterior(self, x: torch.Tensor) -> torch.Tensor:
        """log p(y | x) by Bayes' rule, shape (n, num_classes)."""
        joint = self.class_log_likelihoods(x) + self.class_log_prior()
        return joint - torch.logsumexp(joint, dim=1, keepdim=True)

    @torch.no_grad()
    def evaluate_extra(self, x: torch.Tensor, y: torch.Tensor | None) -> dict[str, float]:
        """For a conditional model with labels: ``bayes_accuracy`` (argmax_y p(x | y) p(y) against the
        labels) and the marginal NLL -log p(x) in nats and bits/dim, comparable with unconditional runs."""
        if self.num_classes is None or y is None:
            return {}
        joint = self.class_log_likelihoods(x) + self.class_log_prior()
        marginal = torch.logsumexp(joint, dim=1).double()
        nll = float(-marginal.mean())
        return {
            "bayes_accuracy": float((joint.argmax(1) == y).double().mean()),
            "marginal_nll_nats": nll,
            "marginal_bits_per_dim": nll / (self.height * self.width * math.log(2)),
        }

    @torch.no_grad()
    def inference_data(self, data: Dataset, metrics: list[dict[str, Any]], n_obs: int = 16, draws: int = 1000,
                       seed: int = 0) -> Any:
        """ArviZ data of a class-conditional model: for the first ``n_obs`` test images,

        - ``posterior``: ``y`` drawn from p(y | x) by Bayes' rule, dims (chain, draw, obs);
        - ``observed_data``: the images, dims (obs, pixel); ``constant_data``: their labels;
        - ``sample_stats``: the training loss trace.

        The weights are point estimates (maximum likelihood or MAP), so an unconditional model has no
        posterior to convert: ``None``."""
        if self.num_classes is None:
            return None
        import numpy as np

        from ppgen.arviz_data import arviz, loss_trace

        x, y = data.split("test")
        x = x[:n_obs].to(self.device)
        n = x.shape[0]
        probs = self.class_posterior(x).exp().cpu()
        gen = torch.Generator().manual_seed(seed)
        y_draws = torch.multinomial(probs, draws, replacement=True, generator=gen).T  # (draw, obs)
        kwargs: dict[str, Any] = {}
        stats = loss_trace(metrics)
        if stats:
            kwargs["sample_stats"] = stats
        if y is not None:
            kwargs["constant_data"] = {"label": y[:n].cpu().numpy()}
        return arviz().from_dict(
            posterior={"y": y_draws.numpy()[None]},
            observed_data={"x": x.reshape(n, -1).cpu().numpy()},
            coords={"obs": np.arange(n), "pixel": np.arange(self.height * self.width)},
            dims={"y": ["obs"], "x": ["obs", "pixel"], "label": ["obs"]},
            **kwargs,
        )

    # -- sampling ------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, y: torch.Tensor | None = None, fast: bool = True) -> torch.Tensor:
        """``n`` images drawn pixel by pixel, shape (n, 1, H, W), in the data's units (0/1 or
        level / scale). A conditional model draws y ~ p(y) unless ``y`` is given. ``fast`` picks the
        cached sampler; the plain one re-runs the network for every pixel. Both give the same images
        for the same random state."""
        if self.num_classes is not None:
            if y is None:
                y = dist.Categorical(logits=self.class_logits).sample((n,))
            y = self._labels(y.to(self.device), n)
        x = torch.zeros(n, *self.event_shape, device=self.device)
        return self._generate(x, 0, y, fast)

    @torch.no_grad()
    def complete(self, x: torch.Tensor, rows: int | None = None, y: torch.Tensor | None = None,
                 fast: bool = True) -> torch.Tensor:
        """Keep the first ``rows`` rows of each image (default: the upper half) and draw the rest from
        p(x_rest | x_kept[, y]). A conditional model without ``y`` first draws y from its exact posterior
        given the kept rows, p(y | x_kept), which the autoregressive order makes exact."""
        rows = self.height // 2 if rows is None else rows
        if not 0 <= rows < self.height:
            raise ValueError(f"rows must be in 0..{self.height - 1} (rows kept from the top), got {rows}")
        x = x.detach().to(self.device).clone().reshape(-1, *self.event_shape)
        self.observed(x)
        start = rows * self.width
        x[:, :, rows:, :] = 0.0
        if self.num_classes is not None:
            if y is None:
                y = dist.Categorical(logits=self.prefix_class_posterior(x, start)).sample()
            y = self._labels(y.to(self.device), x.shape[0])
        return self._generate(x, start, y, fast)

    @torch.no_grad()
    def prefix_class_posterior(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """log p(y | x_1..x_{start-1}): the first ``start`` pixels' log-likelihood under each class
        (exact: a prefix of the autoregressive product) plus log p(y), normalised."""
        n = x.shape[0]
        keep = torch.zeros(self.height * self.width, device=x.device)
        keep[:start] = 1.0
        keep = keep.reshape(1, 1, self.height, self.width)
        cols = []
        for k in range(self.num_classes or 0):
            lp = self.pixel_log_probs(x, torch.full((n,), k, dtype=torch.long, device=x.device))
            cols.append((lp * keep).sum((1, 2, 3)))
        joint = torch.stack(cols, 1) + self.class_log_prior()
        return joint - torch.logsumexp(joint, 1, keepdim=True)

    def _generate(self, x: torch.Tensor, start: int, y: torch.Tensor | None, fast: bool) -> torch.Tensor:
        n, h, w = x.shape[0], self.height, self.width
        # One uniform per pixel, drawn up front and turned into a value by the inverse CDF: the fast
        # and the plain path then consume identical randomness and draw identical images.
        u = torch.rand(n, h, w, device=x.device)
        net = self.net
        stepper: Stepper | None = net.stepper(self.net_input(x), y, start) if fast else None
        for idx in range(start, h * w):
            r, c = divmod(idx, w)
            if stepper is not None:
                out = stepper.logits_at(r, c)
            else:
                out = net(self.net_input(x), y)[:, :, r, c]
            value = self._draw(out, u[:, r, c])
            x[:, 0, r, c] = value
            if stepper is not None:
                stepper.set_pixel(r, c, self.net_input(value).unsqueeze(1))
        return x

    def _draw(self, out: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """A pixel value from (n, K) logits and (n,) uniforms by the inverse CDF."""
        if self.kind == "bernoulli":
            return (u < torch.sigmoid(out[:, 0])).to(out.dtype)
        cdf = torch.softmax(out, dim=1).cumsum(1)
        k = (cdf < u.unsqueeze(1)).sum(1).clamp(max=self.levels - 1)
        return k.to(out.dtype) / self.scale

    # -- figures -------------------------------------------------------------------------------
    def figures(self, folder: Path, data: Dataset) -> dict[str, Path]:
        """``samples.png`` (one row per class when conditional) and ``completions.png`` (test images
        with the lower half drawn by the model)."""
        from ppgen import plots

        folder = Path(folder)
        out: dict[str, Path] = {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            if self.num_classes is not None:
                k = min(self.num_classes, 10)
                y = torch.arange(k, device=self.device).repeat_interleave(8)
                x = self.sample(len(y), y=y)
                out["samples"] = plots.save_samples(x, folder / "samples.png", "samples, one row per class", nrow=8)
            else:
                x = self.sample(64)
                out["samples"] = plots.save_samples(x, folder / "samples.png", "samples drawn pixel by pixel", nrow=8)
            x_test, y_test = data.split("test")
            out["completions"] = self.completion_figure(x_test[:8], y_test[:8] if y_test is not None else None,
                                                        folder / "completions.png")
        return out

    def diagnostic_figures(self, idata: Any, folder: Path) -> dict[str, Path]:
        """``posterior.png``: p(y | x) over the classes for the first test images (a class-conditional
        model's posterior, by Bayes' rule); ``loss_trace.png``."""
        from ppgen import plots

        folder = Path(folder)
        draws = idata.posterior.sizes["chain"] * idata.posterior.sizes["draw"]
        out = {"posterior": plots.posterior_figure(
            idata, folder / "posterior.png", "y", n_obs=8,
            title=f"class posterior p(y | x) by Bayes' rule for the first test images (share of {draws} draws)",
            probability="p(y | x)")}
        trace = plots.loss_trace_figure(idata, folder / "loss_trace.png")
        if trace is not None:
            out["loss_trace"] = trace
        return out

    @torch.no_grad()
    def completion_figure(self, x: torch.Tensor, y: torch.Tensor | None, path: Path, draws: int = 3) -> Path:
        """Rows: the test images, their upper halves (the hidden lower half checkered), then ``draws``
        completions."""
        from ppgen import plots

        x = x.to(self.device)
        m = x.shape[0]
        rows = self.height // 2
        shown = x.clone()
        # The hidden half as a grey checkerboard: unlike flat grey it cannot be mistaken for the padding.
        ii, jj = torch.meshgrid(torch.arange(self.height - rows), torch.arange(self.width), indexing="ij")
        shown[:, :, rows:, :] = (0.3 + 0.4 * ((ii + jj) % 2)).to(shown)
        reps = x.repeat(draws, 1, 1, 1)
        y_rep = y.to(self.device).repeat(draws) if (y is not None and self.num_classes is not None) else None
        done = self.complete(reps, rows, y=y_rep)
        grid = torch.cat([x, shown, done]).cpu()
        fig, ax = plots.subplots(figsize=(1.0 * m + 0.5, 1.0 * (draws + 2) + 0.5))
        plots.show_grid(ax, grid, nrow=m, title=f"test images, upper halves, {draws} completions of the lower half")
        return plots.save_figure(fig, path)


# --------------------------------------------------------------------------- PixelCNN


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


# --------------------------------------------------------------------------- Gated PixelCNN


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
