"""Variational autoencoder: a latent Normal(0, I) prior, a neural likelihood p(x|z) and an amortized
Gaussian guide q(z|x), fitted by stochastic variational inference on the ELBO or the IWAE bound.

With a linear decoder and a Gaussian likelihood of learned isotropic scale the model is probabilistic
PCA (Tipping & Bishop 1999), whose exact marginal likelihood the tests use to check the estimators.

References:
    Kingma & Welling (2013), Auto-Encoding Variational Bayes, arXiv:1312.6114.
    Rezende, Mohamed & Wierstra (2014), Stochastic Backpropagation and Approximate Inference in Deep
    Generative Models, arXiv:1401.4082.
    Burda, Grosse & Salakhutdinov (2015), Importance Weighted Autoencoders, arXiv:1509.00519.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import pyro
import pyro.distributions as dist
from torch.distributions import kl_divergence
import torch
from pydantic import Field, model_validator
from torch import nn

from ppgen.arviz_data import arviz, declare_independent, loss_trace
from ppgen.bounds import Bound, ImportanceWeighted, MeanField, Trace, as_bound
from ppgen.contracts import MeanSamples
from ppgen.data.core import DataInfo, Dataset
from ppgen.models.base import Family, importance_chunk, mean_of_weights
from ppgen.nets.blocks import NetSpec, build_decoder, build_encoder
from ppgen.registry import register_family
from ppgen.spec import ModelSpec, SpecError, Strict, changed


class LatentSpec(Strict):
    dim: int = Field(2, ge=1, le=4096)
    prior: Literal["normal"] = "normal"


class LikelihoodSpec(Strict):
    """``bernoulli`` for binary data; ``gaussian`` with a fixed ``scale`` or, with ``learn_scale``, an
    isotropic scale learned from ``scale`` as its starting value."""

    kind: Literal["bernoulli", "gaussian"] = "bernoulli"
    scale: float = Field(0.1, gt=0)
    learn_scale: bool = False

    @model_validator(mode="after")
    def _check_applies(self) -> "LikelihoodSpec":
        unused = changed(self, "scale", "learn_scale") if self.kind == "bernoulli" else []
        if unused:
            raise ValueError(f"likelihood.{unused[0]} applies to kind 'gaussian', not 'bernoulli'")
        return self


class VAESpec(ModelSpec):
    family: Literal["vae"] = "vae"
    latent: LatentSpec = Field(default_factory=LatentSpec)
    likelihood: LikelihoodSpec = Field(default_factory=LikelihoodSpec)
    encoder: NetSpec = Field(default_factory=NetSpec)
    decoder: NetSpec = Field(default_factory=NetSpec)

    @model_validator(mode="after")
    def _check(self) -> "VAESpec":
        if self.likelihood.kind == "bernoulli" and self.data.name in ("toy1d", "toy2d"):
            raise ValueError("likelihood.kind 'bernoulli' needs binary data; use 'gaussian' for toy data")
        return self


@register_family("vae")
class VAE(Family, MeanSamples):
    """Variational autoencoder: z ~ N(0, I), x ~ p(x | decoder(z)), fitted with an amortized q(z|x)."""

    Spec = VAESpec
    default_routine = "svi"
    variational_guide = True  # q(z | x) is a variational posterior of the model's z: SVI fits it
    max_plate_nesting = 1
    importance_samples = True
    # fused_loss restates these in closed form; a subclass that redefines one of them (a mixture prior,
    # a flow posterior) without its own fused_loss is fitted through Pyro.
    fused_depends = ("model", "guide", "prior", "posterior", "likelihood", "_log_lik")

    def __init__(self, spec: VAESpec, info: DataInfo) -> None:
        super().__init__(spec, info)
        if spec.likelihood.kind == "bernoulli" and info.kind != "binary":
            raise ValueError(
                "likelihood.kind is 'bernoulli' but the data are continuous (data.binarize is 'none'); "
                "set data.binarize to 'dynamic' or 'static', or likelihood.kind to 'gaussian'"
            )
        self.z_dim = spec.latent.dim
        self.event_shape = info.event_shape
        self.encoder = build_encoder(spec.encoder, info.event_shape, 2 * self.z_dim)
        self.decoder = build_decoder(spec.decoder, self.z_dim, info.event_shape)
        log_scale = torch.tensor(math.log(spec.likelihood.scale))
        if spec.likelihood.learn_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)
        self.register_buffer("_zero", torch.zeros(()))

    # -- distributions ------------------------------------------------------------------------
    def prior(self, batch: tuple[int, ...] = ()) -> dist.Distribution:
        zeros = self._zero.expand(*batch, self.z_dim)
        return dist.Normal(zeros, torch.ones_like(zeros)).to_event(1)

    def posterior(self, x: torch.Tensor) -> dist.Distribution:
        """q(z|x): a diagonal Gaussian whose parameters the encoder computes."""
        h = self.encoder(x)
        loc, raw = h[..., : self.z_dim], h[..., self.z_dim :]
        return dist.Normal(loc, nn.functional.softplus(raw) + 1e-4).to_event(1)

    def likelihood(self, z: torch.Tensor) -> dist.Distribution:
        """p(x|z) for z of shape (..., z_dim), batched over the leading dims."""
        batch = z.shape[:-1]
        out = self.decoder(z.reshape(-1, self.z_dim))
        out = out.reshape(*batch, *self.event_shape)
        n_event = len(self.event_shape)
        if self.spec.likelihood.kind == "bernoulli":
            return dist.Bernoulli(logits=out, validate_args=False).to_event(n_event)
        return dist.Normal(out, self.log_scale.exp().expand_as(out)).to_event(n_event)

    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        """E[x|z]: pixel probabilities or Gaussian means, shape (batch, *event_shape)."""
        return self.likelihood(z).mean

    # -- Pyro model and guide (site names shared: "z", observed "x") --------------------------
    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior((x.shape[0],)))
            return pyro.sample("x", self.likelihood(z), obs=x)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("z", self.posterior(x))

    # -- fused objectives: the same numbers as Pyro's ELBOs, without the tracing overhead -----
    def fused_loss(self, x: torch.Tensor, elbo: Bound | str, num_particles: int = 1,
                   y: torch.Tensor | None = None) -> torch.Tensor:
        """Minus the summed bound over the batch, equal to Pyro's Trace_ELBO (:class:`~ppgen.bounds.Trace`),
        TraceMeanField_ELBO (:class:`~ppgen.bounds.MeanField`) or ppgen's per-example
        :class:`~ppgen.inference.svi.IWAE` (:class:`~ppgen.bounds.ImportanceWeighted`) on this model and
        guide, from the same random draws. ``elbo`` is the bound, or its name with ``num_particles``.
        ``y`` is unused: the VAE models x alone. Valid for this class's own ``prior``, ``posterior`` and ``likelihood`` only (see
        ``fused_depends``).

        Written with plain tensor operations rather than distribution objects: this runs once per
        training step, and the objects' construction and checks cost about a tenth of a step.
        """
        bound = as_bound(elbo, num_particles)
        num_particles = bound.num_particles
        iwae = isinstance(bound, ImportanceWeighted)
        h = self.encoder(x)
        loc = h[..., : self.z_dim]
        scale = nn.functional.softplus(h[..., self.z_dim :]) + 1e-4
        per_example = num_particles > 1 or iwae
        eps = torch.randn((num_particles, *loc.shape) if per_example else loc.shape, dtype=loc.dtype, device=loc.device)
        z = loc + eps * scale
        log_lik = self._log_lik(z, x, reduce=not per_example)
        if isinstance(bound, MeanField):
            kl = 0.5 * (loc.pow(2) + scale.pow(2) - 1).sum() - scale.log().sum()
            return kl - (log_lik.mean(0).sum() if per_example else log_lik)
        # log p(z) - log q(z|x), the normalising constants cancel
        log_ratio = (0.5 * (eps.pow(2) - z.pow(2))).sum(-1) + scale.log().sum(-1)
        if isinstance(bound, Trace):
            return -(log_lik.mean(0).sum() + log_ratio.mean(0).sum() if per_example else log_lik + log_ratio.sum())
        if iwae:
            return -(torch.logsumexp(log_lik + log_ratio, 0) - math.log(num_particles)).sum()
        raise SpecError(f"elbo: the vae family has no closed form of the {type(bound).__name__} bound; use fused: false")

    def _log_lik(self, z: torch.Tensor, x: torch.Tensor, reduce: bool) -> torch.Tensor:
        """log p(x|z) summed over each example (shape ``z.shape[:-1]``), or over everything if ``reduce``."""
        out = self.decoder(z.reshape(-1, self.z_dim)).reshape(*z.shape[:-1], *self.event_shape)
        target = x.expand_as(out)
        if self.spec.likelihood.kind == "bernoulli":
            nll = nn.functional.binary_cross_entropy_with_logits(out, target, reduction="sum" if reduce else "none")
        else:
            log_scale = self.log_scale
            nll = 0.5 * ((target - out) * torch.exp(-log_scale)).pow(2) + log_scale + 0.5 * math.log(2 * math.pi)
            nll = nll.sum() if reduce else nll
        return -nll if reduce else -nll.flatten(z.dim() - 1).sum(-1)

    # -- sampling and likelihood -----------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, mean: bool = False) -> torch.Tensor:
        z = self.prior((n,)).sample()
        lik = self.likelihood(z)
        return lik.mean if mean else lik.sample()

    @torch.no_grad()
    def display_samples(self, n: int) -> torch.Tensor:
        return self.sample(n, mean=True)

    @torch.no_grad()
    def log_likelihood(
        self, x: torch.Tensor, k: int = 1000, y: torch.Tensor | None = None, chunk: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Importance-sampling estimate of log p(x) with q(z|x) as proposal and ``k`` samples:
        log (1/k) sum_i p(x, z_i) / q(z_i|x), the IWAE bound at ``k`` (Burda et al. 2015, eq. 8).

        The standard error of each estimate is the delta-method error of the log of the mean weight.
        ``chunk`` samples are drawn at a time (default :func:`~ppgen.models.base.importance_chunk`).
        """
        chunk = chunk or importance_chunk(x.shape[0] * math.prod(x.shape[1:]))
        q = self.posterior(x)
        log_ws = []
        for start in range(0, k, chunk):
            m = min(chunk, k - start)
            z = q.sample((m,))
            log_ws.append(self.likelihood(z).log_prob(x) + self.prior(z.shape[:-1]).log_prob(z) - q.log_prob(z))
        log_w = torch.cat(log_ws, 0)
        return mean_of_weights(log_w)

    @torch.no_grad()
    def evaluate_extra(self, x: torch.Tensor, y: torch.Tensor | None) -> dict[str, float]:
        q = self.posterior(x)
        z = q.rsample()
        lik = self.likelihood(z)
        kl = kl_divergence(q, self.prior(x.shape[:1]))
        elbo = lik.log_prob(x) - kl
        err = ((self.likelihood(q.mean).mean - x) ** 2).flatten(1).sum(1)
        return {
            "elbo": float(elbo.mean()),
            "kl": float(kl.mean()),
            "reconstruction_log_lik": float(lik.log_prob(x).mean()),
            "reconstruction_sq_error": float(err.mean()),
        }


    def inference_data(self, data: Dataset, metrics: list[dict[str, Any]]) -> Any:
        return vae_inference_data(self, data, metrics)


