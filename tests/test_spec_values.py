"""ppgen.spec_values: the rules on single values in a spec (booleans only where a key takes one, 64-bit
integers, float32's range, valid Unicode), on their own and as every section applies them."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import numpy as np
import pytest
from pydantic import Field

from ppgen.spec import SpecError, Strict, validate
from ppgen.spec_values import (MAX_FLOAT, MAX_INT, MIN_FLOAT, misplaced_bool, not_unicode, only_bool, outside_float32,
                               too_large)


def test_the_limits_are_float32s_and_int64s() -> None:
    info = np.finfo(np.float32)
    assert MAX_FLOAT == float(info.max) and MIN_FLOAT == float(info.tiny)
    assert MAX_INT == int(np.iinfo(np.int64).max)


@pytest.mark.parametrize("value, outside", [
    (0.0, False), (-0.0, False), (MAX_FLOAT, False), (-MAX_FLOAT, False), (MIN_FLOAT, False), (-MIN_FLOAT, False),
    (1.0, False), (math.nextafter(MAX_FLOAT, math.inf), True), (math.nextafter(MIN_FLOAT, 0.0), True),
    (-1e39, True), (1e-40, True), (math.inf, True), (math.nan, True),
    ([1.0, [2.0, 1e39]], True), ((1.0, 2.0), False), ({"a": [1.0, 1e-45]}, True), ({"a": 1.0}, False),
    (10**40, False),  # an integer is too_large's to judge
    ("1e39", False),
])
def test_outside_float32(value: Any, outside: bool) -> None:
    assert outside_float32(value) is outside


@pytest.mark.parametrize("value, large", [
    (MAX_INT, False), (-MAX_INT, False), (MAX_INT + 1, True), (-MAX_INT - 1, True), (True, False), (0, False),
    ([1, [2, 2**64]], True), ({"a": [2**70]}, True), ({2**70: 1}, True), ({"a": [1]}, False), (1e300, False),
])
def test_too_large(value: Any, large: bool) -> None:
    assert too_large(value) is large


@pytest.mark.parametrize("value, bad", [
    ("plain", False), ("é ✓ 😀", False), ("\ud800", True), (["ok", ["\udfff"]], True), ({"\ud800": 1}, True),
    ({"a": "\ud800"}, True), ({"a": "b"}, False), (3, False),
])
def test_not_unicode(value: Any, bad: bool) -> None:
    assert not_unicode(value) is bad


@pytest.mark.parametrize("ann, only", [
    (bool, True), (bool | None, True), (Annotated[bool, Field()], True), (int | bool, False), (int, False),
    (Literal[True, False], False), (list[bool], False), (Any, False),
])
def test_only_bool(ann: Any, only: bool) -> None:
    assert only_bool(ann) is only


@pytest.mark.parametrize("value, ann, expected", [
    (True, bool, None), (False, bool | None, None), (True, Any, None), (True, int | bool, None),
    (True, Literal["a", True], None), (True, Annotated[bool, Field()], None),
    (True, int, "an integer"), (True, float, "a number"), (False, str | None, "a string"),
    (True, int | float, "an integer or a number"), (True, Annotated[int, Field(ge=1)], "an integer"),
    (True, Literal[1, 2], "one of 1, 2"), (True, list[int], "a value of another kind"),
    ([1, True], list[int], "an integer in each entry"), ([True], list[bool], None),
    ({"a": False}, dict[str, float], "a number in each entry"), ({False: 1}, dict[bool, int], None),
    ([[1], [True]], list[list[int]], "an integer in each entry"),
    ((1, True), tuple[int, ...], "an integer in each entry"), ([True], list[int] | bool, "an integer in each entry"),
    ([True], list, None),  # a bare list says nothing of its items
    (1, int, None), ("yes", bool, None),  # not a bool: only_bool's and pydantic's to judge
])
def test_misplaced_bool(value: Any, ann: Any, expected: str | None) -> None:
    assert misplaced_bool(value, ann) == expected


class Section(Strict):
    dim: int = 1
    rate: float = 0.5
    flag: bool = False
    maybe: bool | None = None
    name: str = "a"
    sizes: list[int] = Field(default_factory=list)
    table: dict[str, list[int]] = Field(default_factory=dict)


@pytest.mark.parametrize("data, message", [
    ({"dim": True}, "dim: expected an integer, not a boolean (got True)"),
    ({"sizes": [4, False]}, "sizes: expected an integer in each entry, not a boolean (got [4, False])"),
    ({"flag": 1}, "flag: expected true or false (got 1)"),
    ({"maybe": "yes"}, "maybe: expected true or false (got 'yes')"),
    ({"dim": 2**63}, f"dim: integers must lie within +-(2**63 - 1) (got {2**63})"),
    ({"table": {"a": [2**64]}}, "table: integers must lie within +-(2**63 - 1)"),
    ({"name": "\ud800"}, "name: text must be valid Unicode (it holds an unpaired surrogate)"),
    ({"rate": 1e39}, "rate: numbers must be 0 or of magnitude from 1.18e-38 to 3.4e+38 (float32's range) (got 1e+39)"),
    ({"rate": 1e-39}, "rate: numbers must be 0 or of magnitude from 1.18e-38 to 3.4e+38 (float32's range)"),
])
def test_a_section_refuses_each_with_the_key_and_the_rule(data: dict, message: str) -> None:
    with pytest.raises(SpecError) as err:
        validate(Section, data, "spec")
    assert message in str(err.value)
    assert str(err.value).startswith("spec is invalid:")


def test_a_section_takes_the_values_at_the_limits() -> None:
    got = validate(Section, {"dim": -MAX_INT, "rate": MIN_FLOAT, "flag": True, "maybe": None, "sizes": [MAX_INT],
                             "table": {"a": [1, 2]}, "name": "é"}, "spec")
    assert (got.dim, got.rate, got.flag, got.sizes, got.table) == (-MAX_INT, MIN_FLOAT, True, [MAX_INT], {"a": [1, 2]})
    assert validate(Section, {"rate": -MAX_FLOAT}, "spec").rate == -MAX_FLOAT
