"""Stochastic variational inference on the ELBO or the importance-weighted bound.

``elbo`` names a bound (:data:`ppgen.bounds.BOUNDS`): ``trace`` (Monte Carlo KL), ``meanfield`` (analytic
KL where it exists) or ``iwae`` (the importance-weighted bound of Burda et al. with ``num_particles`` = k,
per example). Through Pyro each is computed by the strategy object :data:`ELBOS` gives for it (Pyro's
Trace_ELBO, TraceMeanField_ELBO, or :class:`IWAE`), with one verb, ``loss(model, x, y)``: minus the bound
per example, in nats, differentiable.

A family that offers ``fused_loss(x, bound, y=None)`` (the VAE, the autoregressive families and the
programs do) computes the same objective without Pyro's tracing, given the :class:`~ppgen.bounds.Bound`. It is taken only where it is the
objective of the model at hand: where the family's distributions are the ones the fused loss was written
against (:func:`ppgen.models.base.fused_loss_applies`); a subclass with its own prior, say, goes through
Pyro. The tests check that both paths give the same loss and gradients. ``fused: false`` always goes
through Pyro.

ppgen's Pyro executions run in a private param store (:func:`ppgen.models.base.private_param_store`),
so training leaves the user's global param store as it was.

References:
    Hoffman, Blei, Wang & Paisley (2013), Stochastic Variational Inference, JMLR 14.
    Burda, Grosse & Salakhutdinov (2015), Importance Weighted Autoencoders, arXiv:1509.00519.
"""

from __future__ import annotations

import math
from typing import Any, Callable, ClassVar, Literal, Protocol, get_args

import pyro
import pyro.infer
import torch
from pydantic import Field, model_validator
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites

from ppgen.bounds import BOUNDS, as_bound
from ppgen.contracts import Enumeration
from ppgen.inference.base import Plan, Routine, State, make_optimizer, validation_batches
from ppgen.inference.capability import require
from ppgen.models.base import fused_loss_applies, private_param_store
from ppgen.registry import register_routine
from ppgen.spec import InferenceSpec, SpecError

ElboName = Literal["trace", "meanfield", "iwae"]


class SVIConfig(InferenceSpec):
    routine: Literal["svi"] = "svi"
    elbo: ElboName = "meanfield"
    num_particles: int = Field(1, ge=1, le=10_000)
    fused: bool = True
    classify_weight: float = Field(0.0, ge=0, le=1e6, description="alpha of the classification term: alpha times "
                                   "-log q(y | x) of each labelled example, per example of the batch (Kingma et al. "
                                   "2014, eq. 9); for models whose guide has a site for the labels")

    @model_validator(mode="after")
    def _check(self) -> "SVIConfig":
        if self.elbo == "iwae" and self.num_particles < 2:
            raise ValueError("elbo 'iwae' needs num_particles >= 2 (k importance samples)")
        return self


