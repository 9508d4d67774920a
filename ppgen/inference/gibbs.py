"""Gibbs sampling for energy-based families: CD-k and persistent CD training, and a Pyro MCMC kernel.

Training (``routine: cd`` and ``routine: pcd``) follows the Boltzmann learning rule: the gradient of the
log-likelihood per example is <s_i s_j>_data - <s_i s_j>_model. The data side (positive phase) is exact
for RBMs (p(h | v) is factorial) and a few clamped Gibbs sweeps for a general BM; the model side
(negative phase) comes from chains that run ``k`` Gibbs steps either from the data (CD-k, Hinton 2002)
or from where they stopped at the previous update (PCD, Tieleman 2008). Persistent chains live in the
routine's state (``State.extra["chains"]``), so they are checkpointed and a resumed run continues
exactly. Updates are SGD with momentum (0.5 for the first ``momentum_epochs`` epochs, then the
optimizer's momentum, Hinton 2010 §9), a learning-rate schedule over epochs, and weight decay declared
by the model as a Gaussian prior on the weights (``prior.weight_decay`` in the model spec).

Extending a run (``ppgen fit RUN --resume --epochs N`` with more epochs than it was started with) gives
the run that N epochs from the start give, or is refused: a schedule whose shape depends on the number of
epochs (a linear decay with ``lr_schedule.epochs: null``, which spans the run) was planned for the
epochs the run started with, and the steps already taken followed that plan. The plan is recorded in
the routine's state (``State.extra["plan"]``); :meth:`Routine.check_resume` compares it with the new one.

The reported ``loss`` is minus the stochastic pseudo-log-likelihood per example for binary visible units
(the estimator scikit-learn's BernoulliRBM reports), the reconstruction error for Gaussian ones. It is
estimated on every ``monitor_every``-th step of each epoch, counted from its first (and on every logged
one): with CD's small batches the estimate costs a quarter of an update, and the epoch's mean of a
regular subsample of steps estimates the same quantity as the mean over all of them. Counting within
the epoch gives every epoch, however short, a measured loss.

:class:`GibbsKernel` is the same block Gibbs sampler as a :class:`pyro.infer.mcmc.MCMCKernel`, so
``pyro.infer.MCMC`` runs it on any energy family and ``arviz.from_pyro`` converts its chains.

References:
    Hinton (2002), Training Products of Experts by Minimizing Contrastive Divergence, Neural Comp. 14.
    Tieleman (2008), Training Restricted Boltzmann Machines using Approximations to the Likelihood
    Gradient, ICML.
    Hinton (2010), A Practical Guide to Training Restricted Boltzmann Machines, UTML TR 2010-003.
    Geman & Geman (1984), Stochastic Relaxation, Gibbs Distributions, and the Bayesian Restoration of
    Images, IEEE PAMI 6.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Protocol

import torch
from pydantic import Field, model_validator

from ppgen.models.energy.core import EnergyCore
from ppgen.models.energy.gibbs_kernel import GibbsKernel  # noqa: F401  (ppgen.inference.gibbs.GibbsKernel, as before)
from ppgen.inference.base import Plan, Routine, State, clip_and_step, make_optimizer
from ppgen.inference.capability import require
from ppgen.registry import register_routine
from ppgen.spec import InferenceSpec, OptimizerSpec, SpecError, Strict


# --------------------------------------------------------------------------- recipes


class LRScheduleSpec(Strict):
    """Learning rate over epochs: ``constant``; ``linear`` from ``optimizer.lr`` down to
    ``final_factor * optimizer.lr`` after ``epochs`` epochs and constant after that (Tieleman 2008 decays
    PCD's rate linearly to 0); ``exponential``, multiplied by ``gamma`` after each epoch.

    ``epochs`` declares the length of the linear decay, independent of the run's length, so that a run
    can be extended exactly (fitting 1 epoch and resuming to 3 gives the 3-epoch run). ``epochs: null``
    takes the run's number of epochs as planned when it starts (for layer-wise training, the layer's):
    such a run can be resumed to the epochs it was planned for, and extending it is refused."""

    kind: Literal["constant", "linear", "exponential"] = "constant"
    final_factor: float = Field(0.0, ge=0, le=1)
    gamma: float = Field(0.9, gt=0, le=1)
    epochs: int | None = Field(None, ge=1, description="linear decay horizon in epochs (null: the run's epochs)")

    def depends_on_length(self) -> bool:
        """Whether the rate at a given epoch depends on the planned number of epochs."""
        return self.kind == "linear" and self.epochs is None and self.final_factor != 1

    def factor(self, epoch: float, epochs: int) -> float:
        if self.kind == "linear":
            horizon = self.epochs or epochs
            return 1.0 - (1.0 - self.final_factor) * min(1.0, epoch / max(horizon, 1))
        if self.kind == "exponential":
            return self.gamma ** math.floor(epoch)
        return 1.0


def _sgd_default() -> OptimizerSpec:
    return OptimizerSpec(name="sgd", lr=0.01, momentum=0.5)


class GibbsConfig(InferenceSpec):
    """What CD, PCD and layer-wise training share. The defaults are those of ``inference/cd.yaml``."""

    k: int = Field(1, ge=1, le=100_000, description="Gibbs steps of the negative phase per update")
    optimizer: OptimizerSpec = Field(default_factory=_sgd_default)
    initial_momentum: float | None = Field(
        None, ge=0, lt=1, description="momentum for the first momentum_epochs epochs (null: optimizer.momentum throughout)"
    )
    momentum_epochs: int = Field(5, ge=0, description="epochs at initial_momentum before optimizer.momentum")
    lr_schedule: LRScheduleSpec = Field(default_factory=LRScheduleSpec)
    positive_sweeps: int = Field(5, ge=1, le=10_000, description="general BM only: clamped Gibbs sweeps of the hidden units")
    monitor_every: int = Field(
        10, ge=1, le=1_000_000,
        description="steps between the estimates that make the training loss, from each epoch's first (1: every step; the logged steps always)",
    )

    @model_validator(mode="after")
    def _check_gibbs(self) -> "GibbsConfig":
        if self.optimizer.weight_decay != 0:
            raise ValueError(
                "optimizer.weight_decay must be 0 for Gibbs training: weight decay is the model's Gaussian "
                "prior on the weights; set prior.weight_decay in the model spec instead"
            )
        if self.initial_momentum is not None and self.optimizer.name not in ("sgd", "rmsprop") and self.momentum_epochs > 0:
            raise ValueError(
                f"initial_momentum applies to optimizer.name sgd or rmsprop, not {self.optimizer.name!r}; "
                "set initial_momentum: null or choose sgd"
            )
        return self


class CDConfig(GibbsConfig):
    """Contrastive divergence: each update's chains start at the data and run k Gibbs steps."""

    routine: Literal["cd"] = "cd"


