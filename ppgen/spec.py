"""Declarative specs: what to fit (a model spec) and how to fit it (an inference recipe).

Both are strict pydantic models read from YAML or built in Python. Every family registers its own
subclass of :class:`ModelSpec` and every routine its own subclass of :class:`InferenceSpec`, so each
validates its own section. An unknown key, a wrong type or an impossible value raises
:class:`SpecError`, whose message names the key, what it got and what it accepts.

The rules on single values are :mod:`ppgen.spec_values`; reading YAML is :mod:`ppgen.spec_yaml`;
``--set KEY=VALUE`` is :mod:`ppgen.overrides`; :mod:`ppgen.registry` puts them together
(``load_spec``, ``load_recipe``).
"""

from __future__ import annotations

import reprlib
from typing import Annotated, Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo,
                      field_validator, model_validator)
from pydantic_core import PydanticCustomError

from ppgen.spec_values import (MAX_FLOAT, MIN_FLOAT, misplaced_bool, not_unicode, only_bool, outside_float32,
                               too_large)

#: Deepest nesting of sections and lists in a spec (the zoo's deepest is 3).
MAX_DEPTH = 32
#: Characters of an offending value quoted in a message, and problems listed in one message.
MAX_ECHO = 200
MAX_PROBLEMS = 20
#: Seeds run from 0 to this (numpy's legacy seeding takes 32 bits; per-epoch and per-rank seeds are
#: derived from the seed by multiplication and must stay within torch's 64 bits).
MAX_SEED = 2**32 - 1


class SpecError(ValueError):
    """Bad user input (a spec, a recipe, an override, a data file): the CLI exits with status 2."""


def check_seed(seed: Any, where: str = "--seed") -> int:
    """``seed`` if it is an integer from 0 to :data:`MAX_SEED`, else a SpecError naming ``where``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise SpecError(f"{where}: expected an integer from 0 to {MAX_SEED}, got {short(seed)}")
    return seed


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple, _REPR.maxset = 3, 6, 8, 8, 8
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = MAX_ECHO, MAX_ECHO, 40


def short(value: Any, limit: int = MAX_ECHO) -> str:
    """``repr(value)`` cut to about ``limit`` characters, cheap whatever the value's size: what a
    message quotes of a user's value."""
    if isinstance(value, dict):
        keys = ", ".join(str(k) for k in list(value)[:8]) + (", ..." if len(value) > 8 else "")
        text = f"a mapping with keys {keys}" if value else "an empty mapping"
    else:
        text = _REPR.repr(value)
    return cut(text, limit)


