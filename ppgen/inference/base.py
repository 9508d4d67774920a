"""The contract of an inference routine: two verbs over explicit state.

``init(model, plan) -> state`` and ``step(state, batch) -> (state, info)``, where ``info`` is
a dict of floats with ``loss`` (a routine whose loss is an estimate that costs a noticeable share of a step
may measure it on some steps only, and leave it out of the others: the loop averages the steps that have
it and checks those for NaN, and ``log_every`` steps must have it). Whatever must survive a restart (optimizers, persistent chains,
moving averages) lives in the state and round-trips through ``state_dict``/``load_state_dict`` as
tensors and plain Python values, so checkpoints load with ``torch.load(weights_only=True)``.

Routines know nothing of progress bars, logging or checkpoint files: that is ``ppgen.training.loop``. What a
routine may know of the data and the schedule the loop hands it at ``init`` as a :class:`Plan` (the
training split, its size, the batch size, steps per epoch, epochs, processes); no routine loads data or
computes the schedule itself. The ``runtime`` given to the constructor is the routine's only view of the
devices: ``backward`` for the loss and ``reduce_gradients`` to average gradients across data-parallel
processes before an update.

A routine's :meth:`Routine.validate` that goes over the validation split in batches takes them from
:func:`validation_batches`, which reports each batch done to the loop's progress of the validation pass
(:func:`ppgen.progress.tick`, nothing outside the loop), so that a long validation is not silent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, Iterator, Protocol

import torch

from ppgen.progress import tick
from ppgen.spec import InferenceSpec, OptimizerSpec


class Runtime(Protocol):
    device: torch.device
    rank: int
    world_size: int

    def backward(self, loss: torch.Tensor) -> None: ...

    def reduce_gradients(self, params: Iterable[torch.nn.Parameter]) -> None: ...


class LocalRuntime:
    """One process: backward is ``loss.backward()`` and there is nothing to reduce."""

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.rank = 0
        self.world_size = 1

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def reduce_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        return None


@dataclass(frozen=True)
class Plan:
    """What the loop hands a routine at ``init``: the training split as the model sees it (before the
    loop's per-epoch binarization), its size, and the schedule the loop will run."""

    train_x: torch.Tensor
    train_y: torch.Tensor | None
    n_train: int
    batch_size: int
    steps_per_epoch: int
    epochs: int
    world_size: int = 1

    @classmethod
    def of(cls, dataset: Any, batch_size: int, epochs: int, world_size: int = 1) -> "Plan":
        """The plan for ``dataset`` (a :class:`ppgen.data.core.Dataset`) as the loop runs it."""
        x, y = dataset.split("train")
        return cls(train_x=x, train_y=y, n_train=int(x.shape[0]), batch_size=batch_size,
                   steps_per_epoch=dataset.steps_per_epoch(batch_size, world_size), epochs=epochs,
                   world_size=world_size)


@dataclass
class State:
    """What a routine carries between steps. ``optimizers`` maps a name to a torch optimizer; ``extra``
    holds tensors and plain values that must be checkpointed (e.g. persistent chains)."""

    model: torch.nn.Module
    optimizers: dict[str, torch.optim.Optimizer]
    step: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Routine:
    """Base class: subclasses set ``Config`` and implement ``init`` and ``step``."""

    Config: ClassVar[type[InferenceSpec]]
    routine_name: ClassVar[str]

    def __init__(self, config: InferenceSpec, runtime: Runtime | None = None) -> None:
        self.config = config
        self.runtime = runtime or LocalRuntime()

    def requirements(self) -> tuple[type, ...]:
        """The protocols (:mod:`ppgen.inference.capability`) a family must meet for this routine to fit
        it with this recipe; each routine checks them at ``init`` (``capability.require(self, model)``)."""
        return ()

    def init(self, model: torch.nn.Module, plan: Plan | None = None) -> State:
        """The state to start from. ``plan`` is the loop's (:class:`Plan`); a routine that uses the data
        or the schedule refuses to start without one (:meth:`needs_plan`)."""
        raise NotImplementedError

    def needs_plan(self, plan: Plan | None) -> Plan:
        if plan is None:
            raise TypeError(f"routine {self.routine_name!r} needs the loop's plan (training data and schedule): "
                            f"init(model, Plan.of(dataset, batch_size, epochs))")
        return plan

    def step(self, state: State, batch: tuple[torch.Tensor, torch.Tensor | None]) -> tuple[State, dict[str, float]]:
        raise NotImplementedError

    def finish_step(self, state: State, optimizer: torch.optim.Optimizer, loss: float) -> dict[str, float]:
        """The end of a one-optimizer step whose gradients are in place: average them across processes,
        clip if the recipe asks, update, count the step; returns the step's info."""
        self.runtime.reduce_gradients(state.model.parameters())
        info = {"loss": loss}
        norm = clip_and_step(optimizer, self.config.optimizer)
        if norm is not None:
            info["grad_norm"] = norm
        state.step += 1
        return info

    def trained_parameters(self, state: State, since: int) -> dict[str, list[str]]:
        """What the steps after step ``since`` up to ``state.step`` were meant to change, as groups of
        parameter names (as in ``state.model.named_parameters()``): the loop's guard stops training with
        an error when no parameter of a group changed over an epoch, or when the first step of a fit
        changed none at all. By default every parameter of the model that requires a gradient is a
        group of its own: every one must move. A routine whose steps update some parameters only on
        some steps (one layer at a time, a generator every n-th step), whose objective leaves some
        parameter without gradient by design, or that changes no weights (a sampler), says so."""
        if state.step <= since:
            return {}
        return {name: [name] for name, p in state.model.named_parameters() if p.requires_grad}

    def finished(self, state: State) -> bool:
        """True when further steps would change nothing (e.g. EM has converged): the loop then ends the
        run after the epoch's checkpoint. Deterministic, so that every process agrees."""
        return False

    @classmethod
    def check_resume(cls, config: InferenceSpec, saved: dict[str, Any], steps_per_epoch: int) -> None:
        """Raise a SpecError if the run whose routine state is ``saved`` (``state_dict``'s output) cannot
        continue under ``config`` exactly as a run started with ``config`` would have gone (e.g. a schedule
        that spans the run, planned for another number of epochs). The loop calls it before touching the
        run folder; routines whose steps do not depend on the number of epochs accept every resume."""

    def validate(self, state: State, x: torch.Tensor, y: torch.Tensor | None) -> dict[str, float]:
        """Held-out numbers for the epoch record (e.g. ``val_loss``); the loop calls it without gradients
        and with the RNG forked, so validating never changes the training stream. A validation in batches
        takes them from :func:`validation_batches`, so that the loop can show its progress."""
        return {}

    def state_dict(self, state: State) -> dict[str, Any]:
        return {
            "step": state.step,
            "optimizers": {k: opt.state_dict() for k, opt in state.optimizers.items()},
            "extra": state.extra,
        }

    def load_state_dict(self, state: State, sd: dict[str, Any]) -> State:
        state.step = int(sd["step"])
        for k, opt in state.optimizers.items():
            opt.load_state_dict(sd["optimizers"][k])
        state.extra = dict(sd.get("extra", {}))
        return state


def validation_batches(x: torch.Tensor, y: torch.Tensor | None,
                       size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """``x`` and ``y`` in consecutive slices of ``size`` examples, in order: the batches of a validation
    pass. When the caller asks for the next batch, the ones before it are done, and the count is reported
    (:func:`ppgen.progress.tick`) to the loop's phase of the validation pass; outside one nothing is
    reported. The slices are those of ``range(0, n, size)``, so the numbers computed from them do not depend
    on whether progress is shown."""
    n = x.shape[0]
    total = -(-n // size)
    for i, start in enumerate(range(0, n, size)):
        yield x[start : start + size], (y[start : start + size] if y is not None else None)
        tick(i + 1, total)


def parameter_names(model: torch.nn.Module, params: Iterable[torch.Tensor]) -> list[str]:
    """The names in ``model.named_parameters()`` of ``params``, in the model's order."""
    wanted = {id(p) for p in params}
    return [name for name, p in model.named_parameters() if id(p) in wanted]


def make_optimizer(params: Iterable[torch.nn.Parameter], spec: OptimizerSpec) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    if spec.name == "adam":
        return torch.optim.Adam(params, lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay)
    if spec.name == "adamw":
        return torch.optim.AdamW(params, lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay)
    if spec.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)


def clip_and_step(optimizer: torch.optim.Optimizer, spec: OptimizerSpec) -> float | None:
    """Clip the global gradient norm if the recipe asks, then update; returns the norm when clipped."""
    norm = None
    if spec.clip_norm is not None:
        params = [p for g in optimizer.param_groups for p in g["params"]]
        norm = float(torch.nn.utils.clip_grad_norm_(params, spec.clip_norm))
    optimizer.step()
    return norm
