"""Declarative specs: what to fit (a model spec) and how to fit it (an inference recipe).

Both are strict pydantic models read from YAML or built in Python. Every family registers its own
subclass of :class:`ModelSpec` and every routine its own subclass of :class:`InferenceSpec`, so each
validates its own section. An unknown key, a wrong type or an impossible value raises
:class:`SpecError`, whose message names the key, what it got and what it accepts.
"""

from __future__ import annotations

import copy
import reprlib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo,
                      field_validator, model_validator)
from pydantic_core import PydanticCustomError

from ppgen import zoo

#: A spec is a few kilobytes of settings; these bound what reading one may cost, whatever the file holds.
MAX_SPEC_BYTES = 1 << 20
#: Deepest nesting of sections and lists in a spec (the zoo's deepest is 3).
MAX_DEPTH = 32
#: Values in a spec once YAML aliases are expanded (an alias "bomb" expands exponentially).
MAX_VALUES = 100_000
#: Characters of an offending value quoted in a message, and problems listed in one message.
MAX_ECHO = 200
MAX_PROBLEMS = 20
#: The largest integer a spec may hold (torch and numpy take 64-bit integers).
MAX_INT = 2**63 - 1
#: The range of a number in a spec: the models compute in float32, where a larger magnitude is infinite
#: and a smaller non-zero one rounds to zero (float32's largest and smallest normal numbers).
MAX_FLOAT = 3.4028234663852886e38
MIN_FLOAT = 1.1754943508222875e-38
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
            what = _misplaced_bool(value, field.annotation)
            if what:
                raise PydanticCustomError("bool_refused", "expected {what}, not a boolean", {"what": what})
            if _only_bool(field.annotation) and value is not None and not isinstance(value, bool):
                raise PydanticCustomError("bool_expected", "expected true or false")
            if _too_large(value):
                raise PydanticCustomError("int_too_large", "integers must lie within +-(2**63 - 1)")
            if _not_unicode(value):
                raise PydanticCustomError("text_not_unicode", "text must be valid Unicode (it holds an unpaired surrogate)")
        return value

    @field_validator("*", mode="after")
    @classmethod
    def _float32_range(cls, value: Any) -> Any:
        if _outside_float32(value):
            raise PydanticCustomError(
                "float_range", "numbers must be 0 or of magnitude from {lo:.3g} to {hi:.3g} (float32's range)",
                {"lo": MIN_FLOAT, "hi": MAX_FLOAT})
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


def _args(ann: Any) -> tuple[Any, ...]:
    return typing.get_args(ann)


def _admits_bool(ann: Any) -> bool:
    """Whether a value of annotation ``ann`` may be a bool."""
    if ann is bool or ann is Any or ann is object:
        return True
    origin = typing.get_origin(ann)
    if origin is Literal:
        return any(isinstance(a, bool) for a in _args(ann))
    if origin is Annotated:
        return _admits_bool(_args(ann)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_admits_bool(a) for a in _args(ann))
    return False


def _only_bool(ann: Any) -> bool:
    """Whether ``ann`` is ``bool`` or ``bool | None`` (where 0, 1 or "yes" must not pass for a boolean)."""
    if ann is bool:
        return True
    origin = typing.get_origin(ann)
    if origin is Annotated:
        return _only_bool(_args(ann)[0])
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in _args(ann) if a is not type(None)]
        return len(rest) == 1 and _only_bool(rest[0])
    return False


def _expects(ann: Any) -> str:
    origin = typing.get_origin(ann)
    if origin is Annotated:
        return _expects(_args(ann)[0])
    if origin in (typing.Union, types.UnionType):
        kinds = [_expects(a) for a in _args(ann) if a is not type(None)]
        return " or ".join(dict.fromkeys(kinds))
    if ann is int:
        return "an integer"
    if ann is float:
        return "a number"
    if ann is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in _args(ann))
    return "a value of another kind"


