"""The distributions a site of the model language may have, and how a site's parameters become one.

Each :class:`Entry` says which parameters a distribution takes (``loc``, ``scale``, ``logits``...), which
are required or mutually exclusive, what shape each must have given the site's event shape ``S``, whether
the distribution is discrete and can be enumerated, and which plain options (``classes``, ``levels``...)
it reads. A site's event shape is what Pyro calls the event shape of the site's distribution: for a
Normal with ``shape: [50]`` the fifty coordinates are one value (``Normal(...).to_event(1)``); for a
Dirichlet or a OneHotCategorical the last dimension of ``S`` is the distribution's own.

``PixelCategorical`` is the 256-way (or ``levels``-way) categorical over the grey values of a pixel that
the autoregressive families use (van den Oord et al. 2016): an intensity v in [0, 1] is level
round(v * scale); its ``logits`` have one more dimension than the site, of size ``levels``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions.torch_distribution import TorchDistribution
from torch.distributions import biject_to, constraints


@dataclass(frozen=True)
class Entry:
    """One distribution of the table."""

    name: str
    build_fn: Callable[..., dist.Distribution]
    params: tuple[str, ...]
    required: tuple[str, ...] = ()
    one_of: tuple[str, ...] = ()
    defaults: dict[str, float] = field(default_factory=dict)
    #: parameter -> the option whose value is the size of its extra trailing dimension
    extra: dict[str, str] = field(default_factory=dict)
    #: event dimensions the distribution has of its own (Dirichlet, OneHotCategorical: 1)
    intrinsic: int = 0
    discrete: bool = False
    enumerable: bool = False
    options: tuple[str, ...] = ()
    doc: str = ""
    internal: bool = False

    def describe_params(self) -> str:
        parts = [p for p in self.params if p not in self.one_of]
        text = ", ".join(parts)
        if self.one_of:
            text = (text + "; " if text else "") + " or ".join(self.one_of)
        return text


class PixelCategorical(TorchDistribution):
    """Intensities on the grid {0, 1, ..., levels - 1} / scale, each pixel a Categorical over the levels.

    ``logits`` has shape (..., levels); batch shape is ``logits.shape[:-1]``, event shape (). A value off
    the grid is an error naming the fix, not a silent rounding.
    """

    arg_constraints = {"logits": constraints.real_vector}
    support = constraints.unit_interval
    has_enumerate_support = False

    def __init__(self, logits: torch.Tensor, levels: int, scale: float, validate_args: bool | None = None) -> None:
        if logits.shape[-1] != levels:
            raise ValueError(f"PixelCategorical: logits end in {logits.shape[-1]} values, expected levels = {levels}")
        self.logits = logits
        self.levels, self.scale = int(levels), float(scale)
        super().__init__(logits.shape[:-1], torch.Size(), validate_args=False)

    def expand(self, batch_shape: Any, _instance: Any = None) -> "PixelCategorical":
        batch_shape = torch.Size(batch_shape)
        return PixelCategorical(self.logits.expand(*batch_shape, self.levels), self.levels, self.scale)

    def level(self, value: torch.Tensor) -> torch.Tensor:
        k = torch.round(value * self.scale)
        if (k - value * self.scale).abs().max() > 1e-3 or k.min() < 0 or k.max() > self.levels - 1:
            raise ValueError(
                f"PixelCategorical with {self.levels} levels and scale {self.scale:g} needs intensities k / "
                f"{self.scale:g} for integers k in 0..{self.levels - 1}; these data are not. Set the site's "
                "levels and scale to how the data were quantized"
            )
        return k.long()

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        k = self.level(value)
        logp = torch.log_softmax(self.logits, -1)
        shape = torch.broadcast_shapes(k.shape, logp.shape[:-1])
        return logp.expand(*shape, self.levels).gather(-1, k.expand(shape).unsqueeze(-1)).squeeze(-1)

    def sample(self, sample_shape: Any = torch.Size()) -> torch.Tensor:
        k = torch.distributions.Categorical(logits=self.logits).sample(sample_shape)
        return k.to(self.logits.dtype) / self.scale

    @property
    def mean(self) -> torch.Tensor:
        levels = torch.arange(self.levels, dtype=self.logits.dtype, device=self.logits.device)
        return (torch.softmax(self.logits, -1) * levels).sum(-1) / self.scale


def _indep(d: dist.Distribution, n: int) -> dist.Distribution:
    return d.to_event(n) if n > 0 else d


def _simple(cls: Any) -> Callable[..., dist.Distribution]:
    def build(args: dict[str, torch.Tensor], shape: tuple[int, ...], opts: dict[str, Any], validate: bool | None,
              entry: Entry) -> dist.Distribution:
        return _indep(cls(**args, validate_args=validate), len(shape) - entry.intrinsic)

    return build


def _delta(args: dict[str, torch.Tensor], shape: tuple[int, ...], opts: dict[str, Any], validate: bool | None,
           entry: Entry) -> dist.Distribution:
    return dist.Delta(args["v"], event_dim=len(shape), validate_args=validate)


def _pixel(args: dict[str, torch.Tensor], shape: tuple[int, ...], opts: dict[str, Any], validate: bool | None,
           entry: Entry) -> dist.Distribution:
    return _indep(PixelCategorical(args["logits"], opts["levels"], opts["scale"]), len(shape))


def _constrained_normal(args: dict[str, torch.Tensor], shape: tuple[int, ...], opts: dict[str, Any],
                        validate: bool | None, entry: Entry) -> dist.Distribution:
    support = opts["support"]
    unconstrained = tuple(biject_to(support).inverse_shape(torch.Size(shape)))
    base = _indep(dist.Normal(args["loc"], args["scale"], validate_args=validate), len(unconstrained))
    if support is constraints.real:
        return base
    # cached, so that log_prob of a value it drew inverts nothing (exactly the value's own base draw)
    return dist.TransformedDistribution(base, [biject_to(support).with_cache()], validate_args=validate)


def _constrained_delta(args: dict[str, torch.Tensor], shape: tuple[int, ...], opts: dict[str, Any],
                       validate: bool | None, entry: Entry) -> dist.Distribution:
    return dist.Delta(biject_to(opts["support"])(args["v"]), event_dim=len(shape), validate_args=validate)


def _mixture(args: dict[str, torch.Tensor], shape: tuple[int, ...], opts: dict[str, Any], validate: bool | None,
             entry: Entry) -> dist.Distribution:
    comp_entry: Entry = opts["component_entry"]
    comp_args = {k[len("component."):]: v for k, v in args.items() if k.startswith("component.")}
    component = comp_entry.build_fn(comp_args, shape, opts["component_options"], validate, comp_entry)
    mix = {k: v for k, v in args.items() if k in ("logits", "probs")}
    return dist.MixtureSameFamily(dist.Categorical(**mix, validate_args=validate), component, validate_args=validate)


def _transformed(args: dict[str, torch.Tensor], shape: tuple[int, ...], opts: dict[str, Any], validate: bool | None,
                 entry: Entry) -> dist.Distribution:
    """A base pushed through declared Pyro transforms (the layers, built by ppgen.program.flows, come in
    ``args["#flow"]``)."""
    return build_flow(args, shape, opts, validate, entry)


def build_flow(args: dict[str, torch.Tensor], shape: tuple[int, ...], opts: dict[str, Any], validate: bool | None,
               entry: Any) -> dist.Distribution:
    """The site's distribution in one pass: the base from its parameters, pushed through the layers."""
    stack = args.get("#flow")
    if stack is None:
        raise ValueError("the flow's layers were not given (internal: the site was built outside a pass)")
    base_args = {k[len("base."):]: v for k, v in args.items() if k.startswith("base.")}
    base = build(opts["base_entry"], base_args, shape, opts["base_options"], validate)
    context = args.get("context")
    if context is not None:
        # one distribution per context: the batch dimensions of the context (particles, examples) are the flow's
        base = base.expand(torch.broadcast_shapes(base.batch_shape, context.shape[:-1]))
    return Flow(base, stack.transforms(context), validate_args=validate)