def _pcd_sgd() -> OptimizerSpec:
    return OptimizerSpec(name="sgd", lr=0.05, momentum=0.5)


def _linear_decay() -> LRScheduleSpec:
    return LRScheduleSpec(kind="linear", final_factor=0.1, epochs=10)


class PCDConfig(GibbsConfig):
    """Persistent contrastive divergence (stochastic maximum likelihood): ``chains`` fantasy particles
    (default: the batch size) keep running across updates. The defaults are those of
    ``inference/pcd.yaml``."""

    routine: Literal["pcd"] = "pcd"
    chains: int | None = Field(None, ge=1, le=1_000_000)
    optimizer: OptimizerSpec = Field(default_factory=_pcd_sgd)
    lr_schedule: LRScheduleSpec = Field(default_factory=_linear_decay)


# --------------------------------------------------------------------------- what the routines need


class EnergyCoreFamily(Protocol):
    """One energy core (an RBM or a Boltzmann machine) over visible units that the data map onto."""

    core: EnergyCore

    def to_visible(self, x: torch.Tensor) -> torch.Tensor:
        """Examples as visible vectors."""
        ...

    def init_from_data(self, x: torch.Tensor) -> None:
        """Data-driven initial biases (and standardization)."""
        ...


# --------------------------------------------------------------------------- helpers shared with layerwise


