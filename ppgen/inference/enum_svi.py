"""MAP estimation by SVI on TraceEnum_ELBO: discrete latent variables summed out by enumeration.

For a model whose discrete sites (mixture assignments, HMM states) are marked for parallel enumeration
and a guide that puts a point mass on every global parameter, TraceEnum_ELBO equals the log joint
log p(x, theta) with the discrete variables summed out exactly (variable elimination, Obermeyer et al.
2019), so maximising it is maximum a posteriori estimation -- the EM objective of Dempster, Laird & Rubin
(1977) plus the log prior. ``fused: true`` computes the same number from the family's closed form
(``map_loss``: a log-sum-exp over components, the forward algorithm over states) without Pyro's tracing;
the tests check that both agree.

A minibatch's likelihood is scaled by N / B (N the training set size, from the loop's plan) so
that the prior keeps its weight. The reported ``loss`` is minus the log joint per training example;
``val_loss`` is the plug-in held-out negative log-likelihood per example.

On the first batch the family may move its point estimate to a data-driven start (``init: data``, e.g.
k-means++ for a mixture); the model's ``initialized`` buffer keeps a resumed run from doing it again.

References:
    Obermeyer, Bingham, Jankowiak, Pradhan, Chiu, Rush & Goodman (2019), Tensor variable elimination for
    plated factor graphs, ICML.
    Dempster, Laird & Rubin (1977), Maximum likelihood from incomplete data via the EM algorithm, JRSS B 39.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

import pyro.infer
import torch
from pydantic import Field

from ppgen.inference.base import Plan, Routine, State, make_optimizer
from ppgen.inference.capability import require
from ppgen.models.base import private_param_store
from ppgen.registry import register_routine
from ppgen.spec import InferenceSpec, OptimizerSpec


class EnumSVIConfig(InferenceSpec):
    routine: Literal["enum_svi"] = "enum_svi"
    epochs: int = Field(100, ge=1)
    optimizer: OptimizerSpec = Field(default_factory=lambda: OptimizerSpec(name="adam", lr=0.05))
    guide: Literal["map"] = Field("map", description="a point mass on every global parameter")
    fused: bool = Field(False, description="closed-form log joint instead of Pyro's TraceEnum_ELBO (same number)")
    init: Literal["data", "default"] = Field("data", description="data: the family's data-driven start on the first batch")


class EnumerableFamily(Protocol):
    """A Pyro model whose discrete sites are marked for enumeration and a point-mass guide on its global
    parameters, both scaling the likelihood of a batch by n_total / batch size."""

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None, *, n_total: int | None = None) -> Any: ...

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None, *, n_total: int | None = None) -> Any: ...


class ClosedFormMAP(Protocol):
    """The same objective in closed form (what fused: true computes)."""

    def map_loss(self, x: torch.Tensor, *, n_total: int | None = None) -> torch.Tensor:
        """Minus the log joint with the discrete sites summed out."""
        ...


class DataStart(Protocol):
    """A data-driven starting point (what init: data asks for)."""

    def init_from_data(self, x: torch.Tensor) -> None:
        """Move the point estimate to a start computed from a batch."""
        ...


@register_routine("enum_svi")
class EnumSVI(Routine):
    Config = EnumSVIConfig

    def requirements(self) -> tuple[type, ...]:
        return ((EnumerableFamily,) + ((ClosedFormMAP,) if self.config.fused else ())
                + ((DataStart,) if self.config.init == "data" else ()))

    def init(self, model: torch.nn.Module, plan: Plan | None = None) -> State:
        require(self, model)
        plan = self.needs_plan(plan)
        self.n_total = plan.n_train
        plates = model.max_plate_nesting
        self.elbo = pyro.infer.TraceEnum_ELBO(max_plate_nesting=plates if plates is not None else 1)
        return State(model=model, optimizers={"main": make_optimizer(model.parameters(), self.config.optimizer)})

    def _loss(self, model: Any, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        n = self.n_total
        if self.config.fused:
            return model.map_loss(x, n_total=n) / n
        with private_param_store():
            return self.elbo.differentiable_loss(model.model, model.guide, x, y, n_total=n) / n

    def step(self, state: State, batch: tuple[torch.Tensor, torch.Tensor | None]) -> tuple[State, dict[str, float]]:
        x, y = batch
        model, opt = state.model, state.optimizers["main"]
        if self.config.init == "data":
            model.init_from_data(x)
        opt.zero_grad(set_to_none=True)
        loss = self._loss(model, x, y)
        self.runtime.backward(loss)
        return state, self.finish_step(state, opt, float(loss.detach()))

    def validate(self, state: State, x: torch.Tensor, y: torch.Tensor | None) -> dict[str, float]:
        out = state.model.log_likelihood(x)
        if out is None:
            return {}
        return {"val_loss": float(-out[0].mean())}
