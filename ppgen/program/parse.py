"""A program's declarations read into its structure: each site's distribution, its parameters as syntax
trees (constants and inline learnable parameters set aside as references), its options
(:class:`SiteInfo`), and the whole program's (:class:`Structure`). Every error names the site and key.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from ppgen.program import dequantize, expr, flows
from ppgen.program.decls import NetworkDecl, ParamDecl, SiteDecl
from ppgen.program.dists import TABLE, Entry, public_names
from ppgen.spec import SpecError


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


def check_name(name: str, where: str) -> None:
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
    return parse_site(name, part, decl, consts, params, nested=True)


def parse_site(name: str, part: Literal["model", "guide"], decl: SiteDecl, consts: dict, params: dict[str, ParamDecl],
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
    return parse_site(name, part, decl, consts, params, nested=True)


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