def energy_core(model: torch.nn.Module, routine: str) -> Any:
    """The family's energy core (``model.core``); a SpecError naming the fix for other families."""
    core = model.core  # EnergyCoreFamily, checked by the routine's require() at init
    if not isinstance(core, EnergyCore):
        raise SpecError(f"routine {routine!r} cannot train the {model.family_name!r} family: its core is a "
                        f"{type(core).__name__}, not an energy core (ppgen.models.energy.core.EnergyCore)")
    return core


def on_device(chains: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Persistent chains where the model is (a checkpoint loads them onto the CPU)."""
    if all(t.device == device for t in chains.values()):
        return chains
    return {k: t.to(device) for k, t in chains.items()}


def set_schedule(opt: torch.optim.Optimizer, config: GibbsConfig, epoch: float, epochs: int) -> float:
    """Apply the learning-rate schedule and momentum warm-up for fractional ``epoch``; returns the lr."""
    lr = config.optimizer.lr
    if config.lr_schedule.kind != "constant":
        lr *= config.lr_schedule.factor(epoch, epochs)
    momentum = config.optimizer.momentum
    if config.initial_momentum is not None and epoch < config.momentum_epochs:
        momentum = config.initial_momentum
    for group in opt.param_groups:
        group["lr"] = lr
        if "momentum" in group:
            group["momentum"] = momentum
    return lr


def gibbs_update(core: Any, v: torch.Tensor, chains: dict[str, torch.Tensor] | None, config: GibbsConfig,
                 opt: torch.optim.Optimizer, runtime: Any, step: int, binary: bool = True,
                 steps_per_epoch: int | None = None) -> tuple[dict[str, torch.Tensor] | None, dict[str, float]]:
    """The ``step``-th CD-k (``chains`` None) or PCD-k update of ``core`` on the batch ``v``; returns the
    chains' next state (PCD) and the step's numbers (``binary``: the batch is 0/1, so pseudo-likelihood
    applies): the loss on every ``monitor_every``-th step of the epoch (from its first; with
    ``steps_per_epoch`` None, of the run), with the costlier monitoring numbers on the steps the loop logs
    (every ``log_every``-th), none on the others."""
    detailed = (step + 1) % config.log_every == 0
    measured = detailed or (step % steps_per_epoch if steps_per_epoch else step) % config.monitor_every == 0
    with torch.no_grad():
        pos = core.positive_phase(v, config.positive_sweeps)
        start = core.chains_from_data(pos) if chains is None else chains
        neg, nxt = core.negative_phase(start, config.k)
        info = core.monitor(pos, neg, binary=binary, detailed=detailed) if measured else {}
        fused = (
            config.optimizer.clip_norm is None
            and runtime.world_size == 1
            and core.sgd_update(pos, neg, opt)
        )
    if not fused:
        core.set_gradients(pos, neg)
        runtime.reduce_gradients(core.parameters())
        norm = clip_and_step(opt, config.optimizer)
        if norm is not None:
            info["grad_norm"] = norm
    return (nxt if chains is not None else None), info


#: How to make a recipe whose runs extend exactly (the end of every refusal).
EXTENSIBLE = ("to make runs extensible, declare the schedule's length in the recipe instead of taking the run's "
              "(lr_schedule.epochs: N for a linear decay; layer_epochs for layer-wise training)")


def refuse_extension(config: GibbsConfig, was: int | None, why: str) -> None:
    """The SpecError for a resumed run whose new plan would have trained its past steps differently;
    ``was``: the epochs the run was planned for (None: the checkpoint does not say)."""
    now = config.epochs
    finish = f"finish it with --epochs {was}" if was is not None else "finish it with the epochs it was started with"
    raise SpecError(
        f"--epochs {now}: this run cannot be extended exactly: {why}. Continuing it to {now} epochs would not give "
        f"the run that {now} epochs from the start give; {finish}, or start a new run with --epochs {now}; {EXTENSIBLE}"
    )


def planned_epochs(saved: dict[str, Any]) -> int | None:
    """The epochs a run was planned for when it started, from its routine state (None if not recorded)."""
    plan = saved.get("extra", {}).get("plan")
    return int(plan["epochs"]) if isinstance(plan, dict) and "epochs" in plan else None


# --------------------------------------------------------------------------- CD and PCD


class _ContrastiveDivergence(Routine):
    persistent = False

    def requirements(self) -> tuple[type, ...]:
        return (EnergyCoreFamily,)

    @classmethod
    def check_resume(cls, config: GibbsConfig, saved: dict[str, Any], steps_per_epoch: int) -> None:
        """Refuse (SpecError) to continue a run whose learning-rate decay spans the run and was planned
        for another number of epochs. Only step 0's rate is the same under any plan."""
        was = planned_epochs(saved)
        if config.lr_schedule.depends_on_length() and int(saved.get("step", 0)) > 1 and was != config.epochs:
            refuse_extension(config, was, "its learning rate decays linearly over the whole run (lr_schedule.epochs: "
                             "null), and the steps already taken had the rates of that decay over "
                             + (f"the {was} epochs it was planned for" if was is not None else "the epochs it was planned for, which its checkpoint does not record"))

    def load_state_dict(self, state: State, sd: dict[str, Any]) -> State:
        self.check_resume(self.config, sd, self.steps_per_epoch)
        state = super().load_state_dict(state, sd)
        state.extra["plan"] = {"epochs": self.plan.epochs}
        return state

    def init(self, model: torch.nn.Module, plan: Plan | None = None) -> State:
        require(self, model)
        plan = self.needs_plan(plan)
        core = energy_core(model, self.config.routine)
        self.plan = plan
        self.steps_per_epoch = plan.steps_per_epoch
        model.init_from_data(plan.train_x)
        state = State(model=model, optimizers={"main": make_optimizer(core.parameters(), self.config.optimizer)})
        state.extra["plan"] = {"epochs": plan.epochs}
        if self.persistent:
            n = self.config.chains or plan.batch_size
            with torch.no_grad():
                state.extra["chains"] = core.init_chains(n)
        return state

    def step(self, state: State, batch: tuple[torch.Tensor, torch.Tensor | None]) -> tuple[State, dict[str, float]]:
        model = state.model
        core = model.core
        opt = state.optimizers["main"]
        lr = set_schedule(opt, self.config, state.step / self.steps_per_epoch, self.plan.epochs)
        v = model.to_visible(batch[0])
        chains = on_device(state.extra["chains"], v.device) if self.persistent else None
        nxt, info = gibbs_update(core, v, chains, self.config, opt, self.runtime, state.step,
                                 steps_per_epoch=self.steps_per_epoch)
        if self.persistent:
            state.extra["chains"] = nxt
        info["lr"] = lr
        state.step += 1
        return state, info

    def validate(self, state: State, x: torch.Tensor, y: torch.Tensor | None) -> dict[str, float]:
        model = state.model
        out = model.core.validation_metrics(model.to_visible(x), self.config.positive_sweeps)
        return {f"val_{k}": v for k, v in out.items()}


@register_routine("cd")
class CD(_ContrastiveDivergence):
    """CD-k: negative chains start at the data batch (Hinton 2002)."""

    Config = CDConfig
    persistent = False


@register_routine("pcd")
class PCD(_ContrastiveDivergence):
    """Persistent CD: negative chains carry over between updates (Tieleman 2008)."""

    Config = PCDConfig
    persistent = True
