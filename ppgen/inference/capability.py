"""What a routine requires of a family, declared as ``typing.Protocol`` classes and checked before a fit.

Each routine names the protocols it needs (:meth:`ppgen.inference.base.Routine.requirements`, which may
depend on its recipe: ``enum_svi`` with ``fused: true`` also needs the closed-form objective). A family
meets a protocol by providing every member it declares:

- a method, with a signature that takes the arguments the protocol's method does (keyword-only ones by
  name), so ``model(x, y, n_total=n)`` fails here rather than halfway through a step;
- a data member (``generator: nn.Module``), as an attribute or a class-level annotation of the family
  (modules built in ``__init__`` are declared by annotation, which is what lets a family be checked
  before it is built);
- a ``ClassVar`` flag, set to a true value on the family: a promise about meaning that no signature
  shows, such as "the guide is a variational posterior of the model's latent sites".

:func:`missing` lists what a family lacks, as the protocol declares it; :func:`check_fit` turns that
into the message of a :class:`~ppgen.spec.SpecError` naming the routine, the family, what is missing
and the zoo recipes that do fit the family, by the names ``--inference`` takes. The loop calls it before anything is
written, and each routine's ``init`` checks the built model the same way.
"""

from __future__ import annotations

import inspect
import re
import typing
from pathlib import Path
from typing import Any, ClassVar, Iterable, Protocol

from ppgen import registry, zoo
from ppgen.inference.base import Routine
from ppgen.registry import load_recipe
from ppgen.spec import SpecError


def members(protocol: type) -> dict[str, Any]:
    """The members a protocol declares (its own and those of the protocols it extends), in order:
    name -> the function, property, or annotation."""
    out: dict[str, Any] = {}
    for cls in reversed(protocol.__mro__):
        if cls in (object, Protocol, typing.Generic) or not getattr(cls, "_is_protocol", False):
            continue
        for name, ann in cls.__dict__.get("__annotations__", {}).items():
            out[name] = ann
        for name, value in cls.__dict__.items():
            if not name.startswith("_") and (inspect.isfunction(value) or isinstance(value, property)):
                out[name] = value
    return out


def _is_classvar(ann: Any) -> bool:
    if isinstance(ann, str):
        return ann.startswith(("ClassVar", "typing.ClassVar"))
    return typing.get_origin(ann) is ClassVar


def _annotated(cls: type, name: str) -> bool:
    return any(name in k.__dict__.get("__annotations__", {}) for k in cls.__mro__)


