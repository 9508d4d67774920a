"""The Bayesian workflow for families whose parameters are global latent variables with declared priors
(Gaussian mixtures, hidden Markov models): point estimates and posterior draws, label switching,
InferenceData with the pointwise log-likelihood filled in, for R-hat and ESS, PSIS-LOO, ``az.compare``
across numbers of components or states (:mod:`ppgen.diagnostics.workflow`) and posterior predictive checks
(:mod:`ppgen.plots.bayesian`).

A :class:`BayesFamily` declares its global sites (:class:`~ppgen.models.bayesian.stores.Site`) and a prior
for each; it keeps a point estimate and posterior draws (:mod:`ppgen.models.bayesian.stores`). Densities are
written once, vectorized over a leading batch of parameter values (``log_lik(x, theta)`` gives (S, N) for S
parameter values and N examples), and everything else is built on that: the held-out likelihood (plug-in,
or the posterior predictive density averaged over draws), the pointwise log-likelihood group that PSIS-LOO
needs (:mod:`ppgen.models.bayesian.idata`), replicated data for predictive checks. Labels are made
consistent across draws by :mod:`ppgen.models.bayesian.relabel`; data-driven starts use
:func:`~ppgen.models.bayesian.kmeans.kmeans`.

References:
    Gelman, Vehtari, Simpson et al. (2020), Bayesian Workflow, arXiv:2011.01808.
    Vehtari, Gelman, Simpson, Carpenter & Buerkner (2021), Rank-normalization, folding, and localization:
    an improved R-hat, Bayesian Analysis 16, 667-718.
"""

from __future__ import annotations

from typing import Any, Mapping

import pyro
import pyro.distributions as dist
import torch
from pydantic import Field

from ppgen.contracts import JointDensity, MarginalModel, Posterior, Relabeling
from ppgen.models.base import Family, mean_of_weights
from ppgen.models.bayesian.idata import inference_data, point_inference_data
from ppgen.models.bayesian.relabel import relabel
from ppgen.models.bayesian.stores import DrawStore, PointEstimate, Site, Theta, flatten_draws
from ppgen.spec import SpecError, Strict


# --------------------------------------------------------------------------- prior sections of specs


class NormalPrior(Strict):
    """Normal(mean, std) on every entry of a location."""

    mean: float = 0.0
    std: float = Field(10.0, gt=0)


class ScalePrior(Strict):
    """LogNormal on every standard deviation: median ``median``, log-scale spread ``log_std`` (so that
    95% of the prior mass lies within a factor exp(1.96 log_std) of the median)."""

    median: float = Field(1.0, gt=0)
    log_std: float = Field(1.5, gt=0)


def tensor_options(like: torch.Tensor | None) -> dict[str, Any]:
    """``dtype`` and ``device`` of ``like`` as keyword arguments for a tensor constructor (none without
    it): priors evaluated at float64 values (EM) or on a GPU are built there."""
    return {} if like is None else {"dtype": like.dtype, "device": like.device}


# --------------------------------------------------------------------------- the family base


