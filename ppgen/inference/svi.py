"""Stochastic variational inference on Pyro's ELBOs.

``elbo``: ``trace`` (Trace_ELBO, Monte Carlo KL), ``meanfield`` (TraceMeanField_ELBO, analytic KL where it
exists) or ``iwae`` (RenyiELBO with alpha = 0: the importance-weighted bound with ``num_particles`` = k).
A family that offers ``fused_loss(x, elbo, num_particles, y=None)`` (the VAE and the autoregressive
families do) computes the same objective without Pyro's tracing;
the tests check that both give the same number. Set ``fused: false`` to always go through Pyro.

The loss reported and differentiated is minus the bound per example, in nats.

Pyro's RenyiELBO weighs the particles of a whole batch jointly, which for ``iwae`` gives a looser bound
than the per-example one of Burda et al.; the VAE's fused path computes the per-example bound (equal to
Pyro's with one example per batch, as the tests check).

References:
    Hoffman, Blei, Wang & Paisley (2013), Stochastic Variational Inference, JMLR 14.
    Burda, Grosse & Salakhutdinov (2015), Importance Weighted Autoencoders, arXiv:1509.00519.
    Li & Turner (2016), Renyi Divergence Variational Inference, arXiv:1602.02311.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Protocol

import pyro
import pyro.infer
import torch
from pydantic import Field, model_validator

from ppgen.inference.base import Routine, State, make_optimizer
from ppgen.registry import register_routine
from ppgen.spec import InferenceSpec


class SVIConfig(InferenceSpec):
    routine: Literal["svi"] = "svi"
    elbo: Literal["trace", "meanfield", "iwae"] = "meanfield"
    num_particles: int = Field(1, ge=1, le=10_000)
    fused: bool = True

    @model_validator(mode="after")
    def _check(self) -> "SVIConfig":
        if self.elbo == "iwae" and self.num_particles < 2:
            raise ValueError("elbo 'iwae' needs num_particles >= 2 (k importance samples)")
        return self


class VariationalFamily(Protocol):
    """A model and a guide over the same latent sites whose guide is a variational posterior of the model.

    ``variational_guide = True`` is the family's word for it: an energy family's or a GAN's ``model`` and
    ``guide`` are Pyro programs too, but maximizing an ELBO over them fits nothing meaningful."""

    variational_guide: ClassVar[bool]

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Any: ...

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Any: ...


def pyro_elbo(config: SVIConfig, max_plate_nesting: int | None = None) -> pyro.infer.ELBO:
    """The Pyro ELBO a recipe names. ``max_plate_nesting`` (a family's ``max_plate_nesting``) spares
    Pyro the trial run it otherwise makes to guess it."""
    kw = {"num_particles": config.num_particles, "vectorize_particles": True}
    if max_plate_nesting is not None:
        kw["max_plate_nesting"] = max_plate_nesting
    if config.elbo == "trace":
        return pyro.infer.Trace_ELBO(**kw)
    if config.elbo == "meanfield":
        return pyro.infer.TraceMeanField_ELBO(**kw)
    return pyro.infer.RenyiELBO(alpha=0.0, **kw)


def pyro_loss(model: torch.nn.Module, elbo: pyro.infer.ELBO, x: torch.Tensor, y: torch.Tensor | None,
              differentiate: bool) -> torch.Tensor | float:
    """Minus the bound per example through Pyro; with ``differentiate`` either a differentiable tensor
    or, for ELBOs without ``differentiable_loss``, a float after the gradients have been accumulated."""
    scale = 1.0 / x.shape[0]
    m = pyro.poutine.scale(model.model, scale=scale)
    g = pyro.poutine.scale(model.guide, scale=scale)
    if hasattr(elbo, "differentiable_loss"):
        return elbo.differentiable_loss(m, g, x, y)
    if differentiate:
        return elbo.loss_and_grads(m, g, x, y)
    return elbo.loss(m, g, x, y)


@register_routine("svi")
class SVI(Routine):
    Config = SVIConfig

    def requirements(self) -> tuple[type, ...]:
        return (VariationalFamily,)

    def init(self, model: torch.nn.Module) -> State:
        self.require(model)
        self.use_fused = self.config.fused and hasattr(model, "fused_loss")
        self.elbo = None if self.use_fused else pyro_elbo(self.config, getattr(model, "max_plate_nesting", None))
        return State(model=model, optimizers={"main": make_optimizer(model.parameters(), self.config.optimizer)})

    def step(self, state: State, batch: tuple[torch.Tensor, torch.Tensor | None]) -> tuple[State, dict[str, float]]:
        x, y = batch
        model, opt = state.model, state.optimizers["main"]
        opt.zero_grad(set_to_none=True)
        if self.use_fused:
            loss = model.fused_loss(x, self.config.elbo, self.config.num_particles, y=y) / x.shape[0]
        else:
            loss = pyro_loss(model, self.elbo, x, y, differentiate=True)
        if isinstance(loss, torch.Tensor):
            self.runtime.backward(loss)
            value = float(loss.detach())
        else:
            value = float(loss)
        return state, self.finish_step(state, opt, value)

    def validate(self, state: State, x: torch.Tensor, y: torch.Tensor | None) -> dict[str, float]:
        total, n = 0.0, x.shape[0]
        for start in range(0, n, 500):
            xb = x[start : start + 500]
            yb = y[start : start + 500] if y is not None else None
            if self.use_fused:
                loss = state.model.fused_loss(xb, self.config.elbo, self.config.num_particles, y=yb)
            else:
                loss = pyro_loss(state.model, self.elbo, xb, yb, differentiate=False) * xb.shape[0]
            total += float(loss)
        return {"val_loss": total / n}
