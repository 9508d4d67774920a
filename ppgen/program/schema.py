"""The spec of the model language (``family: program``) and its structural checks.

A program declares networks, learnable parameters, the model's sites in order and a guide::

    family: program
    data: {name: mnist, binarize: dynamic}
    networks:
      decoder: {kind: mlp, inputs: [z], hidden: [400]}
      encoder: {kind: mlp, inputs: [x], hidden: [400]}
    model:
      z: {dist: Normal, loc: 0.0, scale: 1.0, shape: [50]}
      x: {dist: Bernoulli, logits: decoder, observed: x}
    guide:
      z: {dist: Normal, loc: encoder.loc, scale: softplus(encoder.scale) + 1e-4}

A site's keys are ``dist``, ``shape`` (its event shape), ``observed`` (``x`` or ``y``: the data field it is
bound to), ``global`` (outside the data plate), ``enumerate: parallel`` (a discrete latent summed out),
the distribution's parameters and its options (``classes``, ``levels``, ``scale``, ``components``,
``component``). A parameter is a number, a list of numbers, an expression (text), or a learnable
parameter written inline as ``{param: 1.0, constraint: positive, shape: []}``.

:func:`structure` checks everything that does not need the data: names, distributions and their
parameters, expressions, the order of sites, networks' inputs, the guide's coverage of the latent sites.
Every error is a :class:`~ppgen.spec.SpecError` naming the site (``model.z.loc: ...``).
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from pydantic import ConfigDict, Field, model_validator

from ppgen.nets.blocks import Activation
from ppgen.program import dequantize, expr, flows
from ppgen.program.dequantize import DequantizeDecl
from ppgen.program.dists import TABLE, Entry, public_names
from ppgen.spec import ModelSpec, SpecError, Strict

Constraint = Literal["real", "positive", "unit_interval", "simplex", "lower_cholesky"]


class NetworkDecl(Strict):
    """A network declared once: its kind (``mlp``, ``conv`` or ``linear``, as in ``ppgen.nets.blocks``), the
    sites it reads (``inputs``), hidden sizes and activation. Its outputs ("heads", ``encoder.loc``) take
    the shapes of the parameters they feed; ``outputs`` gives them explicitly where that cannot be
    inferred (a head used inside a matrix product)."""

    kind: Literal["mlp", "conv", "linear"] = "mlp"
    inputs: list[str] = Field(min_length=1)
    hidden: list[int] = Field(default_factory=lambda: [400])
    activation: Activation = "relu"
    outputs: dict[str, list[int]] | None = None


class ParamDecl(Strict):
    """A learnable parameter: its shape, its starting value (a number or nested list, in the
    constrained space), optional noise of standard deviation ``init_std`` added to the unconstrained
    value (to break symmetry), and its constraint."""

    shape: list[int] = Field(default_factory=list)
    init: float | list[Any] = 0.0
    init_std: float = Field(0.0, ge=0)
    constraint: Constraint = "real"


class SiteDecl(Strict):
    """One sample site. The distribution's parameters and options are further keys."""

    model_config = ConfigDict(extra="allow", validate_assignment=True, protected_namespaces=(),
                              validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    dist: str
    shape: list[int] | None = None
    observed: Literal["x", "y"] | None = None
    global_: bool = Field(False, alias="global")
    enumerate: Literal["parallel"] | None = None
    dequantize: Literal["uniform"] | DequantizeDecl | None = None


class AutoNetworkDecl(Strict):
    """The encoder that ``guide: auto`` and ``guide: delta`` build for the local latent sites."""

    kind: Literal["mlp", "conv", "linear"] = "mlp"
    hidden: list[int] = Field(default_factory=lambda: [400])
    activation: Activation = "relu"


class ProgramSpec(ModelSpec):
    """A model written in the model language (see :mod:`ppgen.program`)."""

    family: Literal["program"] = "program"
    networks: dict[str, NetworkDecl] = Field(default_factory=dict)
    params: dict[str, ParamDecl] = Field(default_factory=dict)
    model: dict[str, SiteDecl]
    guide: Literal["auto", "delta"] | dict[str, SiteDecl] = "auto"
    guide_globals: Literal["normal", "delta"] = Field(
        "normal", description="guide of global latents not in the guide: normal (AutoNormal) or delta (AutoDelta, MAP)")
    auto_network: AutoNetworkDecl = Field(default_factory=AutoNetworkDecl)
    num_data: int | None = Field(None, ge=1, description="N that scales global sites (B/N); default: the training-set size")
    autoguide: str | None = Field(None, description="Pyro's autoguide of the global latents: AutoNormal (guide_globals: "
                                  "normal) or AutoDelta (delta); see ppgen.program.autoguide")

    @model_validator(mode="before")
    @classmethod
    def _autoguide(cls, data: Any) -> Any:
        from ppgen.program.autoguide import program_guide_globals

        return program_guide_globals(data)

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> "ProgramSpec":  # type: ignore[override]
        spec = super().model_validate(obj, **kwargs)
        structure(spec)
        return spec


# --------------------------------------------------------------------------- the checked structure

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_RESERVED = set(expr.FUNCTIONS) | set(expr.CONSTANTS) | {"T", "x_data", "y_data"}


@dataclass
class SiteInfo:
    """A site after the structural checks: parameters as syntax trees (constants and inline parameters
    become references into :attr:`Structure.constants` and :attr:`Structure.params`)."""

    name: str
    part: Literal["model", "guide"]
    entry: Entry
    args: dict[str, expr.Node]
    options: dict[str, Any]
    shape: tuple[int, ...] | None
    is_global: bool
    observed: str | None
    enumerate: bool
    component: "SiteInfo | None" = None

    @property
    def where(self) -> str:
        return f"{self.part}.{self.name}"

    def refs(self) -> list[expr.Ref]:
        out = [r for node in self.args.values() for r in expr.references(node)]
        return out

    @property
    def discrete(self) -> bool:
        return self.entry.discrete


@dataclass
class Structure:
    model: dict[str, SiteInfo]
    guide: dict[str, SiteInfo] | None  # None for guide: auto / delta
    guide_kind: Literal["declared", "auto", "delta"]
    networks: dict[str, NetworkDecl]
    params: dict[str, ParamDecl]
    constants: dict[str, tuple[torch.Tensor, int]] = field(default_factory=dict)

    def site(self, name: str) -> SiteInfo:
        return self.model[name]


def structure(spec: ProgramSpec) -> Structure:
    """Check a program's structure and return it parsed; a :class:`SpecError` naming the site."""
    consts: dict[str, tuple[torch.Tensor, int]] = {}
    params: dict[str, ParamDecl] = dict(spec.params)
    if not spec.model:
        raise SpecError("model: a program needs at least one site")
    names: dict[str, str] = {}
    for group, keys in (("networks", spec.networks), ("params", spec.params), ("model", spec.model)):
        for key in keys:
            _check_name(key, f"{group}.{key}")
            if key in names:
                raise SpecError(f"{group}.{key}: the name {key!r} is already used in {names[key]}")
            names[key] = group
    model: dict[str, SiteInfo] = {}
    for name, decl in spec.model.items():
        model[name] = _site(name, "model", decl, consts, params)
    guide: dict[str, SiteInfo] | None = None
    if isinstance(spec.guide, dict):
        guide = {}
        for name, decl in spec.guide.items():
            where = f"guide.{name}"
            _check_name(name, where)
            if name not in model:
                raise SpecError(f"{where}: the model has no site {name!r}; a guide's sites are latent sites of the model")
            guide[name] = _site(name, "guide", decl, consts, params)
    kind = "declared" if guide is not None else spec.guide
    st = Structure(model, guide, kind, dict(spec.networks), params, consts)
    _check_model(st)
    _check_guide(st, spec)
    _check_networks(st)
    return st


def _check_name(name: str, where: str) -> None:
    if not _NAME.match(name) or keyword.iskeyword(name):
        raise SpecError(f"{where}: {name!r} is not a valid name (a letter, then letters, digits or _)")
    if name in _RESERVED:
        raise SpecError(f"{where}: {name!r} is reserved (a function or constant of the expression language)")
    if "__" in name:
        raise SpecError(f"{where}: {name!r} contains '__', which is reserved")


def _base_site(name: str, part: str, at: str, value: dict, consts: dict, params: dict) -> Any:
    """A flow's base distribution, read as a nested site of the program."""
    try:
        decl = SiteDecl.model_validate(value)
    except Exception as exc:  # pydantic's error, reworded
        raise SpecError(f"{at}: {exc}") from None
    return _site(name, part, decl, consts, params, nested=True)


def _site(name: str, part: Literal["model", "guide"], decl: SiteDecl, consts: dict, params: dict[str, ParamDecl],
          nested: bool = False) -> SiteInfo:
    where = f"{part}.{name}"
    if decl.dist not in TABLE or TABLE[decl.dist].internal:
        raise SpecError(f"{where}: unknown distribution {decl.dist!r}; accepted: {', '.join(public_names())}")
    entry = TABLE[decl.dist]
    extras = dict(decl.model_extra or {})
    args: dict[str, expr.Node] = {}
    options: dict[str, Any] = {}
    component: SiteInfo | None = None
    for key, value in extras.items():
        at = f"{where}.{key}"
        if key in entry.options:
            if key == "component":
                if entry.name != "MixtureSameFamily":
                    raise SpecError(f"{at}: only MixtureSameFamily takes a component")
                component = _component(name, part, value, consts, params)
                continue
            if entry.name == flows.FLOW:
                flows.parse_key(name, part, at, key, value, options, consts, params,
                                site=lambda base: _base_site(name, part, at, base, consts, params))
                continue
            options[key] = _option(at, key, value)
            continue
        if key not in entry.params:
            accepted = entry.describe_params()
            opts = f" and the options {', '.join(entry.options)}" if entry.options else ""
            raise SpecError(f"{at}: {entry.name} takes no parameter {key!r}; it takes {accepted}{opts}")
        args[key] = _arg(at, f"{name}__{key}" if not nested else f"{name}__component__{key}", value, consts, params)
    if entry.name == flows.FLOW:
        flows.finish(where, decl, options, args, part)
    if decl.dequantize is not None:
        options["dequantize"] = dequantize.check(where, decl.dequantize, entry, part, decl.observed)
    for key, value in entry.defaults.items():
        if key not in args:
            args[key] = _const(value, consts)
    missing = [p for p in entry.required if p not in args]
    if missing:
        raise SpecError(f"{where}: {entry.name} needs {', '.join(missing)} (it takes {entry.describe_params()})")
    if entry.one_of:
        given = [p for p in entry.one_of if p in args]
        if len(given) != 1:
            got = "neither" if not given else "both"
            raise SpecError(f"{where}: {entry.name} takes exactly one of {' or '.join(entry.one_of)}, got {got}")
    if entry.name == "MixtureSameFamily":
        if component is None:
            raise SpecError(f"{where}: MixtureSameFamily needs a component, e.g. component: {{dist: Normal, loc: m, scale: s}}")
        for k, v in component.args.items():
            args[f"component.{k}"] = v
    if decl.shape is not None and any(s < 1 for s in decl.shape):
        raise SpecError(f"{where}.shape: every size must be at least 1, got {decl.shape}")
    if decl.enumerate and not entry.enumerable:
        what = "a continuous" if not entry.discrete else "an infinite"
        raise SpecError(f"{where}.enumerate: {entry.name} has {what} support and cannot be enumerated; "
                        "enumerate applies to Bernoulli, Categorical and OneHotCategorical sites")
    if part == "guide" and (decl.observed or decl.global_):
        key = "observed" if decl.observed else "global"
        raise SpecError(f"{where}.{key}: set {key} on the model's site; a guide site follows it")
    return SiteInfo(name, part, entry, args, options, tuple(decl.shape) if decl.shape is not None else None,
                    decl.global_, decl.observed, decl.enumerate == "parallel", component)


def _component(name: str, part: Literal["model", "guide"], value: Any, consts: dict, params: dict) -> SiteInfo:
    where = f"{part}.{name}.component"
    if not isinstance(value, dict):
        raise SpecError(f"{where}: expected a distribution, e.g. {{dist: Normal, loc: m, scale: s}}, got {value!r}")
    bad = sorted(set(value) & {"shape", "observed", "global", "enumerate", "component"})
    if bad:
        raise SpecError(f"{where}.{bad[0]}: a component takes its distribution and parameters only")
    if "dist" not in value:
        raise SpecError(f"{where}: needs dist")
    if value["dist"] == flows.FLOW:
        raise SpecError(f"{where}.dist: a TransformedDistribution cannot be a mixture component; declare the flow as the site")
    if value["dist"] in ("MixtureSameFamily", "Delta") or (value["dist"] in TABLE and TABLE[value["dist"]].enumerable):
        raise SpecError(f"{where}.dist: {value['dist']!r} cannot be a mixture component; use a continuous "
                        "distribution or Bernoulli-free ones such as Normal, Laplace, StudentT")
    try:
        decl = SiteDecl.model_validate(value)
    except Exception as exc:  # pydantic's error, reworded
        raise SpecError(f"{where}: {exc}") from None
    return _site(name, part, decl, consts, params, nested=True)


def _option(at: str, key: str, value: Any) -> Any:
    if key in ("classes", "levels", "components"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SpecError(f"{at}: must be a positive whole number, got {value!r}")
        if key == "levels" and value < 2:
            raise SpecError(f"{at}: at least 2 levels, got {value}")
        return int(value)
    if key == "scale":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise SpecError(f"{at}: must be a positive number, got {value!r}")
        return float(value)
    raise SpecError(f"{at}: unknown option")


def _const(value: Any, consts: dict) -> expr.Ref:
    t = torch.as_tensor(value, dtype=torch.get_default_dtype())
    name = f"#c{len(consts)}"
    consts[name] = (t, t.dim())
    return expr.Ref(name)


def _arg(at: str, inline_name: str, value: Any, consts: dict, params: dict[str, ParamDecl]) -> expr.Node:
    if isinstance(value, bool):
        raise SpecError(f"{at}: expected a number, a list of numbers, an expression or {{param: ...}}, got {value!r}")
    if isinstance(value, (int, float)):
        return _const(float(value), consts)
    if isinstance(value, list):
        try:
            t = torch.as_tensor(value, dtype=torch.get_default_dtype())
        except (TypeError, ValueError, RuntimeError):
            raise SpecError(f"{at}: a list must hold numbers in a regular nested shape, got {value!r}") from None
        return _const(t, consts)
    if isinstance(value, str):
        return expr.parse(value, at)
    if isinstance(value, dict):
        if "param" not in value:
            raise SpecError(f"{at}: a mapping here is a learnable parameter {{param: INIT, constraint: ..., shape: [...]}}; "
                            f"got keys {sorted(value)}")
        body = {k: v for k, v in value.items() if k != "param"}
        body["init"] = value["param"]
        try:
            decl = ParamDecl.model_validate(body)
        except Exception as exc:
            raise SpecError(f"{at}: {exc}") from None
        params[inline_name] = decl
        return expr.Ref(inline_name)
    raise SpecError(f"{at}: expected a number, a list of numbers, an expression or {{param: ...}}, got {value!r}")


def _describe_name(st: Structure, name: str) -> str:
    if name in st.networks:
        return "a network"
    if name in st.params:
        return "a parameter"
    return "a site"


def _check_refs(st: Structure, s: SiteInfo, visible: set[str], later: set[str], part_desc: str) -> None:
    for key, node in s.args.items():
        at = f"{s.where}.{key}"
        for ref in expr.references(node):
            name = ref.name
            if name.startswith("#") or (ref.head is None and name in expr.CONSTANTS):
                continue
            if name in st.params:
                if ref.head is not None:
                    raise SpecError(f"{at}: {name} is a parameter; it has no .{ref.head}")
                continue
            if name in st.networks:
                continue
            if name == s.name:
                raise SpecError(f"{at}: {s.name} refers to itself; a site's parameters use earlier sites")
            if name in visible:
                if ref.head is not None:
                    raise SpecError(f"{at}: {name} is a site; it has no .{ref.head} (heads belong to networks)")
                continue
            if name in later:
                raise SpecError(f"{at}: {name!r} is defined after {s.name} in the {part_desc}; a site's parents come before it")
            raise SpecError(f"{at}: {name!r} is not a site, parameter or network of this program")


def _check_model(st: Structure) -> None:
    order = list(st.model)
    fields: dict[str, str] = {}
    for i, name in enumerate(order):
        s = st.model[name]
        _check_refs(st, s, set(order[:i]), set(order[i + 1:]), "model")
        if s.observed:
            if s.observed in fields:
                raise SpecError(f"{s.where}.observed: the data field {s.observed} is already bound to {fields[s.observed]}")
            fields[s.observed] = name
            if s.is_global:
                raise SpecError(f"{s.where}: an observed site is one value per example; it cannot be global")
            if s.enumerate and s.observed == "x":
                raise SpecError(f"{s.where}.enumerate: x is always observed; nothing to enumerate")
            if s.observed == "y" and s.entry.name not in ("Categorical", "OneHotCategorical"):
                raise SpecError(f"{s.where}: the labels y are classes; observe them with Categorical or OneHotCategorical, "
                                f"not {s.entry.name}")
        if s.is_global:
            for ref in s.refs():
                other = st.model.get(ref.name)
                if other is not None and not other.is_global:
                    raise SpecError(f"{s.where}: a global site cannot depend on the local site {ref.name!r} "
                                    "(one value for all examples cannot depend on one example's)")
                if ref.name in st.networks:
                    raise SpecError(f"{s.where}: a global site cannot use the network {ref.name!r}")
            if s.discrete and not s.observed:
                raise SpecError(f"{s.where}: a global discrete latent is not supported; make it local or continuous")
    if "x" not in fields:
        raise SpecError("model: no site is observed: x; bind the data with observed: x on the likelihood's site")


def _check_guide(st: Structure, spec: ProgramSpec) -> None:
    guide = st.guide
    for name, s in st.model.items():
        latent = not s.observed and s.entry.name != "Delta"
        in_guide = guide is not None and name in guide
        if s.observed == "x" and in_guide:
            raise SpecError(f"guide.{name}: {name} is observed (the data x); the guide has no site for it")
        if s.discrete and not s.observed and not s.is_global:
            if not s.entry.enumerable:
                raise SpecError(f"{s.where}: {s.entry.name} is discrete with infinite support: it cannot be a latent "
                                "(enumerated) site; observe it or choose an enumerable distribution")
            if s.enumerate and in_guide:
                raise SpecError(f"{s.where}: enumerated in the model and declared in the guide; choose one")
            if not s.enumerate and not in_guide:
                raise SpecError(f"{s.where}: a discrete latent site needs enumerate: parallel (summed out in the model) "
                                f"or a site {name} in the guide (summed out under q)")
        if s.entry.name == "Delta" and in_guide:
            raise SpecError(f"guide.{name}: {name} is a Delta (deterministic) site of the model; it needs no guide")
        if latent and not s.discrete and guide is not None and not in_guide and not s.is_global:
            raise SpecError(f"guide: no site for the latent {name!r}; declare it in the guide or use guide: auto")
        if s.enumerate and s.observed == "y" and in_guide:
            raise SpecError(f"{s.where}: enumerated in the model and declared in the guide; choose one")
    if guide is None:
        return
    order = list(guide)
    model_order = list(st.model)
    for i, name in enumerate(order):
        g = guide[name]
        m = st.model[name]
        # the guide sees: earlier guide sites, and observed model sites (the data)
        visible = set(order[:i]) | {n for n, s in st.model.items() if s.observed and n not in order[i:]}
        later = set(order[i + 1:]) | (set(model_order) - visible - {name})
        _check_refs(st, g, visible, later, "guide")
        g.is_global = m.is_global
        if g.discrete and not g.entry.enumerable:
            raise SpecError(f"{g.where}: {g.entry.name} cannot be a guide site (a discrete guide site is summed out, "
                            "so it needs finite support: Bernoulli, Categorical, OneHotCategorical)")
        if g.discrete != m.discrete:
            raise SpecError(f"{g.where}: the guide's {g.entry.name} is {'discrete' if g.discrete else 'continuous'} but "
                            f"the model's {m.entry.name} is not")
        if g.entry.name in ("MixtureSameFamily", "PixelCategorical", "Uniform"):
            raise SpecError(f"{g.where}: {g.entry.name} cannot be a guide distribution (no reparameterized sampler); "
                            "use Normal, LogNormal, Laplace, StudentT, Gamma, Beta, Dirichlet or Delta")
        if m.is_global:
            for ref in g.refs():
                if ref.name in st.networks or (ref.name in st.model and not st.model[ref.name].is_global):
                    raise SpecError(f"{g.where}: the guide of a global site cannot depend on the data or local sites")
        if m.observed == "x":
            raise SpecError(f"{g.where}: {name} is observed")


def _check_networks(st: Structure) -> None:
    used: dict[str, set[str]] = {n: set() for n in st.networks}
    whole: dict[str, list[str]] = {n: [] for n in st.networks}
    parts = [("model", st.model)] + ([("guide", st.guide)] if st.guide else [])
    for part, sites in parts:
        for s in sites.values():
            for key, node in s.args.items():
                for ref in expr.references(node):
                    if ref.name in st.networks:
                        (used[ref.name].add(ref.head) if ref.head else whole[ref.name].append(f"{s.where}.{key}"))
    for name, decl in st.networks.items():
        at = f"networks.{name}"
        if used[name] and whole[name]:
            raise SpecError(f"{whole[name][0]}: uses the whole output of {name}, which other sites use by head "
                            f"({', '.join(sorted(used[name]))}); use heads everywhere ({name}.HEAD)")
        if not used[name] and not whole[name]:
            raise SpecError(f"{at}: declared but used by no site")
        for inp in decl.inputs:
            if inp in st.networks or inp in st.params:
                raise SpecError(f"{at}.inputs: {inp!r} is {_describe_name(st, inp)}, not a site; a network reads sites")
            if inp not in st.model:
                raise SpecError(f"{at}.inputs: {inp!r} is not a site of the model")
        if decl.outputs is not None:
            for head, shape in decl.outputs.items():
                if any(d < 1 for d in shape):
                    raise SpecError(f"{at}.outputs.{head}: sizes must be at least 1, got {shape}")
            for head in used[name]:
                if head not in decl.outputs:
                    raise SpecError(f"{at}.outputs: no head {head!r}, which a site uses ({name}.{head}); declared heads: "
                                    f"{', '.join(decl.outputs)}")
    # A network used by a site must read only what that site may see: earlier sites of its part.
    for part, sites in parts:
        order = list(sites)
        for i, name in enumerate(order):
            s = sites[name]
            if part == "model":
                visible = set(order[:i])
            else:
                visible = set(order[:i]) | {n for n, m in st.model.items() if m.observed and n not in order[i:]}
            for key, node in s.args.items():
                for ref in expr.references(node):
                    if ref.name not in st.networks:
                        continue
                    for inp in st.networks[ref.name].inputs:
                        if inp == name:
                            raise SpecError(f"{s.where}.{key}: the network {ref.name} reads {name} itself, and {name} "
                                            "depends on it: a cycle")
                        if inp not in visible:
                            why = ("defined after it" if inp in order[i + 1:] else
                                   "not in the guide before it (the guide sees the data and its own earlier sites)"
                                   if part == "guide" else "defined after it")
                            raise SpecError(f"{s.where}.{key}: the network {ref.name} reads {inp!r}, which is {why}")

