"""What a value in a spec may be, whatever its key: the rules every section (:class:`ppgen.spec.Strict`)
applies before and after pydantic's own checks. A boolean only where the annotation admits one (YAML's
``dim: true`` is not the integer 1) and nothing else where it takes only a boolean; integers within 64
bits; numbers within float32's range, in which the models compute; text that is valid Unicode."""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal

#: The largest integer a spec may hold (torch and numpy take 64-bit integers).
MAX_INT = 2**63 - 1
#: The range of a number in a spec: the models compute in float32, where a larger magnitude is infinite
#: and a smaller non-zero one rounds to zero (float32's largest and smallest normal numbers).
MAX_FLOAT = 3.4028234663852886e38
MIN_FLOAT = 1.1754943508222875e-38


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


def only_bool(ann: Any) -> bool:
    """Whether ``ann`` is ``bool`` or ``bool | None`` (where 0, 1 or "yes" must not pass for a boolean)."""
    if ann is bool:
        return True
    origin = typing.get_origin(ann)
    if origin is Annotated:
        return only_bool(_args(ann)[0])
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in _args(ann) if a is not type(None)]
        return len(rest) == 1 and only_bool(rest[0])
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


def misplaced_bool(value: Any, ann: Any) -> str | None:
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
            found = misplaced_bool(item, union)
            if found:  # said once, however deep the entry lies
                return found if found.endswith(" in each entry") else f"{found} in each entry"
    return None


def _entries(value: Any) -> Any:
    """The items of a list or tuple, the keys and values of a dict; nothing for anything else."""
    if isinstance(value, dict):
        return [*value.keys(), *value.values()]
    return value if isinstance(value, (list, tuple)) else ()


def outside_float32(value: Any) -> bool:
    if isinstance(value, float):
        return value != 0 and not MIN_FLOAT <= abs(value) <= MAX_FLOAT
    return any(outside_float32(v) for v in _entries(value))


def not_unicode(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    return any(not_unicode(v) for v in _entries(value))


def too_large(value: Any) -> bool:
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) > MAX_INT
    return any(too_large(v) for v in _entries(value))