class BayesFamily(Family, Posterior, JointDensity, Relabeling, MarginalModel):
    """A family whose parameters are global latent variables with declared priors.

    Subclasses implement :meth:`build_sites`, :meth:`prior`, :meth:`default_values`, :meth:`log_lik`
    (vectorized over a leading batch of parameter values), :meth:`model` (the generative model with its
    discrete latent variables as enumerable sample sites), :meth:`marginal_model` (the same model with
    the discrete variables summed out), :meth:`simulate`, :meth:`signature` and :meth:`init_values`.
    """

    default_routine = "enum_svi"
    bayesian = True  # the sample sites are global parameters with priors: NUTS samples their posterior
    max_plate_nesting = 1
    #: What one unit of ``log_likelihood`` is ("data point", "sequence of T steps").
    unit: str = "example"
    # built in __init__, declared here so that the routines' protocols can check the class
    sites: list[Site]
    point: PointEstimate
    posterior: DrawStore
    initialized: torch.Tensor

    def __init__(self, spec: Any, info: Any) -> None:
        super().__init__(spec, info)
        self.sites: list[Site] = self.build_sites()
        self.point = PointEstimate(self.sites, self.default_values())
        self.posterior = DrawStore()
        self.register_buffer("initialized", torch.tensor(False))

    # -- to implement -----------------------------------------------------------------------------
    def build_sites(self) -> list[Site]:
        raise NotImplementedError

    def prior(self, name: str, like: torch.Tensor | None = None) -> dist.Distribution:
        """The prior of one site: batch shape (), event shape ``site.shape``; its parameters in the dtype
        and on the device of ``like`` where given (see :func:`tensor_options`)."""
        raise NotImplementedError

    def default_values(self) -> Theta:
        raise NotImplementedError

    def log_lik(self, x: torch.Tensor, theta: Theta) -> torch.Tensor:
        """log p(x_n | theta_s) for every parameter value s and example n: shape (S, N)."""
        raise NotImplementedError

    def marginal_model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Any:
        raise NotImplementedError

    def simulate(self, theta: Theta, n: int) -> torch.Tensor:
        """One replicated data set of ``n`` examples per parameter value: shape (S, n, *event_shape)."""
        raise NotImplementedError

    def signature(self, theta: Theta) -> torch.Tensor:
        """Per component, the features that identify it across draws: shape (S, K, F)."""
        raise NotImplementedError

    def init_values(self, x: torch.Tensor, generator: torch.Generator) -> Theta:
        """A data-driven starting point (e.g. k-means++ seeding), different for different generators."""
        raise NotImplementedError

    def posterior_variables(self, theta: Theta) -> tuple[dict[str, torch.Tensor], dict[str, list[str]]]:
        """What the posterior group of InferenceData shows: by default the sites themselves."""
        return dict(theta), {s.name: list(s.dims) for s in self.sites}

    # -- Pyro pieces ---------------------------------------------------------------------------------
    def sample_globals(self) -> Theta:
        """The priors, as Pyro sample sites."""
        return {s.name: pyro.sample(s.name, self.prior(s.name)) for s in self.sites}

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None, n_total: int | None = None) -> Theta:
        """MAP: a point mass at the point estimate on every global site (the discrete latent variables
        are enumerated in the model, so they need no guide)."""
        values = self.point.values()
        return {s.name: pyro.sample(s.name, dist.Delta(values[s.name], event_dim=len(s.shape))) for s in self.sites}

    # -- parameter values -----------------------------------------------------------------------------
    @property
    def has_posterior(self) -> bool:
        return len(self.posterior) > 0

    def theta(self, which: str = "auto") -> Theta:
        """Parameter values with a leading batch: ``point`` (S = 1), ``posterior`` (S = chains x draws)
        or ``auto`` (the posterior where there is one)."""
        if which == "auto":
            which = "posterior" if self.has_posterior else "point"
        if which == "posterior":
            if not self.has_posterior:
                raise SpecError("this model holds no posterior draws; fit it with --inference nuts (the zoo's NUTS recipe)")
            return flatten_draws(self.posterior.draws())
        return {k: v.detach().unsqueeze(0) for k, v in self.point.values().items()}

    def relabelled_theta(self) -> Theta:
        """The posterior draws relabelled (see :func:`relabel`) and flattened to (chains x draws, ...),
        or the point estimate (S = 1): what label-dependent summaries (assignments, means) need."""
        if not self.has_posterior:
            return self.theta("point")
        return flatten_draws(self.relabel(self.posterior.draws())[0])

    def set_posterior(self, draws: Mapping[str, torch.Tensor], stats: Mapping[str, torch.Tensor] | None = None) -> None:
        """Keep posterior draws (chain, draw, ...) in the model, so that its checkpoint carries them."""
        self.posterior.set(draws, stats)

    def log_prior(self, theta: Theta, validate: bool = True) -> torch.Tensor:
        """log p(theta_s), shape (S,). ``validate=False`` skips the check that the values lie in each
        prior's support (for callers whose values are in it by construction, such as EM's updates)."""
        return sum(self._prior_like(s.name, theta[s.name], validate).log_prob(theta[s.name])  # type: ignore[return-value]
                   for s in self.sites)

    def _prior_like(self, name: str, like: torch.Tensor, validate: bool = True) -> dist.Distribution:
        """:meth:`prior` with its parameters in ``like``'s dtype and device, built once per dtype and
        device (EM and NUTS evaluate it at every iteration; the hyperparameters are fixed by the spec)."""
        cache = self.__dict__.setdefault("_prior_cache", {})
        key = (name, like.dtype, like.device, validate)
        if key not in cache:
            prior = self.prior(name, like=like)
            node = prior
            while not validate and node is not None:
                node._validate_args = False
                node = getattr(node, "base_dist", None)
            cache[key] = prior
        return cache[key]

    def log_joint(self, x: torch.Tensor, theta: Theta, n_total: int | None = None) -> torch.Tensor:
        """log p(theta_s) + (n_total / N) sum_n log p(x_n | theta_s), shape (S,)."""
        scale = 1.0 if n_total is None else n_total / x.shape[0]
        return self.log_prior(theta) + scale * self.log_lik(x, theta).sum(-1)

    def map_loss(self, x: torch.Tensor, n_total: int | None = None) -> torch.Tensor:
        """Minus the log joint at the point estimate, with the discrete states summed out in closed form:
        the number TraceEnum_ELBO computes for :meth:`model` and the MAP :meth:`guide`."""
        theta = {k: v.unsqueeze(0) for k, v in self.point.values().items()}
        return -self.log_joint(x, theta, n_total)[0]

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor, seed: int = 0) -> None:
        """Move the point estimate to a data-driven start, once (a checkpoint remembers that it did)."""
        if bool(self.initialized):
            return
        self.point.set(self.init_values(x, torch.Generator().manual_seed(seed)))
        self.initialized.fill_(True)

    # -- likelihood hooks for the loop and ppgen evaluate --------------------------------------------
    @torch.no_grad()
    def pointwise_log_lik(self, x: torch.Tensor, theta: Theta, chunk: int = 2_000_000) -> torch.Tensor:
        """:meth:`log_lik` in chunks of parameter values so that memory stays bounded: (S, N)."""
        s_total = next(iter(theta.values())).shape[0]
        per = max(1, chunk // max(1, x.numel() * self.chunk_factor()))
        out = [self.log_lik(x, {k: v[i : i + per] for k, v in theta.items()}) for i in range(0, s_total, per)]
        return torch.cat(out, 0)

    def chunk_factor(self) -> int:
        """Roughly how many numbers :meth:`log_lik` keeps per data value and parameter value."""
        return 4

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, k: int = 1000,
                       y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """log p(x) per example: with posterior draws the posterior predictive density
        log (1/S) sum_s p(x | theta_s) and its Monte Carlo standard error (delta method); otherwise the
        plug-in log p(x | theta_hat), exact (standard error 0). The forward algorithm or the sum over
        components is exact in both cases; ``k`` does not apply."""
        theta = self.theta()
        ll = self.pointwise_log_lik(x, theta)
        return mean_of_weights(ll)

    def evaluation_setup(self, data: Any) -> dict[str, Any]:
        draws = next(iter(self.posterior.draws().values())).shape[:2] if self.has_posterior else (0, 0)
        how = (f"posterior predictive density averaged over {draws[0] * draws[1]} posterior draws"
               if self.has_posterior else "plug-in density at the point estimate (MAP)")
        return {"nll_unit": f"nats per {self.unit}", "likelihood": how}

    # -- ArviZ ------------------------------------------------------------------------------------------
    def relabel(self, draws: Mapping[str, torch.Tensor]) -> tuple[Theta, torch.Tensor]:
        """Draws (chain, draw, ...) with labels made consistent across draws and chains (see
        :mod:`ppgen.models.bayesian.relabel`)."""
        return relabel(draws, self.sites, self.signature)

    def inference_data(self, data: Any, metrics: list[dict[str, Any]]) -> Any:
        """The posterior draws (see :func:`inference_data`) where the run holds them, else the point
        estimate (see :func:`point_inference_data`); on the training data."""
        x, _ = data.split("train")
        if not self.has_posterior:
            return point_inference_data(self, x)
        return inference_data(self, x, inference="nuts")

    def pair_variables(self) -> tuple[list[str], dict[str, Any]]:
        """The variables and coordinates of the pair plot (a few, so that it stays legible)."""
        name = self.sites[0].name
        return [name], {}

    def test_statistic(self, x: torch.Tensor) -> tuple[str, torch.Tensor] | None:
        """A scalar summary T(x) per data set, for a posterior predictive check beyond the marginal
        distribution (e.g. the lag-1 autocorrelation of sequences): x has a leading batch of data sets."""
        return None
