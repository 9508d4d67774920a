"""Generative adversarial networks: an explicit prior over z and an implicit likelihood x = G(z).

The generator is a Pyro model: ``z ~ p(z)`` (Normal(0, I) or Uniform(low, high), declared in the spec)
and ``x = G(z)``, a deterministic site. It has no density, so there is no ``log_likelihood`` (it
returns ``None``): the data enter only through the discriminator D, a classifier of real versus generated
examples trained by :mod:`ppgen.inference.adversarial` in the two-player game of Goodfellow et al.

    min_G max_D  E_x[log D(x)] + E_z[log(1 - D(G(z)))].

Networks (:mod:`ppgen.nets.gan`): MLPs, or the DCGAN design of Radford et al. (transposed convolutions
with batch norm in G, strided convolutions with leaky ReLU in D). The discriminator outputs a real score
(a logit for the minimax and non-saturating losses, a critic value for the Wasserstein and hinge losses).

The family also holds ``generator_ema``, an exponential moving average of the generator's weights that
the routine keeps when the recipe sets ``ema`` (Yazici et al. 2019); ``sample`` draws from it once it
has been updated, and since it is part of the module's ``state_dict`` every checkpoint carries it.

References:
    Goodfellow et al. (2014), Generative Adversarial Nets, NeurIPS; arXiv:1406.2661.
    Radford, Metz & Chintala (2016), Unsupervised Representation Learning with Deep Convolutional
    Generative Adversarial Networks, ICLR; arXiv:1511.06434.
    Yazici et al. (2019), The Unusual Effectiveness of Averaging in GAN Training, ICLR; arXiv:1806.04498.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Literal

import pyro
import pyro.distributions as dist
import torch
from pydantic import Field, model_validator
from torch import nn

from ppgen.data.core import DataInfo, Dataset
from ppgen.models.base import Family
from ppgen.nets.gan import DiscriminatorSpec, GeneratorSpec, build_discriminator, build_generator
from ppgen.registry import register_family
from ppgen.spec import ModelSpec, Strict

#: Data sources whose examples are images in [0, 1] that ppgen binarizes by default.
IMAGE_SOURCES = ("mnist", "digits", "images")


# --------------------------------------------------------------------------- spec


class GANLatentSpec(Strict):
    """The prior p(z): ``normal`` is N(0, I); ``uniform`` is Uniform(low, high) in each coordinate
    (with dim 1 and [0, 1] the generator learns the inverse CDF of a 1-D target)."""

    dim: int = Field(64, ge=1, le=4096)
    prior: Literal["normal", "uniform"] = "normal"
    low: float | None = Field(None, description="uniform prior only; default 0")
    high: float | None = Field(None, description="uniform prior only; default 1")

    @model_validator(mode="after")
    def _check(self) -> "GANLatentSpec":
        if self.prior == "normal" and (self.low is not None or self.high is not None):
            raise ValueError("latent.low and latent.high apply to prior 'uniform' only; remove them or set prior: uniform")
        if self.bounds[0] >= self.bounds[1]:
            raise ValueError(f"latent.low ({self.bounds[0]}) must be below latent.high ({self.bounds[1]})")
        return self

    @property
    def bounds(self) -> tuple[float, float]:
        """(low, high) of the uniform prior."""
        return (0.0 if self.low is None else self.low, 1.0 if self.high is None else self.high)


class GANSpec(ModelSpec):
    family: Literal["gan"] = "gan"
    latent: GANLatentSpec = Field(default_factory=GANLatentSpec)
    generator: GeneratorSpec = Field(default_factory=GeneratorSpec)
    discriminator: DiscriminatorSpec = Field(default_factory=DiscriminatorSpec)

    @model_validator(mode="after")
    def _check(self) -> "GANSpec":
        if self.data.name in IMAGE_SOURCES and self.data.binarize != "none":
            got = self.data.binarize or "the default, dynamic"
            raise ValueError(
                f"data.binarize is {got!r}, but a GAN's generator outputs continuous intensities and its "
                "discriminator would tell binary images apart by their values alone; set data.binarize: none"
            )
        return self


# --------------------------------------------------------------------------- the family


@register_family("gan")
class GAN(Family):
    """Generative adversarial network: z ~ p(z), x = G(z), fitted against a discriminator; no likelihood."""

    Spec = GANSpec
    default_routine = "adversarial"
    generator: nn.Module
    discriminator: nn.Module
    generator_ema: nn.Module
    ema_updates: torch.Tensor

    def __init__(self, spec: GANSpec, info: DataInfo) -> None:
        super().__init__(spec, info)
        if info.kind == "binary":
            raise ValueError(
                "the data are binarized, but a GAN's generator outputs continuous values; set data.binarize: none"
            )
        self.z_dim = spec.latent.dim
        self.event_shape = tuple(info.event_shape)
        output = spec.generator.output
        if output == "auto":
            output = "sigmoid" if len(self.event_shape) == 3 else "identity"
        self.output = output
        low, high = spec.latent.bounds
        moments = ((low + high) / 2, (high - low) / math.sqrt(12)) if spec.latent.prior == "uniform" else (0.0, 1.0)
        self.generator = build_generator(spec.generator, self.z_dim, self.event_shape, output, moments)
        self.discriminator = build_discriminator(spec.discriminator, self.event_shape)
        # The moving average starts as a copy (deepcopy draws no random numbers) and is frozen: only the
        # routine writes it, never an optimizer.
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        self.register_buffer("_low", torch.tensor(float(low)))
        self.register_buffer("_high", torch.tensor(float(high)))

    # -- distributions ------------------------------------------------------------------------
    def prior(self, batch: tuple[int, ...] = ()) -> dist.Distribution:
        """p(z) with batch shape ``batch`` and event shape (z_dim,)."""
        shape = (*batch, self.z_dim)
        if self.spec.latent.prior == "uniform":
            return dist.Uniform(self._low.expand(shape), self._high.expand(shape)).to_event(1)
        zeros = self._low.new_zeros(shape)
        return dist.Normal(zeros, torch.ones_like(zeros)).to_event(1)

    def generate(self, z: torch.Tensor, ema: bool | None = None) -> torch.Tensor:
        """G(z) for z of shape (batch, z_dim); ``ema`` picks the averaged generator (default: when it
        has been updated)."""
        return self._generator(ema)(z)

    def _generator(self, ema: bool | None) -> nn.Module:
        use = bool(self.ema_updates > 0) if ema is None else ema
        if use and int(self.ema_updates) == 0:
            raise ValueError("ema=True, but this GAN was not trained with a moving average (recipe key 'ema')")
        return self.generator_ema if use else self.generator

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """D(x): one real score per example (a logit or a critic value, depending on the loss)."""
        return self.discriminator(x)

    # -- Pyro model and guide -------------------------------------------------------------------
    def model(self, x: torch.Tensor | None = None, y: torch.Tensor | None = None, n: int | None = None) -> torch.Tensor:
        """z ~ p(z), x = G(z) for ``n`` examples (or as many as ``x`` has). The likelihood is implicit:
        ``x`` is a deterministic site, so an observed ``x`` sets the batch size but cannot be scored;
        the data reach a GAN only through its discriminator."""
        if n is None:
            if x is None:
                raise ValueError("GAN.model needs x or n to know how many examples to draw")
            n = x.shape[0]
        with pyro.plate("data", n):
            z = pyro.sample("z", self.prior((n,)))
            return pyro.deterministic("x", self.generate(z, ema=False), event_dim=len(self.event_shape))

    def guide(self, x: torch.Tensor | None = None, y: torch.Tensor | None = None, n: int | None = None) -> None:
        """Empty: a GAN learns no posterior q(z|x). With this guide ``pyro.infer.Predictive`` draws z from
        the prior, which is how the generator samples."""
        return None

    # -- sampling; no likelihood ----------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, ema: bool | None = None) -> torch.Tensor:
        """``n`` draws G(z), z ~ p(z), shape (n, *event_shape), computed in eval mode (batch norm uses its
        running statistics, so a sample never depends on the other samples of its batch)."""
        gen = self._generator(ema)
        with eval_mode(gen):
            return gen(self.prior((n,)).sample())

    def log_likelihood(self, x: torch.Tensor, k: int = 1000,
                       y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``None``: x = G(z) is a deterministic map of z into a manifold of dimension at most z_dim, so
        the model has no density on the data space; a GAN is measured by its samples instead
        (:mod:`ppgen.evaluation.quality`)."""
        return None

    @torch.no_grad()
    def evaluate_extra(self, x: torch.Tensor, y: torch.Tensor | None) -> dict[str, float]:
        """Mean discriminator scores of the test examples and of as many generated ones, and their gap:
        for the Wasserstein critic the gap estimates W1 (up to the critic's Lipschitz constant); a large
        gap under the other losses means the discriminator still tells the two apart."""
        real, fake = [], []
        with eval_mode(self):
            for start in range(0, x.shape[0], 1000):
                xb = x[start : start + 1000]
                real.append(self.score(xb))
                fake.append(self.score(self.sample(xb.shape[0])))
        r, f = torch.cat(real), torch.cat(fake)
        return {"critic_real": float(r.mean()), "critic_fake": float(f.mean()), "critic_gap": float(r.mean() - f.mean())}

    # -- ArviZ -------------------------------------------------------------------------------

    @torch.no_grad()
    def inference_data(self, data: Dataset, metrics: list[dict[str, Any]], draws: int = 20, seed: int = 0) -> Any:
        """A GAN has no posterior (no inference network, point-estimate weights); its InferenceData holds
        what it has:

        - ``prior``: ``z`` drawn from p(z), dims (chain, draw, obs, latent);
        - ``posterior_predictive``: ``x`` = G(z), the fitted model's predictive distribution, dims (chain,
          draw, obs, pixel) for images (flattened, as the other families' InferenceData name them) and
          (chain, draw, obs, value) for vectors: ``draws`` replicate data sets, each as large as the observed
          one, which ``az.plot_ppc(idata)`` sets against
        - ``observed_data``: test examples (500, or 16 images), dims (obs, pixel) or (obs, value);
        - ``sample_stats``: the training trace (discriminator and generator losses), dims (chain, draw=record).

        The replicates are independent draws, laid out as chains (:func:`ppgen.program.chains.arrange`) for
        ArviZ's plots and declared independent (:func:`ppgen.arviz_data.declare_independent`): no R-hat or ESS.
        """
        from ppgen.arviz_data import arviz, declare_independent, loss_trace
        from ppgen.program.chains import arrange

        az = arviz()
        x_obs = data.split("test")[0]
        n_obs = min(len(x_obs), 16 if len(self.event_shape) == 3 else 500)
        x_obs = x_obs[:n_obs].reshape(n_obs, -1)
        with eval_mode(self), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            z = self.prior((draws, n_obs)).sample()
            x_gen = self._generator(None)(z.reshape(-1, self.z_dim)).reshape(draws, n_obs, -1)
        stats = loss_trace(metrics)
        flat = "pixel" if len(self.event_shape) == 3 else "value"  # an image's pixels, flattened
        kwargs: dict[str, Any] = {"sample_stats": stats} if stats else {}
        idata = az.from_dict(
            prior={"z": arrange(z.cpu().numpy())},
            posterior_predictive={"x": arrange(x_gen.cpu().numpy())},
            observed_data={"x": x_obs.cpu().numpy()},
            coords={"obs": list(range(n_obs)), "latent": list(range(self.z_dim)), flat: list(range(x_obs.shape[1]))},
            dims={"z": ["obs", "latent"], "x": ["obs", flat]},
            **kwargs,
        )
        return declare_independent(idata, "prior", "posterior_predictive")


class eval_mode:
    """Put a module in eval mode for a block and restore each submodule's mode afterwards."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.modes: list[tuple[nn.Module, bool]] = []

    def __enter__(self) -> nn.Module:
        self.modes = [(m, m.training) for m in self.module.modules()]
        self.module.eval()
        return self.module

    def __exit__(self, *exc: Any) -> None:
        for m, mode in self.modes:
            m.training = mode
