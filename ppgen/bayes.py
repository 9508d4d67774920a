"""The Bayesian workflow for families whose parameters are global latent variables with declared priors
(Gaussian mixtures, hidden Markov models): point estimates and posterior draws, label switching,
InferenceData with the pointwise log-likelihood filled in, R-hat and ESS, PSIS-LOO, ``az.compare`` across
numbers of components or states, and posterior predictive checks.

A :class:`BayesFamily` declares its global sites (:class:`Site`: name, shape, support, which axes are
indexed by the component or state label) and a prior for each; it keeps

- a point estimate (:class:`PointEstimate`, unconstrained parameters that the MAP routine fits through a
  Delta guide), and
- posterior draws (:class:`DrawStore`, buffers of shape (chain, draw, ...) that the NUTS routine fills),

both in its ``state_dict``, so a checkpoint carries them and ``open_run(...).model`` has them back.
Densities are written once, vectorized over a leading batch of parameter values (``log_lik(x, theta)``
gives (S, N) for S parameter values and N examples), and everything else is built on that: the held-out
likelihood (plug-in, or the posterior predictive density averaged over draws), the pointwise
log-likelihood group that PSIS-LOO needs (a default ``az.from_pyro`` conversion leaves it out for models
whose likelihood is a marginal over enumerated or hand-marginalised discrete states), replicated data for
predictive checks.

**Label switching.** A mixture's likelihood is invariant to permuting the labels, so chains started apart
settle in different labelings and R-hat over raw draws is meaningless. :func:`relabel` permutes the labels
of every draw to match a pivot (Marin, Mengersen & Robert 2005) and iterates the pivot to the mean of the
relabelled draws (the decision-theoretic relabelling of Stephens 2000 with squared loss on a signature of
each component, e.g. its mean); the final labels are sorted by the signature's first feature. Quantities
that do not depend on labels (likelihoods, LOO, predictive checks) are unaffected.

References:
    Gelman, Vehtari, Simpson et al. (2020), Bayesian Workflow, arXiv:2011.01808.
    Vehtari, Gelman & Gabry (2017), Practical Bayesian model evaluation using leave-one-out
    cross-validation and WAIC, Statistics and Computing 27, 1413-1432.
    Vehtari, Gelman, Simpson, Carpenter & Buerkner (2021), Rank-normalization, folding, and localization:
    an improved R-hat, Bayesian Analysis 16, 667-718.
    Stephens (2000), Dealing with label switching in mixture models, JRSS B 62, 795-809.
    Marin, Mengersen & Robert (2005), Bayesian modelling and inference on mixtures of distributions,
    Handbook of Statistics 25, 459-507.
    Gelman, Meng & Stern (1996), Posterior predictive assessment of model fitness via realized
    discrepancies, Statistica Sinica 6, 733-807.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pydantic import Field
from torch import nn
from torch.distributions import biject_to, constraints

from ppgen.contracts import DiagnosticFigures, JointDensity, MarginalModel, Posterior, Relabeling
from ppgen.models.base import Family, mean_of_weights
from ppgen.spec import SpecError, Strict

Theta = dict[str, torch.Tensor]


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


# --------------------------------------------------------------------------- sites and stores


@dataclass(frozen=True)
class Site:
    """A global latent variable: its ``name`` (the Pyro site), the ``shape`` of one value, its support,
    the names of its axes (``dims``, for ArviZ) and which of them are indexed by the label of a
    component or state (``label_axes``), so that relabelling knows what to permute."""

    name: str
    shape: tuple[int, ...]
    constraint: constraints.Constraint
    dims: tuple[str, ...]
    label_axes: tuple[int, ...] = ()

    def transform(self) -> torch.distributions.Transform:
        """Unconstrained -> constrained."""
        return biject_to(self.constraint)

    def unconstrained_shape(self) -> tuple[int, ...]:
        return tuple(self.transform().inverse_shape(torch.Size(self.shape)))


class PointEstimate(nn.Module):
    """One value per site, held as unconstrained parameters ``u_<name>`` (what the optimizer moves)."""

    def __init__(self, sites: Sequence[Site], values: Theta) -> None:
        super().__init__()
        self.sites = {s.name: s for s in sites}
        for s in sites:
            u = s.transform().inv(values[s.name].detach().to(torch.get_default_dtype()))
            if tuple(u.shape) != s.unconstrained_shape():
                raise ValueError(f"site {s.name!r}: default value has shape {tuple(values[s.name].shape)}, expected {s.shape}")
            self.register_parameter(f"u_{s.name}", nn.Parameter(u.clone()))

    def values(self) -> Theta:
        """The constrained values, differentiable in the parameters."""
        return {name: s.transform()(getattr(self, f"u_{name}")) for name, s in self.sites.items()}

    @torch.no_grad()
    def set(self, values: Mapping[str, torch.Tensor]) -> None:
        for name, v in values.items():
            s = self.sites[name]
            getattr(self, f"u_{name}").copy_(s.transform().inv(v.to(getattr(self, f"u_{name}"))))


class DrawStore(nn.Module):
    """Posterior draws as buffers ``draw__<site>`` of shape (chain, draw, ...) and per-draw sampler
    statistics ``stat__<name>`` of shape (chain, draw). It takes whatever a state dict holds, so a model
    built fresh (empty store) loads a checkpoint with draws."""

    def set(self, draws: Mapping[str, torch.Tensor], stats: Mapping[str, torch.Tensor] | None = None) -> None:
        for name in [n for n, _ in self.named_buffers()]:
            delattr(self, name)
        for name, v in draws.items():
            self.register_buffer(f"draw__{name}", v.detach().clone())
        for name, v in (stats or {}).items():
            self.register_buffer(f"stat__{name}", v.detach().clone())

    def draws(self) -> Theta:
        return {n[len("draw__"):]: b for n, b in self.named_buffers() if n.startswith("draw__")}

    def stats(self) -> dict[str, torch.Tensor]:
        return {n[len("stat__"):]: b for n, b in self.named_buffers() if n.startswith("stat__")}

    def __len__(self) -> int:
        d = self.draws()
        return 0 if not d else int(next(iter(d.values())).shape[1])

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, local_metadata: Any, strict: bool,
                              missing_keys: list[str], unexpected_keys: list[str], error_msgs: list[str]) -> None:
        draws, stats = {}, {}
        for key, value in state_dict.items():
            if not key.startswith(prefix):
                continue
            name = key[len(prefix):]
            if name.startswith("draw__"):
                draws[name[len("draw__"):]] = value
            elif name.startswith("stat__"):
                stats[name[len("stat__"):]] = value
            else:
                unexpected_keys.append(key)
        self.set(draws, stats)


def tensor_options(like: torch.Tensor | None) -> dict[str, Any]:
    """``dtype`` and ``device`` of ``like`` as keyword arguments for a tensor constructor (none without
    it): priors evaluated at float64 values (EM) or on a GPU are built there."""
    return {} if like is None else {"dtype": like.dtype, "device": like.device}


def flatten_draws(draws: Mapping[str, torch.Tensor]) -> Theta:
    """(chain, draw, ...) -> (chain * draw, ...)."""
    return {k: v.reshape(-1, *v.shape[2:]) for k, v in draws.items()}


# --------------------------------------------------------------------------- the family base


class BayesFamily(Family, Posterior, JointDensity, Relabeling, MarginalModel, DiagnosticFigures):
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
                raise SpecError("this model holds no posterior draws; fit it with inference/nuts.yaml")
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
        """Draws (chain, draw, ...) with labels made consistent across draws and chains (see module doc)."""
        return relabel(draws, self.sites, self.signature)

    def inference_data(self, data: Any, metrics: list[dict[str, Any]]) -> Any:
        if not self.has_posterior:
            raise SpecError(
                f"this {self.family_name} run holds a point estimate (MAP), not posterior draws, so there is "
                "nothing for R-hat, ESS or LOO; fit it with --inference inference/nuts.yaml"
            )
        x, _ = data.split("train")
        return inference_data(self, x, inference="nuts")

    def diagnostic_figures(self, idata: Any, folder: Path) -> dict[str, Path]:
        return workflow_figures(idata, Path(folder), self)

    def pair_variables(self) -> tuple[list[str], dict[str, Any]]:
        """The variables and coordinates of the pair plot (a few, so that it stays legible)."""
        name = self.sites[0].name
        return [name], {}

    def test_statistic(self, x: torch.Tensor) -> tuple[str, torch.Tensor] | None:
        """A scalar summary T(x) per data set, for a posterior predictive check beyond the marginal
        distribution (e.g. the lag-1 autocorrelation of sequences): x has a leading batch of data sets."""
        return None


# --------------------------------------------------------------------------- data-driven starts


@torch.no_grad()
def kmeans(x: torch.Tensor, k: int, generator: torch.Generator, restarts: int = 10,
           iters: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means++ seeding (Arthur & Vassilvitskii 2007) and Lloyd iterations, the best of ``restarts`` by
    within-cluster sum of squares (one seeding can put two centres in one cluster and Lloyd cannot
    move them apart). Returns centres (k, D), sorted by the first coordinate, and each point's label."""
    x = x.double()
    n = x.shape[0]
    best: tuple[float, torch.Tensor] | None = None
    for _ in range(restarts):
        centres = x[torch.randint(n, (1,), generator=generator)]
        while centres.shape[0] < k:
            d2 = torch.cdist(x, centres).min(1).values ** 2
            probs = d2 / d2.sum() if d2.sum() > 0 else torch.full((n,), 1.0 / n, dtype=x.dtype)
            centres = torch.cat([centres, x[torch.multinomial(probs, 1, generator=generator)]])
        for _ in range(iters):
            label = torch.cdist(x, centres).argmin(1)
            moved = centres.clone()
            for j in range(k):
                if (label == j).any():
                    moved[j] = x[label == j].mean(0)
            if torch.equal(moved, centres):
                break
            centres = moved
        inertia = float((torch.cdist(x, centres).min(1).values ** 2).sum())
        if best is None or inertia < best[0]:
            best = (inertia, centres)
    assert best is not None
    centres = best[1][torch.argsort(best[1][:, 0])]
    return centres, torch.cdist(x, centres).argmin(1)


