"""Declarative specs: what to fit (a model spec) and how to fit it (an inference recipe).

Both are strict pydantic models read from YAML or built in Python. Every family registers its own
subclass of :class:`ModelSpec` and every routine its own subclass of :class:`InferenceSpec`, so each
validates its own section. An unknown key, a wrong type or an impossible value raises
:class:`SpecError`, whose message names the key, what it got and what it accepts.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class SpecError(ValueError):
    """Bad user input (a spec, a recipe, an override, a data file): the CLI exits with status 2."""


class Strict(BaseModel):
    """A config section that refuses unknown keys and re-validates on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class DataSpec(Strict):
    """Where the data come from and how they are presented to a model.

    ``name`` is one of ``mnist``, ``digits`` (scikit-learn's 8x8 digits), ``toy1d``, ``toy2d``,
    ``npz`` (a user's ``.npz`` with an ``x`` array and optional ``y``) or ``images`` (a folder of image
    files, optionally one sub-folder per class); for mixtures and HMMs also ``toymix`` (Gaussian
    mixtures with known parameters), ``toyseq`` (HMM sequences with known parameters) and ``macro`` (US
    quarterly series bundled with statsmodels), see :mod:`ppgen.data.mixtures` and
    :mod:`ppgen.data.sequences`.
    """

    name: Literal["mnist", "digits", "toy1d", "toy2d", "npz", "images", "toyseq", "macro", "toymix"] = "mnist"
    path: str | None = Field(None, description="file or folder for npz/images")
    distribution: str | None = Field(None, description="toy distribution name")
    n: int | None = Field(None, ge=2, description="number of toy examples")
    binarize: Literal["dynamic", "static", "none"] | None = Field(
        None, description="dynamic: Bernoulli resampling each epoch; static: once; none: intensities"
    )
    batch_size: int = Field(128, ge=1)
    limit: int | None = Field(None, ge=1, description="use only the first N training examples")
    val_fraction: float = Field(0.1, gt=0, lt=0.5)
    test_fraction: float = Field(0.1, gt=0, lt=0.5)
    image_size: int | None = Field(None, ge=2, le=256, description="resize folder images to this side")

    @model_validator(mode="after")
    def _check_source(self) -> "DataSpec":
        # A key left at its default is harmless (a resolved spec.yaml writes them all); one set to
        # something else would be silently ignored by this source.
        unused = sorted(k for k in self.model_fields_set - _DATA_FIELDS[self.name]
                        if getattr(self, k) != type(self).model_fields[k].get_default(call_default_factory=True))
        if unused:
            raise ValueError(
                f"data.{unused[0]} does not apply to data.name {self.name!r}; the keys it takes are "
                f"{', '.join(sorted(_DATA_FIELDS[self.name]))}"
            )
        if self.name in ("npz", "images") and not self.path:
            raise ValueError(f"data.path is required when data.name is {self.name!r}")
        if self.name in ("toy1d", "toy2d") and self.binarize not in (None, "none"):
            raise ValueError(f"data.binarize applies to images in [0, 1], not to {self.name!r}")
        return self


_COMMON = {"name", "batch_size", "limit", "binarize"}
_SPLIT = {"val_fraction", "test_fraction"}
_GENERATED = _COMMON | _SPLIT | {"distribution", "n"}
#: The data keys each source reads; setting another is an error (MNIST's split is fixed, for one).
_DATA_FIELDS: dict[str, set[str]] = {
    "mnist": _COMMON,
    "digits": _COMMON | _SPLIT,
    "npz": _COMMON | _SPLIT | {"path"},
    "images": _COMMON | _SPLIT | {"path", "image_size"},
    "toy1d": _GENERATED,
    "toy2d": _GENERATED,
    "toymix": _GENERATED,
    "toyseq": _GENERATED,
    "macro": _COMMON | _SPLIT | {"distribution"},
}


class ModelSpec(Strict):
    """Fields shared by every family's spec; each family subclasses it and adds its own sections."""

    family: str
    name: str | None = None
    description: str | None = None
    data: DataSpec = Field(default_factory=DataSpec)