class Flow(dist.TransformedDistribution):
    """Pyro's TransformedDistribution, scoring a value over the whole batch shape: a conditional flow's
    batch comes from its context, which its networks broadcast only over the value's own dimensions."""

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        shape = torch.broadcast_shapes(value.shape, self.batch_shape + self.event_shape)
        if shape != value.shape:
            value = value.expand(shape)
        return super().log_prob(value)


def _entries() -> dict[str, Entry]:
    e: list[Entry] = [
        Entry("Normal", _simple(dist.Normal), ("loc", "scale"), required=("loc", "scale")),
        Entry("LogNormal", _simple(dist.LogNormal), ("loc", "scale"), required=("loc", "scale")),
        Entry("Laplace", _simple(dist.Laplace), ("loc", "scale"), required=("loc", "scale")),
        Entry("Cauchy", _simple(dist.Cauchy), ("loc", "scale"), required=("loc", "scale")),
        Entry("StudentT", _simple(dist.StudentT), ("df", "loc", "scale"), required=("df",),
              defaults={"loc": 0.0, "scale": 1.0}),
        Entry("HalfNormal", _simple(dist.HalfNormal), ("scale",), required=("scale",)),
        Entry("HalfCauchy", _simple(dist.HalfCauchy), ("scale",), required=("scale",)),
        Entry("Exponential", _simple(dist.Exponential), ("rate",), required=("rate",)),
        Entry("Gamma", _simple(dist.Gamma), ("concentration", "rate"), required=("concentration", "rate")),
        Entry("Beta", _simple(dist.Beta), ("concentration1", "concentration0"),
              required=("concentration1", "concentration0")),
        Entry("Uniform", _simple(dist.Uniform), ("low", "high"), required=("low", "high")),
        Entry("Dirichlet", _simple(dist.Dirichlet), ("concentration",), required=("concentration",), intrinsic=1),
        Entry("Bernoulli", _simple(dist.Bernoulli), ("probs", "logits"), one_of=("probs", "logits"),
              discrete=True, enumerable=True),
        Entry("ContinuousBernoulli", _simple(dist.ContinuousBernoulli), ("probs", "logits"),
              one_of=("probs", "logits")),
        Entry("Categorical", _simple(dist.Categorical), ("probs", "logits"), one_of=("probs", "logits"),
              extra={"probs": "classes", "logits": "classes"}, discrete=True, enumerable=True,
              options=("classes",)),
        Entry("OneHotCategorical", _simple(dist.OneHotCategorical), ("probs", "logits"),
              one_of=("probs", "logits"), intrinsic=1, discrete=True, enumerable=True, options=("classes",)),
        Entry("Poisson", _simple(dist.Poisson), ("rate",), required=("rate",), discrete=True),
        Entry("Delta", _delta, ("v",), required=("v",)),
        Entry("MixtureSameFamily", _mixture, ("probs", "logits"), one_of=("probs", "logits"),
              options=("components", "component")),
        Entry("PixelCategorical", _pixel, ("logits",), required=("logits",), extra={"logits": "levels"},
              discrete=True, options=("levels", "scale")),
        Entry("TransformedDistribution", _transformed, ("context",), options=("base", "transforms", "context_dim")),
        Entry("ConstrainedNormal", _constrained_normal, ("loc", "scale"), required=("loc", "scale"),
              options=("support",), internal=True),
        Entry("ConstrainedDelta", _constrained_delta, ("v",), required=("v",), options=("support",), internal=True),
    ]
    return {x.name: x for x in e}