# --------------------------------------------------------------------------- relabelling


def relabel(draws: Mapping[str, torch.Tensor], sites: Sequence[Site],
            signature: Callable[[Theta], torch.Tensor], max_iter: int = 50) -> tuple[Theta, torch.Tensor]:
    """Permute the component labels of each draw to agree with a common pivot.

    ``draws`` hold (chain, draw, ...) values; ``signature(theta)`` gives (S, K, F) features per component.
    The pivot starts as the mean and variance of each component's signature over the first chain; each
    draw takes the permutation that minimises the summed Mahalanobis distances of its components to the
    pivot's (an assignment problem, solved exactly); the pivot becomes the mean and variance of the
    relabelled signatures; this repeats until no permutation changes. Labels end sorted by the pivot's
    first feature. Returns the relabelled draws and the permutations (chain, draw, K): new label k is
    old label ``perm[..., k]``.
    """
    from scipy.optimize import linear_sum_assignment

    first = next(iter(draws.values()))
    chains, n = first.shape[:2]
    flat = flatten_draws(draws)
    sig = signature(flat).detach().double()  # (M, K, F)
    m, k, _ = sig.shape
    floor = 1e-8 * sig.reshape(-1, sig.shape[-1]).var(0, unbiased=False).clamp_min(1e-12)
    # Each pivot component is a mean and a per-feature variance: the distance of a draw's component to
    # it is a Mahalanobis distance, so that a feature that varies little within a component (say a log
    # scale) but much between components weighs accordingly. Start from the first chain.
    pivot = sig[:n].mean(0)
    var = sig[:n].var(0, unbiased=False) + floor
    perms = torch.arange(k).expand(m, k).clone()
    for _ in range(max_iter):
        cost = (((sig[:, None, :, :] - pivot[None, :, None, :]) ** 2) / var[None, :, None, :]).sum(-1).numpy()
        new = torch.as_tensor(np.stack([linear_sum_assignment(c)[1] for c in cost]))  # (M, K_new) -> old
        changed = not torch.equal(new, perms)
        perms = new
        aligned = torch.gather(sig, 1, perms[..., None].expand_as(sig))
        pivot = aligned.mean(0)
        var = aligned.var(0, unbiased=False) + floor
        if not changed:
            break
    order = torch.argsort(pivot[:, 0])
    perms = perms[:, order]
    out = {name: permute_labels(flat[name], perms, _site(sites, name).label_axes) for name in flat}
    return {name: v.reshape(chains, n, *v.shape[1:]) for name, v in out.items()}, perms.reshape(chains, n, k)