def cut(text: str, limit: int = MAX_ECHO) -> str:
    """``text`` cut to at most ``limit`` characters."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Strict(BaseModel):
    """A config section that refuses unknown keys and re-validates on assignment.

    Rules every section follows: numbers are finite (``.inf`` and ``.nan`` are refused; no spec key
    gives infinity a meaning) and within float32's range, in which the models compute; ``true``/``false``
    are accepted only where a key takes a boolean (YAML's ``dim: true`` is not the integer 1) and a
    boolean key takes nothing else (not 0, 1 or "yes"); integers fit in 64 bits; text is valid Unicode;
    and :meth:`model_copy` with ``update`` checks the result like any other spec.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(), allow_inf_nan=False)

    #: The section's dotted key in its spec (``encoder``), set when the whole spec is validated, so
    #: that code building from a section can name it in a message; see :func:`key_of`.
    _key: str = PrivateAttr("")

    @field_validator("*", mode="before")
    @classmethod
    def _strict_scalars(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if field is not None:
            what = misplaced_bool(value, field.annotation)
            if what:
                raise PydanticCustomError("bool_refused", "expected {what}, not a boolean", {"what": what})
            if only_bool(field.annotation) and value is not None and not isinstance(value, bool):
                raise PydanticCustomError("bool_expected", "expected true or false")
            if too_large(value):
                raise PydanticCustomError("int_too_large", "integers must lie within +-(2**63 - 1)")
            if not_unicode(value):
                raise PydanticCustomError("text_not_unicode", "text must be valid Unicode (it holds an unpaired surrogate)")
        return value

    @field_validator("*", mode="after")
    @classmethod
    def _float32_range(cls, value: Any) -> Any:
        if outside_float32(value):
            raise PydanticCustomError(  # pydantic fills {name} but not a format spec: the numbers are put in here
                "float_range", f"numbers must be 0 or of magnitude from {MIN_FLOAT:.3g} to {MAX_FLOAT:.3g} (float32's range)")
        return value

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> Any:
        copied = super().model_copy(update=update, deep=deep)
        if not update:
            return copied
        changes = ", ".join(f"{k}={short(v)}" for k, v in update.items())
        return validate(type(self), copied.model_dump(), f"{type(self).__name__} with {changes}")


def field_bounds(cls: type[BaseModel], name: str) -> tuple[Any, Any]:
    """The inclusive bounds (``ge``, ``le``) a section declares for a field; None where there is none."""
    lo = hi = None
    for m in cls.model_fields[name].metadata:
        lo = getattr(m, "ge", lo)
        hi = getattr(m, "le", hi)
    return lo, hi


def key_of(section: BaseModel, default: str = "") -> str:
    """The dotted key of a section within its spec (``encoder``, ``data``), or ``default`` when the
    section was not validated as part of a spec."""
    return getattr(section, "_key", "") or default


def _name_sections(section: BaseModel, prefix: str) -> None:
    for name in type(section).model_fields:
        value = getattr(section, name, None)
        children = value if isinstance(value, (list, tuple)) else [value]
        for i, child in enumerate(children):
            if isinstance(child, Strict):
                key = f"{prefix}{name}" + (f".{i}" if child is not value else "")
                child._key = key
                _name_sections(child, key + ".")




def changed(section: BaseModel, *names: str) -> list[str]:
    """Those of ``names`` that ``section`` sets to something other than their default (a resolved spec
    writes every default out, so being present is not enough): keys that may be an error to set."""
    fields = type(section).model_fields
    return [n for n in names if n in section.model_fields_set
            and getattr(section, n) != fields[n].get_default(call_default_factory=True)]




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
    n: int | None = Field(None, ge=2, le=10_000_000, description="number of toy examples")
    binarize: Literal["dynamic", "static", "none"] | None = Field(
        None, description="dynamic: Bernoulli resampling each epoch; static: once; none: intensities"
    )
    batch_size: int = Field(128, ge=1, le=1_000_000)
    limit: int | None = Field(None, ge=1, description="use only the first N training examples")
    val_fraction: float = Field(0.1, gt=0, lt=0.5)
    test_fraction: float = Field(0.1, gt=0, lt=0.5, description="share held out for testing (sequence data: 0.2)")
    image_size: int | None = Field(None, ge=2, le=256, description="resize folder images to this side")
    labels: int | None = Field(None, ge=1, le=10_000_000, description="keep the labels of only N training examples "
                               "(balanced over the classes) and hide the rest")
    labels_seed: int = Field(0, ge=0, le=2**31 - 1, description="chooses which training examples keep their labels")
    labelled_batch: int | None = Field(None, ge=1, le=1_000_000, description="labelled examples appended to each "
                                       "training batch (with data.labels)")
    labelled_only: bool = Field(False, description="with data.labels: train on the labelled examples alone")

    @model_validator(mode="before")
    @classmethod
    def _sequence_split(cls, data: Any) -> Any:
        # One example is one whole sequence, so the usual 10% leaves a test split of two macro windows
        # (25 in all): sequence sources hold out SEQUENCE_TEST_FRACTION unless told otherwise, and the
        # resolved spec.yaml records the fraction used.
        if isinstance(data, dict) and data.get("name") in SEQUENCE_SOURCES and "test_fraction" not in data:
            data = {**data, "test_fraction": SEQUENCE_TEST_FRACTION}
        return data

    @model_validator(mode="after")
    def _check_source(self) -> "DataSpec":
        # A key left at its default is harmless (a resolved spec.yaml writes them all); one set to
        # something else would be silently ignored by this source.
        unused = sorted(changed(self, *(self.model_fields_set - _DATA_FIELDS[self.name])))
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


#: Data sources whose examples are sequences, and the share of them held out for testing by default.
SEQUENCE_SOURCES = ("toyseq", "macro")
SEQUENCE_TEST_FRACTION = 0.2
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
#: Sources with labels take the few-labels keys (ppgen.data.labels).
for _name in ("mnist", "digits", "npz", "images"):
    _DATA_FIELDS[_name] = _DATA_FIELDS[_name] | {"labels", "labels_seed", "labelled_batch", "labelled_only"}


class ModelSpec(Strict):
    """Fields shared by every family's spec; each family subclasses it and adds its own sections."""

    family: str
    name: str | None = None
    description: str | None = None
    data: DataSpec = Field(default_factory=DataSpec)

    @model_validator(mode="after")
    def _name_own_sections(self) -> "ModelSpec":
        _name_sections(self, "")
        return self

    @model_validator(mode="after")
    def _check_hidden_labels(self) -> "ModelSpec":
        if self.data.labels is not None and not self.data.labelled_only and self.family != "program":
            raise ValueError(f"data.labels: hides training labels, which only programs (family: program) with a site "
                             f"observed: y can sum out; the {self.family} family reads every label")
        return self


Beta = Annotated[float, Field(ge=0, lt=1)]


class OptimizerSpec(Strict):
    """``betas`` apply to adam and adamw, ``momentum`` to sgd and rmsprop; setting one for an optimizer
    that does not read it is an error rather than silently nothing."""

    name: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    lr: float = Field(1e-3, gt=0)
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    clip_norm: float | None = Field(None, gt=0, description="clip the global gradient norm")

    @model_validator(mode="after")
    def _check_applies(self) -> "OptimizerSpec":
        adam = self.name in ("adam", "adamw")
        unused = next(iter(changed(self, "momentum" if adam else "betas")), None)
        if unused:
            takes = "betas (not momentum)" if adam else "momentum (not betas)"
            raise ValueError(f"optimizer.{unused} does not apply to optimizer.name {self.name!r}, which takes {takes}")
        return self


class InferenceSpec(Strict):
    """Fields shared by every routine's recipe; each routine subclasses it."""

    routine: str
    name: str | None = None
    description: str | None = None
    epochs: int = Field(10, ge=1)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    log_every: int = Field(10, ge=1, description="steps between train records in metrics.jsonl")
    snapshots: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=list, description="epochs after which to keep a copy of the weights (checkpoints/epoch-NNNN.pt)"
    )