class OptimizerSpec(Strict):
    name: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    lr: float = Field(1e-3, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    clip_norm: float | None = Field(None, gt=0, description="clip the global gradient norm")


class InferenceSpec(Strict):
    """Fields shared by every routine's recipe; each routine subclasses it."""

    routine: str
    name: str | None = None
    description: str | None = None
    epochs: int = Field(10, ge=1)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    log_every: int = Field(10, ge=1, description="steps between train records in metrics.jsonl")
    snapshots: list[int] = Field(
        default_factory=list, description="epochs after which to keep a copy of the weights (checkpoints/epoch-NNNN.pt)"
    )


# --------------------------------------------------------------------------- reading and errors


def read_yaml(source: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a syntax error names the file and line."""
    path = Path(source)
    if not path.exists():
        raise SpecError(f"{path}: no such file")
    if not path.is_file():
        raise SpecError(f"{path}: is a folder, not a YAML file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot be read as UTF-8 text ({exc})") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise SpecError(f"{path}: YAML syntax error at {where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: YAML error: {exc}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping of keys to values, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a nested dict, in place."""
    for item in overrides or []:
        if "=" not in item:
            raise SpecError(f"--set {item!r}: expected KEY=VALUE, for example latent.dim=2")
        key, raw = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise SpecError(f"--set {item!r}: the key is empty")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise SpecError(f"--set {item!r}: the value is not valid YAML") from None
        node = data
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise SpecError(f"--set {item!r}: {where} is a value ({child!r}), not a section")
            node = child
        node[parts[-1]] = value
    return data


def format_validation_error(exc: ValidationError, what: str, cls: type[BaseModel]) -> str:
    """One line per problem: the dotted key, what it got and what it accepts."""
    fields = _fields_by_path(cls)
    lines = [f"{what} is invalid:"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        kind = err["type"]
        if kind == "extra_forbidden":
            parent = fields.get(tuple(err["loc"][:-1]), [])
            accepts = f"; accepted keys here: {', '.join(parent)}" if parent else ""
            lines.append(f"  {loc}: unknown key{accepts}")
        elif kind == "missing":
            lines.append(f"  {loc}: required but missing")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"  {loc}: {msg} (got {err.get('input')!r})")
    return "\n".join(lines)


def _fields_by_path(cls: type[BaseModel], prefix: tuple = ()) -> dict[tuple, list[str]]:
    out: dict[tuple, list[str]] = {prefix: list(cls.model_fields)}
    for name, field in cls.model_fields.items():
        ann = field.annotation
        for sub in getattr(ann, "__args__", (ann,)):
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                out.update(_fields_by_path(sub, prefix + (name,)))
    return out


def validate(cls: type[BaseModel], data: dict[str, Any], what: str) -> Any:
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc, what, cls)) from None


def _as_dict(source: str | Path | dict | BaseModel) -> tuple[dict[str, Any], str]:
    if isinstance(source, BaseModel):
        return source.model_dump(mode="json"), type(source).__name__
    if isinstance(source, dict):
        return copy.deepcopy(source), "spec"
    return read_yaml(source), str(source)


def load_spec(source: str | Path | dict | ModelSpec, overrides: list[str] | None = None) -> ModelSpec:
    """A model spec from a YAML file, a dict or a spec, with ``--set`` style overrides applied."""
    from ppgen import registry

    data, what = _as_dict(source)
    apply_overrides(data, overrides)
    family = data.get("family")
    if not isinstance(family, str):
        got = "'family' is missing" if family is None else f"family must be a name, got {family!r}"
        raise SpecError(f"{what}: {got}; accepted families: {', '.join(registry.family_names())}")
    cls = registry.family(family).Spec
    return validate(cls, data, what)


def load_recipe(
    source: str | Path | dict | InferenceSpec | None, overrides: list[str] | None = None, *, default: str = "svi"
) -> InferenceSpec:
    """An inference recipe from a YAML file, a dict or a recipe; ``None`` gives the routine's defaults."""
    from ppgen import registry

    data, what = _as_dict(source) if source is not None else ({"routine": default}, "recipe")
    apply_overrides(data, overrides)
    routine = data.get("routine")
    if not isinstance(routine, str):
        got = "'routine' is missing" if routine is None else f"routine must be a name, got {routine!r}"
        raise SpecError(f"{what}: {got}; accepted routines: {', '.join(registry.routine_names())}")
    cls = registry.routine(routine).Config
    return validate(cls, data, what)


def dump_yaml(spec: BaseModel, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