@torch.no_grad()
def vae_inference_data(model: Any, data: Any, metrics: list[dict[str, Any]], n_obs: int = 16,
                       draws: int = 200, seed: int = 0) -> Any:
    """InferenceData for a VAE: for the first ``n_obs`` test examples,

    - ``posterior``: ``z`` drawn from q(z|x), dims (chain, draw, obs, latent);
    - ``posterior_predictive``: ``x`` reconstructions E[x|z] at those draws, dims (chain, draw, obs, pixel);
    - ``observed_data``: the examples, dims (obs, pixel);
    - ``sample_stats``: the training loss trace, dims (chain, draw=record);
    - ``constant_data``: the labels of the examples, where the data have them.

    The ``draws`` independent draws from q(z|x) are laid out as several chains
    (:func:`ppgen.program.chains.arrange`) for ArviZ's plots and declared independent
    (:func:`ppgen.arviz_data.declare_independent`): R-hat and the ESS, diagnostics of Markov chains, do not apply.
    """
    from ppgen.program.chains import arrange

    az = arviz()
    gen_state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        x, y = data.split("test")
        n_obs = min(n_obs, x.shape[0])
        x = x[:n_obs].to(model.device)
        q = model.posterior(x)
        z = q.sample((draws,))  # (draw, obs, latent)
        recon = model.decode_mean(z.reshape(-1, model.z_dim)).reshape(draws, n_obs, -1)
    finally:
        torch.set_rng_state(gen_state)
    obs = np.arange(n_obs)
    coords = {"obs": obs, "latent": np.arange(model.z_dim), "pixel": np.arange(recon.shape[-1])}
    stats = loss_trace(metrics)
    kwargs: dict[str, Any] = {}
    if stats:
        kwargs["sample_stats"] = stats
    if y is not None:
        kwargs["constant_data"] = {"label": y[:n_obs].cpu().numpy()}
    idata = az.from_dict(
        posterior={"z": arrange(z.cpu().numpy())},
        posterior_predictive={"x": arrange(recon.cpu().numpy())},
        observed_data={"x": x.reshape(n_obs, -1).cpu().numpy()},
        coords=coords,
        dims={"z": ["obs", "latent"], "x": ["obs", "pixel"], "label": ["obs"]},
        **kwargs,
    )
    return declare_independent(idata, "posterior", "posterior_predictive")
