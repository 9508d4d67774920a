"""Greedy layer-wise training of a deep belief net: one RBM at a time, bottom first, each trained by CD-k
or PCD on the data passed up through the layers below it (Hinton, Osindero & Teh 2006).

The loop knows only epochs; this routine splits them across the layers by ``epoch_split`` (relative
shares, equal by default, at least one epoch each), and its state says which layer is being trained
(``State.extra["layer"]``). The layer follows from the step count, so a resumed run picks up in the
right layer, with that layer's optimizer and persistent chains restored. When a layer starts, its
visible biases are set from the base rate of the data it will see (Hinton 2010, §8), and its
learning-rate schedule and momentum warm-up run over its own epochs.

References:
    Hinton, Osindero & Teh (2006), A Fast Learning Algorithm for Deep Belief Nets, Neural Comp. 18.
    Bengio, Lamblin, Popovici & Larochelle (2007), Greedy Layer-Wise Training of Deep Networks, NIPS.
    Hinton (2010), A Practical Guide to Training Restricted Boltzmann Machines, UTML TR 2010-003.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

import torch
from pydantic import Field, model_validator

from ppgen.inference.base import Routine, State, make_optimizer, parameter_names
from ppgen.inference.gibbs import GibbsConfig, gibbs_update, on_device, set_schedule, training_data
from ppgen.registry import register_routine
from ppgen.spec import SpecError

#: Examples used to set a new layer's visible biases from the data passed up to it.
BIAS_EXAMPLES = 10_000


class LayerwiseConfig(GibbsConfig):
    """CD-k (or, with ``persistent``, PCD with ``chains`` chains) on each layer in turn."""

    routine: Literal["layerwise"] = "layerwise"
    persistent: bool = False
    chains: int | None = Field(None, ge=1, le=1_000_000, description="persistent chains (default: the batch size)")
    epoch_split: list[float] | None = Field(None, description="relative share of the epochs per layer, bottom first")
    propagate: Literal["mean", "sample"] = Field(
        "mean", description="a layer's training data: the probabilities of the layer below (mean) or draws from them"
    )

    @model_validator(mode="after")
    def _check_split(self) -> "LayerwiseConfig":
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


@register_routine("layerwise")
class Layerwise(Routine):
    Config = LayerwiseConfig

    def requirements(self) -> tuple[type, ...]:
        return (StackedFamily,)

    def init(self, model: torch.nn.Module, steps_per_epoch: int | None = None) -> State:
        self.require(model)
        layers = model.layers
        data = training_data(model)
        if steps_per_epoch is None:
            steps_per_epoch = data.steps_per_epoch(model.spec.data.batch_size, self.runtime.world_size)
        self.steps_per_epoch = steps_per_epoch
        self.plan = split_epochs(self.config.epochs, len(layers), self.config.epoch_split)
        x = data.split("train")[0]
        model.init_from_data(x)
        # A copy of a slice, so the full training tensor is not kept alive by this routine.
        self.bias_x = model.to_visible(x[:BIAS_EXAMPLES].clone().to(model.x_mean.device))
        optimizers = {f"layer{i}": make_optimizer(layer.parameters(), self.config.optimizer) for i, layer in enumerate(layers)}
        state = State(model=model, optimizers=optimizers)
        state.extra["layer"] = 0
        if self.config.persistent:
            with torch.no_grad():
                state.extra["chains"] = layers[0].init_chains(self._n_chains(model))
        return state

    def _n_chains(self, model: torch.nn.Module) -> int:
        return self.config.chains or model.spec.data.batch_size

    def position(self, step: int) -> tuple[int, float]:
        """(layer, epochs into that layer) for a global step."""
        epoch = step / self.steps_per_epoch
        start = 0
        for i, n in enumerate(self.plan):
            if epoch < start + n or i == len(self.plan) - 1:
                return i, epoch - start
            start += n
        raise AssertionError("unreachable")

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
        lr = set_schedule(opt, self.config, into, self.plan[layer])
        with torch.no_grad():
            v = model.up(model.to_visible(batch[0]), layer, mean=self.config.propagate == "mean")
        binary = layer == 0 or self.config.propagate == "sample"
        chains = on_device(state.extra["chains"], v.device) if self.config.persistent else None
        nxt, info = gibbs_update(core, v, chains, self.config, opt, self.runtime, state.step, binary=binary)
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
