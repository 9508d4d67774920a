"""A program's spec validated whole: its sections, the names shared by networks, parameters and sites, and
the structure it is read into."""

from __future__ import annotations

import pydantic
import pytest

from ppgen.program.schema import ProgramSpec, structure
from ppgen.spec import SpecError

SPEC = {
    "family": "program",
    "data": {"name": "toy2d"},
    "params": {"s": {"init": 1.0, "constraint": "positive"}},
    "model": {"z": {"dist": "Normal", "loc": 0.0, "scale": "s", "shape": [2]},
              "x": {"dist": "Normal", "loc": "z", "scale": 0.5, "observed": "x"}},
    "guide": {"z": {"dist": "Normal", "loc": {"param": 0.0, "shape": [2]}, "scale": 1.0}},
}


def _spec(**changes) -> dict:
    return {**SPEC, **changes}


def test_a_program_is_read_into_its_structure():
    spec = ProgramSpec.model_validate(SPEC)
    assert spec.guide_globals == "normal" and spec.num_data is None
    st = structure(spec)
    assert list(st.model) == ["z", "x"] and st.guide_kind == "declared"
    assert st.model["x"].observed == "x" and st.guide["z"].part == "guide"
    assert set(st.params) == {"s", "z__loc"}  # the declared one and the guide's inline one
    assert st.site("z").entry.name == "Normal"


def test_automatic_guides_have_no_guide_sites():
    st = structure(ProgramSpec.model_validate(_spec(guide="delta")))
    assert st.guide is None and st.guide_kind == "delta"


def test_autoguide_is_the_guide_of_the_globals():
    assert ProgramSpec.model_validate(_spec(autoguide="AutoDelta")).guide_globals == "delta"


@pytest.mark.parametrize("changes,pattern", [
    ({"model": {}}, r"model: a program needs at least one site"),
    ({"networks": {"z": {"inputs": ["x"]}}}, r"model\.z: the name 'z' is already used in networks"),
    ({"params": {"x": {"init": 0.0}}}, r"model\.x: the name 'x' is already used in params"),
    ({"params": {"bad name": {"init": 0.0}}}, r"params\.bad name: 'bad name' is not a valid name"),
    ({"guide": {"w": {"dist": "Normal", "loc": 0.0, "scale": 1.0}}}, r"guide\.w: the model has no site 'w'"),
    ({"guide": {"z": {"dist": "Normal", "loc": 0.0, "scale": 1.0}, "a__b": {"dist": "Normal"}}},
     r"guide\.a__b: 'a__b' contains '__'"),
])
def test_structure_errors_name_the_key(changes, pattern):
    with pytest.raises(SpecError, match=pattern):
        ProgramSpec.model_validate(_spec(**changes))


def test_unknown_sections_and_bad_values_are_refused():
    with pytest.raises(pydantic.ValidationError, match="modle"):
        ProgramSpec.model_validate(_spec(modle={}))
    with pytest.raises(pydantic.ValidationError, match="num_data"):
        ProgramSpec.model_validate(_spec(num_data=0))
    with pytest.raises(pydantic.ValidationError, match="guide_globals"):
        ProgramSpec.model_validate(_spec(guide_globals="laplace"))