def _element_annotations(ann: Any) -> list[Any]:
    """The annotations of the items of a list/tuple/set (or the values of a dict) that ``ann`` allows."""
    origin = typing.get_origin(ann)
    if origin is Annotated:
        return _element_annotations(_args(ann)[0])
    if origin in (typing.Union, types.UnionType):
        return [e for a in _args(ann) for e in _element_annotations(a)]
    if origin in (list, tuple, set, frozenset):
        return [a for a in _args(ann) if a is not Ellipsis]
    if origin is dict:
        return [_args(ann)[1]]
    return []


def _misplaced_bool(value: Any, ann: Any) -> str | None:
    """What ``ann`` expects where ``value`` (or an item of it) is a bool that ``ann`` does not admit."""
    if isinstance(value, bool):
        return None if _admits_bool(ann) else _expects(ann)
    if isinstance(value, (list, tuple, dict)):
        elements = _element_annotations(ann)
        if not elements:
            return None
        items = value.values() if isinstance(value, dict) else value
        union = typing.Union[tuple(elements)] if len(elements) > 1 else elements[0]
        for item in items:
            found = _misplaced_bool(item, union)
            if found:
                return f"{found} in each entry"
    return None


def _outside_float32(value: Any) -> bool:
    if isinstance(value, float):
        return value != 0 and not MIN_FLOAT <= abs(value) <= MAX_FLOAT
    if isinstance(value, (list, tuple)):
        return any(_outside_float32(v) for v in value)
    return False


def changed(section: BaseModel, *names: str) -> list[str]:
    """Those of ``names`` that ``section`` sets to something other than their default (a resolved spec
    writes every default out, so being present is not enough): keys that may be an error to set."""
    fields = type(section).model_fields
    return [n for n in names if n in section.model_fields_set
            and getattr(section, n) != fields[n].get_default(call_default_factory=True)]


def _not_unicode(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, (list, tuple)):
        return any(_not_unicode(v) for v in value)
    return False


def _too_large(value: Any) -> bool:
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) > MAX_INT
    if isinstance(value, (list, tuple)):
        return any(_too_large(v) for v in value)
    return False


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


# --------------------------------------------------------------------------- reading and errors


class _LimitError(yaml.MarkedYAMLError):
    """A YAML document that breaks one of the limits above (or repeats a key)."""


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader (plain data only: no tag can build an object or run code) that also refuses
    a key repeated in one mapping, nesting deeper than :data:`MAX_DEPTH`, and aliases that expand to
    more than :data:`MAX_VALUES` values or into themselves."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _LimitError(None, None, f"sections and lists are nested more than {MAX_DEPTH} levels deep",
                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[tuple[str, str], Any] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise _LimitError(None, None, f"the key {short(key_node.value)} appears twice in one mapping "
                                      f"(first on line {seen[key].line + 1}); keep one", key_node.start_mark)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        _check_expanded(node)
        return self.construct_document(node)