def check_snapshots(recipe: InferenceSpec) -> None:
    """Every snapshot within the epochs of the fit. Checked when the fit starts, not when the recipe is
    read: a recipe's ``epochs`` is often replaced by ``--epochs``, and snapshots may be listed for that."""
    late = [e for e in recipe.snapshots if e > recipe.epochs]
    if late:
        raise SpecError(f"snapshots: epoch {late[0]} is after the last epoch of this fit ({recipe.epochs}, from --epochs "
                        "or the recipe's epochs), so it would never be taken; list epochs from 1 to the last")


# --------------------------------------------------------------------------- validation errors
def format_validation_error(exc: ValidationError, what: str, cls: type[BaseModel],
                            overrides: dict[tuple[str, ...], str] | None = None) -> str:
    """One line per problem: the dotted key, what it got and what it accepts, and the ``--set`` that
    put the value there when one did. At most :data:`MAX_PROBLEMS` lines; values are cut short."""
    fields = _fields_by_path(cls)
    overrides = overrides or {}
    lines: list[str] = []
    from_file = False
    errors = exc.errors()
    for err in errors[:MAX_PROBLEMS]:
        path = tuple(str(p) for p in err["loc"])
        loc = ".".join(path) or "(top level)"
        kind = err["type"]
        if kind == "extra_forbidden":
            parent = fields.get(tuple(err["loc"][:-1]), [])
            accepts = f"; accepted keys here: {', '.join(parent)}" if parent else ""
            line = f"  {cut(loc)}: unknown key{accepts}"
        elif kind == "missing":
            line = f"  {cut(loc)}: required but missing"
        else:
            msg = cut(err["msg"].removeprefix("Value error, "), 2 * MAX_ECHO)
            got = err.get("input")
            # A section-level problem (its input is the whole section) names its keys in the message.
            line = (f"  {cut(loc)}: " if path else "  ") + msg + ("" if isinstance(got, dict) else f" (got {short(got)})")
        sources = [v for k, v in overrides.items() if path[: len(k)] == k or (path and k[: len(path)] == path)]
        if sources:
            line += f", from {', '.join(sources)}"
        else:
            from_file = True
        lines.append(line)
    if len(errors) > MAX_PROBLEMS:
        lines.append(f"  ... and {len(errors) - MAX_PROBLEMS} more problems")
        from_file = True
    head = f"{what} is invalid:" if from_file or not overrides else "--set is invalid:"
    return "\n".join([head, *lines])


def _fields_by_path(cls: type[BaseModel], prefix: tuple = ()) -> dict[tuple, list[str]]:
    out: dict[tuple, list[str]] = {prefix: list(cls.model_fields)}
    for name, field in cls.model_fields.items():
        ann = field.annotation
        for sub in getattr(ann, "__args__", (ann,)):
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                out.update(_fields_by_path(sub, prefix + (name,)))
    return out


def validate(cls: type[BaseModel], data: dict[str, Any], what: str,
             overrides: dict[tuple[str, ...], str] | None = None) -> Any:
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc, what, cls, overrides)) from None
    except RecursionError:
        raise SpecError(f"{what}: nested too deeply (at most {MAX_DEPTH} levels)") from None