def _site(sites: Sequence[Site], name: str) -> Site:
    for s in sites:
        if s.name == name:
            return s
    raise KeyError(name)


def permute_labels(values: torch.Tensor, perms: torch.Tensor, axes: Sequence[int]) -> torch.Tensor:
    """values (M, *shape), perms (M, K): along each label axis a of ``shape``, entry k becomes old entry
    ``perms[m, k]`` (so a transition matrix has rows and columns permuted alike)."""
    out = values
    for a in axes:
        axis = a + 1
        idx = perms.reshape(perms.shape[0], *([1] * (axis - 1)), perms.shape[1], *([1] * (values.dim() - axis - 1)))
        out = torch.gather(out, axis, idx.expand_as(out))
    return out


# --------------------------------------------------------------------------- InferenceData


def arviz() -> Any:
    """``import arviz`` without its FutureWarning banner (the shared helper of :mod:`ppgen.diagnostics`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az
    return az


#: Largest posterior predictive array (chains x draws x data values) kept in full; beyond it draws are
#: thinned for the predictive group and LOO-PIT is skipped.
MAX_PREDICTIVE_VALUES = 4_000_000


@torch.no_grad()
def inference_data(model: BayesFamily, x: torch.Tensor, *, draws: Mapping[str, torch.Tensor] | None = None,
                   stats: Mapping[str, torch.Tensor] | None = None, relabel_draws: bool = True,
                   inference: str = "nuts", seed: int = 0) -> Any:
    """InferenceData for posterior draws (chain, draw, ...) of a :class:`BayesFamily` on data ``x``:

    - ``posterior``: the draws, relabelled (see :func:`relabel`), with named dims;
    - ``log_likelihood``: ``x`` of shape (chain, draw, obs), log p(x_n | theta) per example (per data
      point, or per sequence for an HMM), the unit of PSIS-LOO;
    - ``posterior_predictive``: ``x``, one replicated data set per draw (thinned if huge);
    - ``observed_data``: ``x``;
    - ``sample_stats``: ``lp`` (log joint), and the sampler's ``diverging`` and ``step_size`` if given.
    """
    az = arviz()
    draws = dict(model.posterior.draws() if draws is None else draws)
    stats = dict(model.posterior.stats() if stats is None else stats)
    chains, n_draws = next(iter(draws.values())).shape[:2]
    if relabel_draws:
        draws, _ = model.relabel(draws)
    flat = flatten_draws(draws)
    ll = model.pointwise_log_lik(x, flat)  # (S, N)
    lp = model.log_prior(flat) + ll.sum(-1)
    shown, dims = model.posterior_variables(flat)
    posterior = {k: v.reshape(chains, n_draws, *v.shape[1:]).double().numpy() for k, v in shown.items()}
    obs_dims = ["obs"] + [f"event_{i}" for i in range(x.dim() - 1)]
    # Replicated data: one data set per draw, thinned so that the group stays small.
    stride = max(1, math.ceil(chains * n_draws * x.numel() / MAX_PREDICTIVE_VALUES))
    keep = {k: v[:, ::stride] for k, v in draws.items()}
    gen_state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        x_rep = model.simulate(flatten_draws(keep), x.shape[0])
    finally:
        torch.set_rng_state(gen_state)
    kept = next(iter(keep.values())).shape[1]
    x_rep = x_rep.reshape(chains, kept, *x.shape)
    sample_stats: dict[str, np.ndarray] = {"lp": lp.reshape(chains, n_draws).double().numpy()}
    for name, v in stats.items():
        if v.shape[:2] == (chains, n_draws):
            sample_stats[name] = v.numpy()
    idata = az.from_dict(
        posterior=posterior,
        log_likelihood={"x": ll.reshape(chains, n_draws, -1).double().numpy()},
        sample_stats=sample_stats,
        observed_data={"x": x.double().numpy()},
        coords={"obs": np.arange(x.shape[0])},
        dims={**dims, "x": obs_dims},
        attrs={"inference": inference, "relabelled": int(relabel_draws), "family": model.family_name,
               "unit": model.unit},
    )
    pp = az.from_dict(posterior_predictive={"x": x_rep.double().numpy()}, coords={"obs": np.arange(x.shape[0])},
                      dims={"x": obs_dims})
    idata.extend(pp)
    idata.posterior_predictive.attrs["thinned_by"] = stride
    return idata


# --------------------------------------------------------------------------- summaries and comparison


def summary(idata: Any, var_names: Sequence[str] | None = None) -> Any:
    """``az.summary`` with R-hat (rank-normalized, split) and bulk/tail ESS of the posterior group.
    Entries that are constant across draws (none in the families here) get NaN R-hat."""
    az = arviz()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # 0/0 for a constant entry
        return az.summary(idata, var_names=list(var_names) if var_names else None, kind="all")


def loo(idata: Any) -> Any:
    """PSIS-LOO of the pointwise log-likelihood group. ArviZ's warning about large Pareto k is kept as
    data: ``result.warning`` is True and ``result.pareto_k`` says which examples (k > 0.7: unreliable)."""
    az = arviz()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return az.loo(idata, pointwise=True)


def _as_idata(item: Any) -> Any:
    from ppgen.runs import Run, open_run

    if isinstance(item, (str, Path)):
        item = open_run(item)
    if isinstance(item, Run):
        return item.idata
    return item


def compare(models: Mapping[str, Any], ic: str = "loo") -> Any:
    """``az.compare`` over named InferenceData, runs or run folders (each with a log_likelihood group),
    ranked by expected log pointwise predictive density (higher is better)."""
    az = arviz()
    data = {name: _as_idata(item) for name, item in models.items()}
    for name, idata in data.items():
        if "log_likelihood" not in idata.groups():
            raise SpecError(f"compare: {name!r} has no log_likelihood group; build it with ppgen diagnose (NUTS runs)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return az.compare(data, ic=ic)


def choose(table: Any, complexity: Mapping[str, float] | None = None, rule: str = "parsimony") -> str:
    """The model a comparison table picks. ``best``: the highest elpd. ``parsimony``: the least complex
    model whose elpd is within one standard error of the difference (``dse``) of the best, complexity
    from ``complexity`` (e.g. the number of components) or else the effective number of parameters
    ``p_loo`` -- differences smaller than their standard error are not evidence for the bigger model."""
    if rule == "best":
        return str(table.index[0])
    if rule != "parsimony":
        raise SpecError(f"choose: rule must be 'best' or 'parsimony', got {rule!r}")
    near = [name for name in table.index if table.loc[name, "elpd_diff"] <= max(table.loc[name, "dse"], 1e-12)]
    key = (lambda n: (complexity[n], n)) if complexity is not None else (lambda n: (table.loc[n, "p_loo"], n))
    return str(min(near, key=key))


def predictive_pvalue(observed: float, replicated: torch.Tensor) -> float:
    """Posterior predictive p-value P(T(x_rep) >= T(x) | x) (Gelman, Meng & Stern 1996); near 0 or 1
    says the model does not reproduce the statistic."""
    return float((replicated >= observed).double().mean())


# --------------------------------------------------------------------------- figures


def workflow_figures(idata: Any, folder: Path, model: BayesFamily | None = None) -> dict[str, Path]:
    """Trace, pair, posterior predictive, Pareto-k (and LOO-PIT for scalar examples) figures."""
    from ppgen.plots import label_trace_axes, panel_count, save_figure, subplots

    az = arviz()
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    names = list(idata.posterior.data_vars)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        rows = len(names[:4])
        fig, axes = subplots(rows, 2, figsize=(9, 2.0 * rows + 0.8), squeeze=False)
        az.plot_trace(idata, var_names=names[:4], compact=True, combined=False, axes=axes)
        label_trace_axes(axes)
        fig.suptitle("trace (relabelled draws; one line per chain)", fontsize=10)
        fig.tight_layout()
        out["trace"] = save_figure(fig, folder / "trace.png")

        pair_vars, pair_coords = model.pair_variables() if model is not None else (names[:2], {})
        k = panel_count(idata.posterior, pair_vars, pair_coords)
        fig, axes = subplots(k, k, figsize=(2.4 * k, 2.4 * k), squeeze=False, sharex="col")
        az.plot_pair(idata, var_names=pair_vars, coords=pair_coords, divergences="diverging" in idata.sample_stats,
                     kind="scatter", marginals=True, scatter_kwargs={"alpha": 0.3}, textsize=8, ax=axes)
        for i in range(k):  # the marginals on the diagonal are densities
            if not axes[i, i].get_ylabel():
                axes[i, i].set_ylabel("density", fontsize=7)
        out["pair"] = save_figure(fig, folder / "pair.png")

        # One panel per coordinate of a step (the last axis of an example), everything else pooled.
        obs_dims = [d for d in idata.posterior_predictive["x"].dims if d not in ("chain", "draw")]
        flatten = obs_dims[:-1] if len(obs_dims) > 1 else obs_dims
        fig, ax = subplots(figsize=(6, 4))
        az.plot_ppc(idata, flatten=flatten, num_pp_samples=min(50, idata.posterior_predictive.sizes["draw"]),
                    random_seed=0, textsize=8, ax=ax)
        ax.set_ylabel("density", fontsize=8)
        out["ppc"] = save_figure(fig, folder / "ppc.png")

        result = loo(idata)
        fig, ax = subplots(figsize=(6, 4))
        az.plot_khat(result, show_bins=True, textsize=8, ax=ax)
        fig.suptitle(f"PSIS-LOO Pareto k per {idata.attrs.get('unit', 'example')} (elpd_loo {result.elpd_loo:.1f})", fontsize=10)
        out["khat"] = save_figure(fig, folder / "loo_khat.png")

        obs = idata.observed_data["x"]
        scalar = obs.ndim == 1 or (obs.ndim == 2 and obs.shape[1] == 1)
        thinned = int(idata.posterior_predictive.attrs.get("thinned_by", 1)) > 1
        if scalar and not thinned:
            fig, ax = subplots(figsize=(5, 3.5))
            pit = loo_pit_data(idata)
            az.plot_loo_pit(pit, y="x", ecdf=True, ax=ax)
            ax.set_xlabel("LOO probability integral transform", fontsize=8)
            ax.set_ylabel("ECDF minus uniform CDF", fontsize=8)
            ax.set_title("LOO-PIT (ECDF difference; inside the band: calibrated)", fontsize=9)
            out["loo_pit"] = save_figure(fig, folder / "loo_pit.png")

    if model is not None:
        stat = _statistic_figure(idata, folder, model)
        if stat is not None:
            out["ppc_statistic"] = stat
    return out


def loo_pit_data(idata: Any) -> Any:
    """The observed data, posterior predictive and log-likelihood groups with one scalar per example,
    as ``az.plot_loo_pit(data, y="x")`` wants them (for examples that are single values)."""
    az = arviz()
    obs = idata.observed_data["x"].values.reshape(-1)
    pp = idata.posterior_predictive["x"].values
    pp = pp.reshape(pp.shape[0], pp.shape[1], -1)
    ll = idata.log_likelihood["x"].values
    # The relative efficiency of the draws (for PSIS) is estimated from the posterior group.
    posterior = {name: idata.posterior[name].values for name in idata.posterior.data_vars}
    return az.from_dict(posterior=posterior, posterior_predictive={"x": pp}, log_likelihood={"x": ll},
                        observed_data={"x": obs})


def _statistic_figure(idata: Any, folder: Path, model: BayesFamily) -> Path | None:
    from ppgen.plots import save_figure, subplots

    obs = torch.as_tensor(idata.observed_data["x"].values)
    res = model.test_statistic(obs[None])
    if res is None:
        return None
    name, t_obs = res
    pp = torch.as_tensor(idata.posterior_predictive["x"].values)
    pp = pp.reshape(-1, *obs.shape)
    _, t_rep = model.test_statistic(pp)  # type: ignore[misc]
    p = predictive_pvalue(float(t_obs[0]), t_rep)
    fig, ax = subplots(figsize=(5, 3.5))
    ax.hist(t_rep.numpy(), bins=40, color="C0", alpha=0.7, label="replicated data")
    ax.axvline(float(t_obs[0]), color="k", lw=2, label="observed")
    ax.set_xlabel(name)
    ax.set_ylabel("replicated data sets")
    ax.set_title(f"posterior predictive check of {name}: p = {p:.2f}", fontsize=9)
    ax.legend(fontsize=8)
    return save_figure(fig, folder / "ppc_statistic.png")