TABLE: dict[str, Entry] = _entries()


def public_names() -> list[str]:
    return [n for n, e in TABLE.items() if not e.internal]


def param_event_shape(entry: Entry, param: str, shape: tuple[int, ...], opts: dict[str, Any]) -> tuple[int, ...]:
    """The shape one example's value of ``param`` must have for a site of event shape ``shape``."""
    if entry.name == "MixtureSameFamily":
        m = opts["components"]
        if param in ("logits", "probs"):
            return (m,)
        comp_entry: Entry = opts["component_entry"]
        inner = param[len("component."):]
        return (m, *param_event_shape(comp_entry, inner, shape, opts["component_options"]))
    if entry.name in ("ConstrainedNormal", "ConstrainedDelta"):
        return tuple(biject_to(opts["support"]).inverse_shape(torch.Size(shape)))
    if entry.name == "TransformedDistribution":
        if param == "context":
            return (opts["context_dim"],)
        return param_event_shape(opts["base_entry"], param[len("base."):], shape, opts["base_options"])
    if param in entry.extra:
        return (*shape, opts[entry.extra[param]])
    return tuple(shape)


def build(entry: Entry, args: dict[str, torch.Tensor], shape: tuple[int, ...], opts: dict[str, Any],
          validate: bool | None = False) -> dist.Distribution:
    d = entry.build_fn(args, shape, opts, validate, entry)
    if opts.get("dequantize") is not None:
        from ppgen.program.dequantize import Dequantized

        d = Dequantized(d, opts["dequantize"].levels, opts["dequantize"].scale)
    return d


def one_hot_labels(y: torch.Tensor, k: int) -> torch.Tensor:
    return F.one_hot(y.long(), k).to(torch.get_default_dtype())
