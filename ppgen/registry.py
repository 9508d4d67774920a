"""Family and routine registries.

A family module in ``ppgen/models/`` or one of its subpackages registers its class with
:func:`register_family`; a routine module in ``ppgen/inference/`` registers with :func:`register_routine`.
Both packages are imported, subpackages included, on the first lookup, so adding a file is all it takes
to add a family or a routine. An installed package adds families through the entry-point group
``ppgen.families``.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Callable, TypeVar

from ppgen import zoo
from ppgen.inference.base import Routine
from ppgen.models.base import Family
from ppgen import data as data_sets
from ppgen.data.core import DataInfo
from ppgen.overrides import apply_overrides, override_keys
from ppgen.spec import InferenceSpec, ModelSpec, SpecError, short, validate
from ppgen.spec_yaml import as_dict, zoo_file

F = TypeVar("F", bound=type[Family])
R = TypeVar("R", bound=type[Routine])
_FAMILIES: dict[str, type[Family]] = {}
_ROUTINES: dict[str, type[Routine]] = {}
_loaded = False


def register_family(name: str) -> Callable[[F], F]:
    """Class decorator: ``@register_family("vae")`` on a :class:`~ppgen.models.base.Family` subclass with
    a ``Spec`` attribute."""

    def deco(cls: F) -> F:
        if not (isinstance(cls, type) and issubclass(cls, Family)):
            raise TypeError(f"register_family({name!r}): {cls!r} is not a subclass of ppgen.models.base.Family")
        if name in _FAMILIES and _FAMILIES[name] is not cls:
            raise RuntimeError(f"family {name!r} is registered twice")
        cls.family_name = name  # type: ignore[attr-defined]
        _FAMILIES[name] = cls
        return cls

    return deco


def register_routine(name: str) -> Callable[[R], R]:
    """Class decorator: ``@register_routine("svi")`` on a :class:`~ppgen.inference.base.Routine` subclass
    with a ``Config`` attribute."""

    def deco(cls: R) -> R:
        if not (isinstance(cls, type) and issubclass(cls, Routine)):
            raise TypeError(f"register_routine({name!r}): {cls!r} is not a subclass of ppgen.inference.base.Routine")
        if name in _ROUTINES and _ROUTINES[name] is not cls:
            raise RuntimeError(f"routine {name!r} is registered twice")
        cls.routine_name = name  # type: ignore[attr-defined]
        _ROUTINES[name] = cls
        return cls

    return deco


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    for pkg_name in ("ppgen.models", "ppgen.inference"):
        pkg = importlib.import_module(pkg_name)
        # Every module of the package and of its subpackages (models/energy/, models/bayesian/, ...).
        for info in pkgutil.walk_packages(pkg.__path__, f"{pkg_name}."):
            if not any(part.startswith("_") for part in info.name.split(".")):
                importlib.import_module(info.name)
    _load_entry_points()
    # Only now: a module that failed to import raises again at the next lookup instead of leaving the
    # registry quietly incomplete.
    _loaded = True


def _load_entry_points() -> None:
    """Families of installed packages: entry points of the group ``ppgen.families``, each a class
    (registered under the entry point's name) or a module that registers its families on import."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="ppgen.families"):
        try:
            obj = ep.load()
        except Exception as exc:
            raise SpecError(f"family {ep.name!r} from the entry point {ep.value!r} (group ppgen.families) cannot be "
                            f"loaded: {type(exc).__name__}: {exc}") from None
        if isinstance(obj, type) and issubclass(obj, Family) and _FAMILIES.get(ep.name) is not obj:
            register_family(ep.name)(obj)


def family_names() -> list[str]:
    _load_all()
    return sorted(_FAMILIES)


def routine_names() -> list[str]:
    _load_all()
    return sorted(_ROUTINES)


def family(name: str) -> type[Family]:
    _load_all()
    if name not in _FAMILIES:
        raise SpecError(f"family: unknown family {short(name)}; accepted families: {', '.join(family_names())}")
    return _FAMILIES[name]


def routine(name: str) -> type[Routine]:
    _load_all()
    if name not in _ROUTINES:
        raise SpecError(f"routine: unknown routine {short(name)}; accepted routines: {', '.join(routine_names())}")
    return _ROUTINES[name]


def repo_folder(name: str) -> Path | None:
    """The zoo (``models``) or recipes (``inference``) folder: beside the package in a checkout, else the
    copy installed with the package (see :mod:`ppgen.zoo`)."""
    return zoo.folder(name)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- specs and models by name


def load_spec(source: str | Path | dict | ModelSpec, overrides: list[str] | None = None) -> ModelSpec:
    """A model spec from a YAML file, a dict or a spec, with ``--set`` style overrides applied."""
    data, what = as_dict(zoo_file(source, "models"))
    apply_overrides(data, overrides)
    name = data.get("family")
    if not isinstance(name, str):
        got = "'family' is missing" if name is None else f"family must be a name, got {short(name)}"
        raise SpecError(f"{what}: {got}; accepted families: {', '.join(family_names())}")
    cls = family(name).Spec
    return validate(cls, data, what, override_keys(overrides))


def load_recipe(
    source: str | Path | dict | InferenceSpec | None, overrides: list[str] | None = None, *, default: str = "svi"
) -> InferenceSpec:
    """An inference recipe from a YAML file, a dict or a recipe; ``None`` gives the routine's defaults."""
    data, what = as_dict(zoo_file(source, "inference")) if source is not None else ({"routine": default}, "recipe")
    apply_overrides(data, overrides, prefix="inference.")
    name = data.get("routine")
    if not isinstance(name, str):
        got = "'routine' is missing" if name is None else f"routine must be a name, got {short(name)}"
        raise SpecError(f"{what}: {got}; accepted routines: {', '.join(routine_names())}")
    cls = routine(name).Config
    return validate(cls, data, what, override_keys(overrides, "inference."))


def load_data(spec: ModelSpec) -> data_sets.Dataset:
    """The data set of a model spec, as its family takes it: ``spec.data`` loaded, then the family's
    ``data_view`` (a Gaussian mixture flattens images to vectors)."""
    return family(spec.family).data_view(data_sets.load(spec.data))


def build(spec: str | Path | dict | ModelSpec, info: DataInfo | None = None) -> Family:
    """The family module a spec describes, freshly initialised.

    ``info`` (event shape and kind of the data, size of the training split) is read from the spec's data
    set when not given.
    """
    spec = load_spec(spec)
    if info is None:
        info = load_data(spec).info
    cls = family(spec.family)
    try:
        return cls(spec, info)
    except ValueError as exc:
        raise SpecError(f"{spec.name or spec.family}: {exc}") from None