def _check_expanded(root: Any) -> None:
    """Refuse a node graph whose expansion (each alias replaced by a copy of what it names) has more than
    MAX_VALUES values or is deeper than MAX_DEPTH; iterative, so it costs the distinct nodes only."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(root, False)]
    open_: set[int] = set()
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else (
            node.value if isinstance(node, yaml.SequenceNode) else [])
        if done:
            open_.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in children)
            depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
            if size[key] > MAX_VALUES:
                raise _LimitError(None, None, f"it holds more than {MAX_VALUES} values once its aliases (*name) "
                                  "expand to copies of what they name; a spec is a few settings", node.start_mark)
            if depth[key] > MAX_DEPTH:
                raise _LimitError(None, None, f"its aliases (*name) nest sections more than {MAX_DEPTH} levels deep",
                                  node.start_mark)
            continue
        if key in size:
            continue
        if key in open_:
            raise _LimitError(None, None, "an alias (*name) refers to a value that contains it", node.start_mark)
        open_.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in size)


def parse_yaml(text: str) -> Any:
    """YAML text as plain data, within the limits of :class:`_SpecLoader`."""
    loader = _SpecLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        kind = "YAML error" if isinstance(exc, (_LimitError, yaml.constructor.ConstructorError)) else "YAML syntax error"
        return f"{kind} at {where}: {cut(str(exc.problem), 2 * MAX_ECHO)}"
    return f"YAML error: {cut(str(exc), 2 * MAX_ECHO)}"


def read_yaml(source: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a syntax error names the file and line."""
    path = Path(source)
    if not path.exists():
        raise SpecError(f"{path}: no such file")
    if path.is_dir():
        raise SpecError(f"{path}: is a folder, not a YAML file")
    if not path.is_file():
        raise SpecError(f"{path}: is not a regular file (a device, pipe or socket); give a YAML file")
    try:
        size = path.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise SpecError(f"{path}: {size} bytes is too large for a spec (at most {MAX_SPEC_BYTES}); "
                            "is it the right file?")
        data = parse_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot be read as UTF-8 text ({exc})") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise SpecError(f"{path}: nested too deeply to read (at most {MAX_DEPTH} levels)") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping of keys to values, got {type(data).__name__}")
    return data


def _override_parts(item: str) -> tuple[list[str], str]:
    if "=" not in item:
        raise SpecError(f"--set {cut(item)}: expected KEY=VALUE, for example latent.dim=2")
    key, raw = item.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise SpecError(f"--set {cut(item)}: the key is empty")
    if len(parts) > MAX_DEPTH:
        raise SpecError(f"--set {cut(item)}: the key has more than {MAX_DEPTH} parts")
    return parts, raw


def apply_overrides(data: dict[str, Any], overrides: list[str] | None, *, prefix: str = "") -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a nested dict, in place. ``prefix``
    is how the command line spells the keys (``inference.`` for a recipe's), for messages."""
    for item in overrides or []:
        parts, raw = _override_parts(item)
        shown = cut(prefix + item)
        try:
            value = parse_yaml(raw)
        except yaml.YAMLError as exc:
            raise SpecError(f"--set {shown}: the value is not valid YAML ({_yaml_problem(exc)})") from None
        except RecursionError:
            raise SpecError(f"--set {shown}: the value is nested too deeply (at most {MAX_DEPTH} levels)") from None
        node = data
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = prefix + ".".join(parts[: i + 1])
                raise SpecError(f"--set {shown}: {where} is a value ({short(child)}), not a section")
            node = child
        node[parts[-1]] = value
    return data


def _override_keys(overrides: list[str] | None, prefix: str = "") -> dict[tuple[str, ...], str]:
    """The dotted key each override sets, as a path, mapped to how the command line wrote it."""
    out: dict[tuple[str, ...], str] = {}
    for item in overrides or []:
        parts, _ = _override_parts(item)
        out[tuple(parts)] = f"--set {cut(prefix + item)}"
    return out


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


def _as_dict(source: str | Path | dict | BaseModel) -> tuple[dict[str, Any], str]:
    if isinstance(source, BaseModel):
        return source.model_dump(mode="json"), type(source).__name__
    if isinstance(source, dict):
        return copy.deepcopy(source), "spec"
    return read_yaml(source), str(source)


def _zoo_file(source: Any, kind: zoo.Kind) -> Any:
    """A bare name of a zoo spec or recipe (``vae``, ``pcd``) as the zoo file's path; a name that is neither
    a file here nor in the zoo is refused with the zoo's names."""
    found = zoo.resolve(source, kind)
    if found is source and isinstance(source, (str, Path)) and not Path(source).exists():
        text = str(source)
        if text and "/" not in text and "\\" not in text and not text.endswith((".yaml", ".yml")):
            what = "zoo spec" if kind == "models" else "inference recipe"
            raise SpecError(f"{cut(text)}: no such file, and no {what} of that name; {what}s: "
                            f"{', '.join(zoo.names(kind)) or 'none found'}")
    return found
def dump_yaml(spec: BaseModel, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