def _signature_gap(theirs: Any, ours: Any) -> str | None:
    """Why ``theirs`` cannot be called the way the protocol method ``ours`` is, or None."""
    try:
        sig = inspect.signature(theirs)
        want = inspect.signature(ours)
    except (TypeError, ValueError):
        return None
    params = list(sig.parameters.values())
    kinds = {p.kind for p in params}
    var_kw = inspect.Parameter.VAR_KEYWORD in kinds
    var_pos = inspect.Parameter.VAR_POSITIONAL in kinds
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    wanted = list(want.parameters.values())
    n_pos = sum(1 for p in wanted if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
    if n_pos > len(positional) and not var_pos:
        return f"takes {len(positional) - 1} positional arguments, the routine passes {n_pos - 1}"
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    for p in wanted:
        if p.kind == p.KEYWORD_ONLY and p.name not in names and not var_kw:
            return f"takes no {p.name}= argument"
    return None


def _show(name: str, decl: Any) -> str:
    if inspect.isfunction(decl):
        sig = str(inspect.signature(decl)).replace("(self, ", "(").replace("(self)", "()")
        doc = (inspect.getdoc(decl) or "").split("\n")[0]
        return f"{name}{_plain(sig)}" + (f": {doc}" if doc else "")
    if isinstance(decl, property):
        doc = (inspect.getdoc(decl) or "").split("\n")[0]
        return f"{name} (a property)" + (f": {doc}" if doc else "")
    if _is_classvar(decl):
        return f"{name} = True"
    return f"{name} (an attribute, declared on the class)"


def _plain(sig: str) -> str:
    # "(x: 'torch.Tensor', y: 'torch.Tensor | None' = None) -> 'Any'" -> "(x, y=None)"
    sig = re.sub(r" -> .*$", "", sig)
    sig = re.sub(r": '[^']*'", "", sig)
    sig = re.sub(r": [A-Za-z_][\w\.\[\], |]*?(?=( = |,|\)))", "", sig)
    return sig.replace(" = ", "=")


def missing(family: Any, protocol: type) -> list[str]:
    """What ``family`` (a class, or a built model) lacks of ``protocol``, one entry per member."""
    cls = family if isinstance(family, type) else type(family)
    out: list[str] = []
    for name, decl in members(protocol).items():
        shown = _show(name, decl)
        if _is_classvar(decl):
            if not getattr(cls, name, False):
                out.append(shown)
        elif inspect.isfunction(decl):
            theirs = getattr(cls, name, None)
            if not callable(theirs):
                out.append(shown)
            else:
                gap = _signature_gap(theirs, decl)
                if gap:
                    out.append(f"{shown} (its {name}() {gap})")
        elif isinstance(decl, property):
            if not hasattr(cls, name):
                out.append(shown)
        else:  # a data member: on the instance, or declared on the class
            present = hasattr(family, name) if not isinstance(family, type) else (
                hasattr(cls, name) or _annotated(cls, name))
            if not present:
                out.append(shown)
    return out


def family_label(family: Any) -> str:
    """The registered name of a family (a class or a built model), else its class name."""
    cls = family if isinstance(family, type) else type(family)
    return getattr(cls, "family_name", cls.__name__)


def summary(protocol: type) -> str:
    """The first paragraph of a protocol's docstring, as a phrase: what it stands for."""
    text = " ".join((inspect.getdoc(protocol) or protocol.__name__).split("\n\n")[0].split()).rstrip(".")
    return text[:1].lower() + text[1:]


def requirements(config: Any) -> tuple[type, ...]:
    """The protocols the routine of the recipe ``config`` requires."""
    return tuple(registry.routine(config.routine)(config).requirements())


def lacks(family: Any, config: Any, protocols: Iterable[type] | None = None) -> list[tuple[type, list[str]]]:
    """Each protocol that the routine of ``config`` requires (or of ``protocols``) and ``family`` does
    not meet, with the members it lacks."""
    out = []
    for protocol in requirements(config) if protocols is None else protocols:
        gap = missing(family, protocol)
        if gap:
            out.append((protocol, gap))
    return out


def fitting_recipes(family: type, folder: Path | None) -> list[Path]:
    """The zoo recipes in ``folder`` (``inference/*.yaml``) whose routine can fit ``family``."""
    out = []
    for path in sorted(folder.glob("*.yaml")) if folder else []:
        try:
            config = load_recipe(path)
        except SpecError:
            continue
        if not lacks(family, config):
            out.append(path)
    return out


def check_fit(family: Any, config: Any, protocols: Iterable[type] | None = None, recipes: Path | None = None) -> None:
    """Raise a :class:`~ppgen.spec.SpecError` unless the routine of ``config`` can fit ``family`` (a
    family class, or a built model): the message names the routine, the family, what is missing, and
    the recipes in ``recipes`` (the zoo's by default, by name) that fit it. ``protocols``
    are the routine's requirements when the caller has them at hand."""
    gaps = lacks(family, config, protocols)
    if not gaps:
        return
    cls = family if isinstance(family, type) else type(family)
    name = family_label(cls)
    lines = [f"routine {config.routine!r} cannot fit the {name!r} family:"]
    for protocol, gap in gaps:
        lines.append(f"  it needs {summary(protocol)} ({protocol.__name__}); {name} lacks:")
        lines += [f"    {item}" for item in gap]
    folder = recipes if recipes is not None else registry.repo_folder("inference")
    fits = fitting_recipes(cls, folder)
    default = getattr(cls, "default_routine", None)
    if fits:
        lines.append(f"  {_recipes_line(name, fits, folder)}")
    if default:
        lines.append(f"  {name}'s default routine is {default!r}: leave out --inference to use it")
    raise SpecError("\n".join(lines))


def _recipes_line(name: str, fits: list[Path], folder: Path | None) -> str:
    """The recipes that fit, named as ``--inference`` takes them: zoo recipes by name (an installed ppgen
    has no ``inference/`` folder to point at), any other folder's by path."""
    home = zoo.folder("inference")
    if folder is not None and home is not None and folder.resolve() == home.resolve():
        return f"zoo recipes that fit {name} (--inference NAME): {', '.join(p.stem for p in fits)}"
    return f"recipes in {folder} that fit {name}: {', '.join(str(p) for p in fits)}"


def require(routine: Routine, model: Any) -> None:
    """At a routine's ``init``: the built model meets the routine's :meth:`~ppgen.inference.base.Routine.
    requirements`, else a SpecError that says what is missing and which recipes fit the family."""
    check_fit(model, routine.config, routine.requirements())
