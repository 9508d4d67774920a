"""Greedy layer-wise training of a deep belief net: one RBM at a time, bottom first, each trained by CD-k
or PCD on the data passed up through the layers below it (Hinton, Osindero & Teh 2006).

The loop knows only epochs; this routine's plan gives each layer its epochs, bottom first. The recipe
declares it with ``layer_epochs`` (one number for every layer, or one per layer), and the run's epochs
past the plan keep training the top layer; or, without it, ``epoch_split`` splits the run's epochs
across the layers (relative shares, equal by default, at least one epoch each). The state says which
layer is being trained (``State.extra["layer"]``) and records the plan. The layer follows from the step
count, so a resumed run picks up in the right layer, with that layer's optimizer and persistent chains
restored. When a layer starts, its visible biases are set from the base rate of the data it will see
(Hinton 2010, §8), and its learning-rate schedule and momentum warm-up run over its own epochs.

A declared plan does not depend on the run's length, so a run extends exactly (1 epoch and then
``--resume --epochs 3`` is the 3-epoch run). A split is made for the run's epochs; a resume to other
epochs is accepted where every step already taken falls in the same layer at the same learning rate
under the new split, and refused otherwise.

References:
    Hinton, Osindero & Teh (2006), A Fast Learning Algorithm for Deep Belief Nets, Neural Comp. 18.
    Bengio, Lamblin, Popovici & Larochelle (2007), Greedy Layer-Wise Training of Deep Networks, NIPS.
    Hinton (2010), A Practical Guide to Training Restricted Boltzmann Machines, UTML TR 2010-003.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

import torch
from pydantic import Field, StrictInt, model_validator

from ppgen.inference.base import Plan, Routine, State, make_optimizer, parameter_names
from ppgen.inference.capability import require
from ppgen.inference.gibbs import GibbsConfig, gibbs_update, on_device, planned_epochs, refuse_extension, set_schedule
from ppgen.registry import register_routine
from ppgen.spec import SpecError

#: Examples used to set a new layer's visible biases from the data passed up to it.
BIAS_EXAMPLES = 10_000


class LayerwiseConfig(GibbsConfig):
    """CD-k (or, with ``persistent``, PCD with ``chains`` chains) on each layer in turn."""

    routine: Literal["layerwise"] = "layerwise"
    persistent: bool = False
    chains: int | None = Field(None, ge=1, le=1_000_000, description="persistent chains (default: the batch size)")
    layer_epochs: StrictInt | list[StrictInt] | None = Field(
        None, description="epochs per layer, bottom first (one number: every layer); the run's epochs past them train the top layer"
    )
    epoch_split: list[float] | None = Field(None, description="relative share of the run's epochs per layer, bottom first")
    propagate: Literal["mean", "sample"] = Field(
        "mean", description="a layer's training data: the probabilities of the layer below (mean) or draws from them"
    )

    @model_validator(mode="after")
    def _check_split(self) -> "LayerwiseConfig":
        if self.layer_epochs is not None:
            if self.epoch_split is not None:
                raise ValueError("set layer_epochs (epochs per layer) or epoch_split (shares of the run's epochs), not both")
            per = [self.layer_epochs] if isinstance(self.layer_epochs, int) else self.layer_epochs
            if not per or any(n < 1 for n in per):
                raise ValueError(f"layer_epochs must be a number of epochs for every layer or one per layer, each at "
                                 f"least 1, e.g. 10 or [10, 10, 20]; got {self.layer_epochs!r}")
        if self.epoch_split is not None and (not self.epoch_split or any(w <= 0 for w in self.epoch_split)):
            raise ValueError("epoch_split must list one positive share per layer, e.g. [1, 1, 2]")
        if self.chains is not None and not self.persistent:
            raise ValueError("chains applies to persistent chains: set persistent: true or drop chains")
        return self


class StackedFamily(Protocol):
    """A stack of RBMs (``layers``, bottom first) and the pass of data up through them."""

    layers: Any

    def up(self, v: torch.Tensor, upto: int, mean: bool = True) -> torch.Tensor:
        """Visible vectors passed up through the first ``upto`` layers."""
        ...

    def to_visible(self, x: torch.Tensor) -> torch.Tensor:
        """Examples as visible vectors."""
        ...

    def init_from_data(self, x: torch.Tensor) -> None:
        """Data-driven initial biases of the bottom layer."""
        ...


def split_epochs(epochs: int, layers: int, shares: list[float] | None = None) -> list[int]:
    """Epochs per layer: one each, then the rest in proportion to ``shares`` (largest remainders)."""
    if shares is not None and len(shares) != layers:
        raise SpecError(f"epoch_split has {len(shares)} entries but the model has {layers} layers; give one share per layer")
    if epochs < layers:
        raise SpecError(f"layerwise training of {layers} layers needs at least {layers} epochs (one per layer), got {epochs}; raise --epochs")
    shares = shares or [1.0] * layers
    rest = epochs - layers
    total = sum(shares)
    exact = [rest * s / total for s in shares]
    alloc = [int(e) for e in exact]
    order = sorted(range(layers), key=lambda i: exact[i] - alloc[i], reverse=True)
    for i in order[: rest - sum(alloc)]:
        alloc[i] += 1
    return [1 + a for a in alloc]


def layer_plan(config: LayerwiseConfig, epochs: int, layers: int) -> list[int]:
    """Epochs per layer: the recipe's ``layer_epochs``, or the split of the run's ``epochs``."""
    if config.layer_epochs is None:
        return split_epochs(epochs, layers, config.epoch_split)
    if isinstance(config.layer_epochs, int):
        return [config.layer_epochs] * layers
    if len(config.layer_epochs) != layers:
        raise SpecError(f"layer_epochs has {len(config.layer_epochs)} entries but the model has {layers} layers; "
                        "give one per layer, or one number for every layer")
    return list(config.layer_epochs)


def layer_at(epoch: float, plan: list[int]) -> tuple[int, float]:
    """(layer, epochs into that layer) at a (fractional) epoch of the run; past the plan, the top layer."""
    start = 0
    for i, n in enumerate(plan):
        if epoch < start + n or i == len(plan) - 1:
            return i, epoch - start
        start += n
    raise AssertionError("unreachable")


@register_routine("layerwise")
class Layerwise(Routine):
    Config = LayerwiseConfig

    def requirements(self) -> tuple[type, ...]:
        return (StackedFamily,)

    @classmethod
    def check_resume(cls, config: LayerwiseConfig, saved: dict[str, Any], steps_per_epoch: int) -> None:
        """Refuse (SpecError) to continue a run under a plan that would have put a step already taken in
        another layer, or (with a linear decay over each layer's epochs) at another learning rate."""
        if config.layer_epochs is not None:
            return  # the plan does not depend on the run's epochs
        extra = saved.get("extra", {})
        was = planned_epochs(saved)
        old = extra.get("plan", {}).get("layers") if isinstance(extra.get("plan"), dict) else None
        steps = int(saved.get("step", 0))
        if was is None or old is None:
            if steps > 0:
                refuse_extension(config, None, "its epochs are split across the layers in shares of the run's epochs "
                                 "(epoch_split), and its checkpoint does not record the split its steps followed")
            return
        new = layer_plan(config, config.epochs, len(old))
        done = -(-steps // steps_per_epoch)  # epochs with at least one step taken
        layers = [layer_at(k, old)[0] for k in range(done)]
        if layers != [layer_at(k, new)[0] for k in range(done)]:
            refuse_extension(config, was, f"its epochs are split across the layers in shares of the run's epochs "
                             f"(epoch_split): {old} for the {was} epochs it was planned for, {new} for {config.epochs}, "
                             f"which would put some of the {done} epochs already trained in another layer")
        if config.lr_schedule.depends_on_length() and any(old[i] != new[i] for i in set(layers)):
            refuse_extension(config, was, f"each layer's learning rate decays linearly over that layer's epochs "
                             f"(lr_schedule.epochs: null), and splitting {config.epochs} epochs instead of {was} gives "
                             f"the layers already trained other lengths ({new} instead of {old})")

    def init(self, model: torch.nn.Module, plan: Plan | None = None) -> State:
        require(self, model)
        plan = self.needs_plan(plan)
        layers = model.layers
        self.plan = plan
        self.steps_per_epoch = plan.steps_per_epoch
        self.split = layer_plan(self.config, plan.epochs, len(layers))
        x = plan.train_x
        model.init_from_data(x)
        # A copy of a slice, so the full training tensor is not kept alive by this routine.
        self.bias_x = model.to_visible(x[:BIAS_EXAMPLES].clone().to(model.x_mean.device))
        optimizers = {f"layer{i}": make_optimizer(layer.parameters(), self.config.optimizer) for i, layer in enumerate(layers)}
        state = State(model=model, optimizers=optimizers)
        state.extra["layer"] = 0
        state.extra["plan"] = {"epochs": plan.epochs, "layers": list(self.split)}
        if self.config.persistent:
            with torch.no_grad():
                state.extra["chains"] = layers[0].init_chains(self._n_chains(model))
        return state

    def _n_chains(self, model: torch.nn.Module) -> int:
        return self.config.chains or self.plan.batch_size

    def position(self, step: int) -> tuple[int, float]:
        """(layer, epochs into that layer) for a global step."""
        return layer_at(step / self.steps_per_epoch, self.split)

    def load_state_dict(self, state: State, sd: dict[str, Any]) -> State:
        self.check_resume(self.config, sd, self.steps_per_epoch)
        state = super().load_state_dict(state, sd)
        state.extra["plan"] = {"epochs": self.plan.epochs, "layers": list(self.split)}
        return state

    @torch.no_grad()
    def _start_layer(self, state: State, layer: int) -> None:
        model = state.model
        core = model.layers[layer]
        if model.spec.init.visible_bias == "data":
            core.init_from_data(model.up(self.bias_x, layer, mean=True))
        state.extra["layer"] = layer
        if self.config.persistent:
            state.extra["chains"] = core.init_chains(self._n_chains(model))

    def step(self, state: State, batch: tuple[torch.Tensor, torch.Tensor | None]) -> tuple[State, dict[str, float]]:
        model = state.model
        layer, into = self.position(state.step)
        if layer != state.extra["layer"]:
            self._start_layer(state, layer)
        core = model.layers[layer]
        opt = state.optimizers[f"layer{layer}"]
        lr = set_schedule(opt, self.config, into, self.split[layer])
        with torch.no_grad():
            v = model.up(model.to_visible(batch[0]), layer, mean=self.config.propagate == "mean")
        binary = layer == 0 or self.config.propagate == "sample"
        chains = on_device(state.extra["chains"], v.device) if self.config.persistent else None
        nxt, info = gibbs_update(core, v, chains, self.config, opt, self.runtime, state.step, binary=binary,
                                 steps_per_epoch=self.steps_per_epoch)
        if self.config.persistent:
            state.extra["chains"] = nxt
        info["lr"] = lr
        info["layer"] = float(layer)
        state.step += 1
        return state, info

    def trained_parameters(self, state: State, since: int) -> dict[str, list[str]]:
        """Each parameter of the layers trained in those steps (the layer grows with the step)."""
        if state.step <= since:
            return {}
        first, last = self.position(since)[0], self.position(state.step - 1)[0]
        layers = state.model.layers
        names = parameter_names(state.model, (p for i in range(first, last + 1) for p in layers[i].parameters()))
        return {name: [name] for name in names}

    def validate(self, state: State, x: torch.Tensor, y: torch.Tensor | None) -> dict[str, float]:
        model = state.model
        layer = int(state.extra["layer"])
        binary = layer == 0 or self.config.propagate == "sample"
        v = model.up(model.to_visible(x), layer, mean=self.config.propagate == "mean")
        out = model.layers[layer].validation_metrics(v, binary=binary)
        res = {f"val_{k}": val for k, val in out.items()}
        res["layer"] = float(layer)
        return res
