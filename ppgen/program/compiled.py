"""A program compiled against its data (:class:`Program`): every site with its event shape, its options
and the rank of each parameter (:class:`Site`); the networks with their input and head shapes; the
learnable parameters and the constants, and the modules that hold them (:class:`ParamSet`,
:class:`ConstSet`). :func:`ppgen.program.compile.compile_program` makes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from torch.distributions import biject_to

from ppgen.data.core import DataInfo
from ppgen.program import expr, flows
from ppgen.program.decls import NetworkDecl
from ppgen.program.dists import Entry
from ppgen.program.networks import InputSpec, Network
from ppgen.program.schema import ProgramSpec

WHOLE = "out"  # the head name of a network used whole (``logits: decoder``)


@dataclass
class Site:
    """A compiled site."""

    name: str
    part: Literal["model", "guide"]
    entry: Entry
    args: dict[str, expr.Node]
    options: dict[str, Any]
    shape: tuple[int, ...]
    is_global: bool
    observed: str | None
    enumerate: bool  # model: summed out in the model; guide: a discrete guide site, summed out under q
    param_ranks: dict[str, int] = field(default_factory=dict)
    param_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    deterministic: bool = False  # a Delta site of the model: a function of its parents
    fast: str | None = None  # "normal" or "bernoulli": log-probabilities without distribution objects
    standard_normal: bool = False  # Normal(0, 1) with constant parameters

    @property
    def where(self) -> str:
        return f"{self.part}.{self.name}"

    @property
    def latent(self) -> bool:
        return self.observed is None and not self.deterministic

    @property
    def event_dim(self) -> int:
        return len(self.shape)


class ParamSet(nn.Module):
    """Learnable parameters, each stored unconstrained (what the optimizer moves) with the transform to
    its constraint."""

    def __init__(self) -> None:
        super().__init__()
        self.transforms: dict[str, Any] = {}

    def add(self, name: str, init: torch.Tensor, constraint: Any, noise: float = 0.0) -> None:
        t = biject_to(constraint)
        u = t.inv(init.detach().to(torch.get_default_dtype()))
        if noise > 0:
            u = u + noise * torch.randn_like(u)
        self.register_parameter(name, nn.Parameter(u.clone()))
        self.transforms[name] = t

    def value(self, name: str) -> torch.Tensor:
        return self.transforms[name](self._parameters[name])


class ConstSet(nn.Module):
    """The program's constant tensors, as buffers so that they follow the module to a device (not saved:
    the spec rebuilds them)."""

    def add(self, name: str, value: torch.Tensor) -> None:
        self.register_buffer(name.lstrip("#"), value.clone(), persistent=False)

    def value(self, name: str) -> torch.Tensor:
        return self._buffers[name.lstrip("#")]


@dataclass
class Program:
    """A program compiled against its data (no modules: :meth:`build_modules` makes them)."""

    spec: ProgramSpec
    info: DataInfo
    model: list[Site]  # global sites first, then local, each in declared order
    guide: list[Site]
    networks: dict[str, tuple[NetworkDecl, list[InputSpec], dict[str, tuple[int, ...]]]]
    params: dict[str, tuple[torch.Tensor, Any, float]]  # name -> (constrained init, constraint, noise)
    constants: dict[str, tuple[torch.Tensor, int]]
    auto_globals: dict[str, str] = field(default_factory=dict)  # global site -> "normal" | "delta"

    def __post_init__(self) -> None:
        self.model_by_name = {s.name: s for s in self.model}
        self.guide_by_name = {s.name: s for s in self.guide}
        self.rank: dict[str, int] = {s.name: len(s.shape) for s in self.model}
        for name, (init, _, _) in self.params.items():
            self.rank[name] = init.dim()
        for name, (_, e) in self.constants.items():
            self.rank[name] = e
        self.head_rank = {(n, h): len(shape) for n, (_, _, heads) in self.networks.items() for h, shape in heads.items()}
        self.x_site = next(s for s in self.model if s.observed == "x")
        self.y_site = next((s for s in self.model if s.observed == "y"), None)
        self.local_model = [s for s in self.model if not s.is_global]
        self.global_model = [s for s in self.model if s.is_global]
        self.local_guide = [s for s in self.guide if not s.is_global]
        self.global_guide = [s for s in self.guide if s.is_global]
        self.has_global_latents = any(s.latent for s in self.global_model)
        self.delta_locals = [s.name for s in self.local_guide if s.entry.name in ("Delta", "ConstrainedDelta")
                             and not s.entry.discrete]
        sampled = [s for s in self.guide if s.entry.name not in ("Delta", "ConstrainedDelta") and not s.enumerate]
        #: log p(x) needs no sampling: no continuous latent (enumerated ones are summed exactly, point
        #: estimates of globals are plugged in).
        self.exact = not sampled and not self.delta_locals
        if self.x_site.options.get("dequantize") is not None:
            self.exact = False  # log P(x) integrates the density over each level's cell: estimated by sampling
        self.enumerated = [s.name for s in self.model if s.enumerate] + [s.name for s in self.guide if s.enumerate]
        y = self.y_site.name if self.y_site is not None else None
        #: sites other than the labels are summed out in every pass
        self.always_enumerates = any(s.enumerate for s in self.model + self.guide if s.name != y)
        #: latents whose log p - log q may be replaced by -KL(q || p) (meanfield): those whose model parents
        #: are all drawn before them in the guide, so that the parents' values do not depend on them
        #: (TraceMeanField_ELBO assumes it and only warns when the orders differ)
        position = {g.name: i for i, g in enumerate(self.guide)}
        self.kl_ok = set()
        for m in self.model:
            if not m.latent or m.name not in position:
                continue
            parents = self.parents(m)
            if all(position.get(p, -1) < position[m.name] for p in parents if self.model_by_name[p].latent):
                self.kl_ok.add(m.name)
        #: the guide reads y but has no site y: every label must be given
        self.labels_required = False
        if self.y_site is not None and self.y_site.name not in self.guide_by_name:
            y = self.y_site.name
            for g in self.guide:
                for node in g.args.values():
                    for ref in expr.references(node):
                        if ref.name == y or (ref.name in self.networks and
                                             any(i.site == y for i in self.networks[ref.name][1])):
                            self.labels_required = True

    def parents(self, site: Site) -> set[str]:
        """The model sites a site's distribution depends on: read directly or through networks, and
        through deterministic sites to their own parents."""
        out: set[str] = set()
        todo = [site]
        while todo:
            s = todo.pop()
            for node in s.args.values():
                for ref in expr.references(node):
                    names = [i.site for i in self.networks[ref.name][1]] if ref.name in self.networks else [ref.name]
                    for n in names:
                        m = self.model_by_name.get(n)
                        if m is None or n in out:
                            continue
                        out.add(n)
                        if m.deterministic:
                            todo.append(m)
        return out

    def build_modules(self) -> tuple[nn.ModuleDict, ParamSet, ConstSet]:
        nets = nn.ModuleDict({
            name: Network(name, decl.kind, decl.hidden, decl.activation, inputs, heads)
            for name, (decl, inputs, heads) in self.networks.items()
        })
        for s in self.model + self.guide:
            if flows.is_flow(s):
                nets[flows.key(s)] = flows.build_stack(s)
        params = ParamSet()
        for name, (init, constraint, noise) in self.params.items():
            params.add(name, init, constraint, noise)
        consts = ConstSet()
        for name, (value, _) in self.constants.items():
            consts.add(name, value)
        return nets, params, consts
