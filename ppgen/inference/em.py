"""Expectation-maximization to the posterior mode (MAP-EM) of the mixture and HMM families, with restarts
fitted together, as a step of the training loop. The algorithm, its M-steps,
restarts and stopping rule are :mod:`ppgen.inference.em_algorithm`.

**In the loop** (:mod:`ppgen.training.loop`): EM needs the whole training set in every step (``data.batch_size``
at least the number of training examples, one batch per epoch); one step is ``iterations_per_epoch`` EM
iterations, ``epochs`` bounds their number, and the run ends early when every restart has converged.
The state (parameters of every restart, their E-step statistics, log posteriors, counters) is in the
checkpoint, so a resumed run continues exactly. ``loss`` is minus the log posterior per training
example (minus the log-likelihood with ``prior: flat``), of the best restart.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from ppgen.contracts import ForwardBackward
from ppgen.inference.base import Plan, Routine, State
from ppgen.inference.em_algorithm import (DTYPE, EMFamily, EMRun, check_family, em_iterate, em_start,
                                          set_point_estimate, stack_starts)
from ppgen.registry import register_routine
from ppgen.spec import InferenceSpec, OptimizerSpec, SpecError

# --------------------------------------------------------------------------- the routine


class EMConfig(InferenceSpec):
    """EM recipe. ``optimizer`` is not used (the M-steps are closed-form or exact solves)."""

    routine: Literal["em"] = "em"
    epochs: int = Field(1000, ge=1, description="at most epochs x iterations_per_epoch EM iterations")
    iterations_per_epoch: int = Field(1, ge=1, le=1_000_000, description="EM iterations per step (one step per epoch)")
    log_every: int = Field(1, ge=1)
    restarts: int = Field(1, ge=1, le=10_000, description="starting points fitted together; the best is kept")
    prior: Literal["declared", "flat"] = Field("declared", description="declared: MAP-EM; flat: maximum likelihood")
    tol: float = Field(1e-6, ge=0, description="stop a restart when an iteration gains at most tol nats per example")
    forward_backward: Literal["auto", "scaled", "log", "scan"] = Field(
        "auto", description="HMM E-step: scaled recursion, log-space recursion, parallel scan, or auto by size")

    @model_validator(mode="after")
    def _check_no_optimizer(self) -> "EMConfig":
        # A resolved recipe writes the default optimizer out; any other would be silently unused.
        if "optimizer" in self.model_fields_set and self.optimizer != OptimizerSpec():
            raise ValueError("optimizer does not apply to routine 'em': its M-steps are closed-form or exact "
                             "solves, nothing is optimized by gradient; remove it")
        return self


@register_routine("em")
class EMRoutine(Routine):
    Config = EMConfig

    def requirements(self) -> tuple[type, ...]:
        return (EMFamily,)

    def init(self, model: torch.nn.Module, plan: Plan | None = None) -> State:
        check_family(model)
        plan = self.needs_plan(plan)
        c = self.config
        if c.forward_backward != "auto" and not isinstance(model, ForwardBackward):
            raise SpecError(f"routine em: forward_backward: {c.forward_backward} applies to HMMs only; "
                            f"family {model.family_name!r} has no forward-backward, remove the key")
        model.em_check(c.prior == "flat")
        self.n_total = plan.n_train
        if plan.batch_size < self.n_total:
            raise SpecError(
                f"routine em takes the whole training set in every step, but data.batch_size is "
                f"{plan.batch_size} and there are {self.n_total} training examples; set data.batch_size to at "
                f"least {self.n_total} (e.g. --set data.batch_size={self.n_total})"
            )
        return State(model=model, optimizers={}, extra={"started": False})

    def trained_parameters(self, state: State, since: int) -> dict[str, list[str]]:
        """EM iterates on its own float64 values (in the state) and copies the best restart's into the
        model, whose float32 parameters stop changing once an iteration moves them by less than float32's
        resolution, long before EM has converged at a small ``tol``. So the model's parameters are checked
        on the steps that start a fit, which move them from the family's defaults to the data-driven start
        (one group: at least one must change), and EM's refinements are checked by EM itself (every
        iteration must raise the log posterior)."""
        if since > 0 or state.step <= since:
            return {}
        return {"point": [name for name, p in state.model.named_parameters() if p.requires_grad]}

    def finished(self, state: State) -> bool:
        """Every restart has converged or failed: further steps would change nothing."""
        extra = state.extra
        return bool(extra.get("started")) and not bool(EMRun.from_dict(extra["run"]).active.any())

    @torch.no_grad()
    def step(self, state: State, batch: tuple[torch.Tensor, torch.Tensor | None]) -> tuple[State, dict[str, float]]:
        x, _ = batch
        if x.shape[0] != self.n_total:
            raise SpecError(f"routine em got a batch of {x.shape[0]} examples but the training set has "
                            f"{self.n_total}; set data.batch_size to at least {self.n_total}")
        c, model, extra = self.config, state.model, state.extra
        flat = c.prior == "flat"
        x = x.to(DTYPE)
        if not extra["started"]:
            # Seeds from the loop's RNG, so that --seed governs the starts.
            base = int(torch.randint(2**31 - c.restarts, ()))
            seeds = [base + r for r in range(c.restarts)]
            run = em_start(model, x, stack_starts(model, x, seeds), flat=flat, method=c.forward_backward)
            extra["seeds"] = torch.tensor(seeds, dtype=torch.int64)
            extra["started"] = True
        else:
            run = EMRun.from_dict(extra["run"], x.device)
        run = em_iterate(model, x, run, iterations=c.iterations_per_epoch, tol=c.tol, flat=flat,
                         method=c.forward_backward)
        extra["run"] = run.to_dict()
        if bool(run.failed.all()):
            from ppgen.training.errors import TrainingError

            raise TrainingError(
                f"every one of the {run.restarts} EM restarts degenerated (a component or state left without data "
                "or without spread, which maximum likelihood cannot fit); use prior: declared, whose priors keep "
                "every component proper, or more restarts"
            )
        set_point_estimate(model, run)
        best = run.best()
        n = x.shape[0]
        info = {
            "loss": float(-run.log_post[best] / n),
            "log_lik": float(run.log_lik[best] / n),
            "iterations": float(run.iterations[best]),
            "converged": float(run.converged.double().mean()),
            "failed": float(run.failed.sum()),
            "best_restart": float(best),
        }
        state.step += 1
        return state, info

    def validate(self, state: State, x: torch.Tensor, y: torch.Tensor | None) -> dict[str, float]:
        model = state.model
        if not bool(state.extra.get("started")):
            return {}
        ll, _ = model.log_likelihood(x)
        return {"val_loss": float(-ll.mean())}