class Objective(Protocol):
    """A variational objective of a family's ``model`` and ``guide``."""

    def loss(self, model: Any, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """Minus the bound per example of the batch, in nats, differentiable in the parameters."""
        ...


class PyroELBO:
    """One of Pyro's ELBOs, on the model and guide scaled by 1 / batch size; ``enum`` (TraceEnum_ELBO) for
    the batches in which the family sums a discrete site out (:class:`~ppgen.contracts.Enumeration`, e.g.
    M2's hidden labels): Trace_ELBO would draw such a site from q instead, and TraceMeanField_ELBO refuses it."""

    def __init__(self, elbo: pyro.infer.ELBO, enum: pyro.infer.ELBO | None = None) -> None:
        self.elbo = elbo
        self.enum = enum

    def loss(self, model: Any, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        scale = 1.0 / x.shape[0]
        m = poutine.scale(model.model, scale=scale)
        g = poutine.scale(model.guide, scale=scale)
        elbo = self.elbo
        if self.enum is not None and isinstance(model, Enumeration) and model.enumerates(y):
            elbo = self.enum
        return elbo.differentiable_loss(m, g, x, y)


class IWAE:
    """The importance-weighted bound of Burda et al. (2015, eq. 8), per example: with k particles
    z_1..z_k drawn from the guide (vectorized, one more plate left of the model's), example n's bound is
    log (1/k) sum_i exp(log p(x_n, z_in) - log q(z_in | x_n)), the log weights summed over the sites of
    the data plate (``data_plate``) example by example, from Pyro traces of the model and the guide.

    The gradient is pathwise (reparameterized draws), so every latent site of the guide must have
    ``rsample``; every latent variable must be local to an example (inside the data plate). Observed
    sites and factors outside the data plate (a prior over the weights) are added once, outside the
    log-mean-exp, as their mean over the particles.
    """

    particle_plate = "iwae_particles"

    def __init__(self, num_particles: int, max_plate_nesting: int | None = None, data_plate: str = "data") -> None:
        if num_particles < 1:
            raise ValueError("IWAE needs at least one particle")
        self.k = num_particles
        self.max_plate_nesting = max_plate_nesting
        self.data_plate = data_plate

    def _vectorized(self, fn: Callable[..., Any], dim: int) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            with pyro.plate(self.particle_plate, self.k, dim=dim):
                return fn(*args, **kwargs)

        return wrapped

    def _plate_nesting(self, model: Any, x: torch.Tensor, y: torch.Tensor | None) -> int:
        if self.max_plate_nesting is None:
            with torch.no_grad(), poutine.block():
                guide = poutine.trace(model.guide).get_trace(x, y)
                tr = poutine.trace(poutine.replay(model.model, trace=guide)).get_trace(x, y)
            dims = [-f.dim for t in (guide, tr) for s in t.nodes.values() if s["type"] == "sample"
                    for f in s["cond_indep_stack"] if f.vectorized and f.dim is not None]
            self.max_plate_nesting = max(dims, default=0)
        return self.max_plate_nesting

    def bound(self, model: Any, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-example bounds of shape (batch,), the global term): the bound of the batch is their sum."""
        nest = self._plate_nesting(model, x, y)
        dim = -(nest + 1)
        guide = poutine.trace(self._vectorized(model.guide, dim)).get_trace(x, y)
        joint = poutine.trace(poutine.replay(self._vectorized(model.model, dim), trace=guide)).get_trace(x, y)
        guide, joint = prune_subsample_sites(guide), prune_subsample_sites(joint)
        guide.compute_log_prob()
        joint.compute_log_prob()
        local = x.new_zeros(self.k, x.shape[0])
        glob = x.new_zeros(self.k)
        for sign, tr, role in ((1.0, joint, "model"), (-1.0, guide, "guide")):
            for name, site in tr.nodes.items():
                if site["type"] != "sample":
                    continue
                latent = not site["is_observed"]
                if role == "guide" and not getattr(site["fn"], "has_rsample", False):
                    raise SpecError(
                        f"elbo 'iwae' differentiates through the guide's draws, but guide site {name!r} "
                        f"({type(site['fn']).__name__}) cannot be reparameterized; use elbo: trace"
                    )
                if role == "model" and latent and name not in guide.nodes:
                    raise SpecError(f"elbo 'iwae': model site {name!r} is latent but the guide does not sample it")
                lp = site["log_prob"]
                lp = lp.reshape((1,) * (nest + 1 - lp.dim()) + tuple(lp.shape))
                frames = {f.name: f for f in site["cond_indep_stack"]}
                data = frames.get(self.data_plate)
                if data is None:
                    if latent:
                        raise SpecError(
                            f"elbo 'iwae' bounds log p(x) example by example, but latent site {name!r} is "
                            f"outside the {self.data_plate!r} plate (a global latent variable); use elbo: trace"
                        )
                    glob = glob + sign * lp.sum(tuple(range(1, lp.dim())))
                    continue
                keep = lp.dim() + data.dim
                rest = tuple(d for d in range(1, lp.dim()) if d != keep)
                part = lp.sum(rest) if rest else lp
                local = local + sign * part
        per_example = torch.logsumexp(local, 0) - math.log(self.k)
        return per_example, glob.mean()

    def loss(self, model: Any, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        per_example, glob = self.bound(model, x, y)
        return -(per_example.sum() + glob) / x.shape[0]


class VariationalFamily(Protocol):
    """A model and a guide over the same latent sites whose guide is a variational posterior of the model.

    ``variational_guide = True`` is the family's word for it: an energy family's or a GAN's ``model`` and
    ``guide`` are Pyro programs too, but maximizing an ELBO over them fits nothing meaningful."""

    variational_guide: ClassVar[bool]

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Any: ...

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Any: ...


class LabelClassifier(Protocol):
    """A classifier q(y | x) inside the guide, whose -log q(y | x) on labelled examples the loss can add."""

    def classification_loss(self, x: torch.Tensor | None, y: torch.Tensor | None) -> torch.Tensor: ...


def _pyro_kwargs(config: SVIConfig, max_plate_nesting: int | None) -> dict[str, Any]:
    kw: dict[str, Any] = {"num_particles": config.num_particles, "vectorize_particles": True}
    if max_plate_nesting is not None:
        # spares Pyro the trial run it otherwise makes to guess it
        kw["max_plate_nesting"] = max_plate_nesting
    return kw


def _enum_elbo(config: SVIConfig, max_plate_nesting: int | None) -> pyro.infer.ELBO:
    # the same bound with the enumerated sites summed out (no closed-form KL: Monte Carlo there); a batch
    # whose labels are all given enumerates nothing, which TraceEnum_ELBO would warn about
    return pyro.infer.TraceEnum_ELBO(**_pyro_kwargs(config, max_plate_nesting), strict_enumeration_warning=False)


#: The objectives a recipe's ``elbo`` names: config and the family's ``max_plate_nesting`` -> strategy.
ELBOS: dict[str, Callable[[SVIConfig, int | None], Objective]] = {
    "trace": lambda c, n: PyroELBO(pyro.infer.Trace_ELBO(**_pyro_kwargs(c, n)), _enum_elbo(c, n)),
    "meanfield": lambda c, n: PyroELBO(pyro.infer.TraceMeanField_ELBO(**_pyro_kwargs(c, n)), _enum_elbo(c, n)),
    "iwae": lambda c, n: IWAE(c.num_particles, n),
}
assert set(ELBOS) == set(get_args(ElboName)) == set(BOUNDS)


def pyro_elbo(config: SVIConfig, max_plate_nesting: int | None = None) -> Objective:
    """The objective a recipe names, computed through Pyro (see :data:`ELBOS`)."""
    return ELBOS[config.elbo](config, max_plate_nesting)


def pyro_loss(model: Any, objective: Objective, x: torch.Tensor, y: torch.Tensor | None,
              differentiate: bool = True) -> torch.Tensor:
    """Minus the bound per example through Pyro, in a private param store; detached unless
    ``differentiate``."""
    with private_param_store():
        loss = objective.loss(model, x, y)
    return loss if differentiate else loss.detach()


@register_routine("svi")
class SVI(Routine):
    Config = SVIConfig
    #: examples per batch of the validation pass
    validation_batch: ClassVar[int] = 500

    def requirements(self) -> tuple[type, ...]:
        if self.config.classify_weight:
            return (VariationalFamily, LabelClassifier)
        return (VariationalFamily,)

    def init(self, model: torch.nn.Module, plan: Plan | None = None) -> State:
        require(self, model)
        self.use_fused = self.config.fused and fused_loss_applies(model)
        self.bound = as_bound(self.config.elbo, self.config.num_particles)
        self.objective = pyro_elbo(self.config, model.max_plate_nesting)
        if self.config.classify_weight:
            model.classification_loss(None, None)  # the family checks that it has a classifier of x
        return State(model=model, optimizers={"main": make_optimizer(model.parameters(), self.config.optimizer)})

    def _loss(self, model: Any, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if self.use_fused:
            loss = model.fused_loss(x, self.bound, y=y) / x.shape[0]
        else:
            loss = pyro_loss(model, self.objective, x, y)
        if self.config.classify_weight:
            loss = loss + self.config.classify_weight * model.classification_loss(x, y) / x.shape[0]
        return loss

    def step(self, state: State, batch: tuple[torch.Tensor, torch.Tensor | None]) -> tuple[State, dict[str, float]]:
        x, y = batch
        model, opt = state.model, state.optimizers["main"]
        opt.zero_grad(set_to_none=True)
        loss = self._loss(model, x, y)
        self.runtime.backward(loss)
        return state, self.finish_step(state, opt, float(loss.detach()))

    def validate(self, state: State, x: torch.Tensor, y: torch.Tensor | None) -> dict[str, float]:
        total, n = 0.0, x.shape[0]
        for xb, yb in validation_batches(x, y, self.validation_batch):
            total += float(self._loss(state.model, xb, yb)) * xb.shape[0]
        return {"val_loss": total / n}
