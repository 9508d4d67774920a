"""Reading one site of a program: its parameters as syntax trees over constants and inline parameters,
its options, and the errors that name the site and key."""

from __future__ import annotations

import pytest
import torch

from ppgen.program import expr
from ppgen.program.decls import SiteDecl
from ppgen.program.parse import check_name, parse_site
from ppgen.spec import SpecError


def _read(value: dict, part: str = "model"):
    consts: dict = {}
    params: dict = {}
    info = parse_site("z", part, SiteDecl.model_validate(value), consts, params)
    return info, consts, params


def test_constants_become_references_and_defaults_are_filled_in():
    info, consts, params = _read({"dist": "StudentT", "df": 3, "scale": [1.0, 2.0], "shape": [2]})
    assert set(info.args) == {"df", "scale", "loc"}
    assert all(isinstance(info.args[k], expr.Ref) for k in info.args)
    values = {k: consts[info.args[k].name] for k in info.args}
    torch.testing.assert_close(values["df"][0], torch.tensor(3.0))
    torch.testing.assert_close(values["scale"][0], torch.tensor([1.0, 2.0]))
    assert values["scale"][1] == 1 and values["df"][1] == 0
    torch.testing.assert_close(values["loc"][0], torch.tensor(0.0))  # StudentT's default loc
    assert params == {} and info.shape == (2,) and info.where == "model.z"


def test_an_inline_parameter_is_declared_under_the_site_and_key():
    info, consts, params = _read({"dist": "Normal", "loc": 0.0, "scale": {"param": 1.5, "constraint": "positive"}})
    assert list(params) == ["z__scale"]
    assert params["z__scale"].init == 1.5 and params["z__scale"].constraint == "positive"
    assert info.args["scale"] == expr.Ref("z__scale")
    assert [r.name for r in info.refs()] == [info.args["loc"].name, "z__scale"]


def test_an_expression_is_parsed_and_its_references_listed():
    info, _, _ = _read({"dist": "Normal", "loc": "enc.loc", "scale": "softplus(w) + 1e-3"})
    names = sorted((r.name, r.head) for r in info.refs())
    assert names == [("enc", "loc"), ("w", None)]


def test_options_are_read_and_checked():
    info, _, _ = _read({"dist": "PixelCategorical", "logits": "dec", "levels": 17, "scale": 16})
    assert info.options == {"levels": 17, "scale": 16.0} and info.discrete
    for key, value, pattern in [("levels", 1, r"model\.z\.levels: at least 2 levels, got 1"),
                                ("levels", True, r"model\.z\.levels: must be a positive whole number"),
                                ("levels", 2.5, r"model\.z\.levels: must be a positive whole number"),
                                ("scale", 0, r"model\.z\.scale: must be a positive number, got 0")]:
        with pytest.raises(SpecError, match=pattern):
            _read({"dist": "PixelCategorical", "logits": "dec", "levels": 4, key: value})


def test_enumerate_and_mixture_component_are_read():
    info, _, _ = _read({"dist": "Categorical", "logits": [0.0, 0.0], "enumerate": "parallel"})
    assert info.enumerate and not info.is_global
    mix, _, _ = _read({"dist": "MixtureSameFamily", "logits": [0.0, 1.0], "components": 2,
                       "component": {"dist": "Normal", "loc": [[0.0], [1.0]], "scale": 1.0}})
    assert mix.component is not None and mix.component.entry.name == "Normal"
    assert set(mix.args) == {"logits", "component.loc", "component.scale"}


@pytest.mark.parametrize("value,pattern", [
    ({"dist": "Normal", "loc": 0.0, "scale": [[1.0], [1.0, 2.0]]}, r"model\.z\.scale: a list must hold numbers in a regular"),
    ({"dist": "Normal", "loc": 0.0, "scale": {"init": 1.0}}, r"model\.z\.scale: a mapping here is a learnable parameter"),
    ({"dist": "Normal", "loc": 0.0, "scale": {"param": 1.0, "constraint": "neg"}}, r"model\.z\.scale: "),
    ({"dist": "Normal", "loc": 0.0, "scale": None}, r"model\.z\.scale: expected a number"),
    ({"dist": "ConstrainedNormal", "loc": 0.0, "scale": 1.0}, r"model\.z: unknown distribution 'ConstrainedNormal'"),
    ({"dist": "Bernoulli"}, r"model\.z: Bernoulli takes exactly one of probs or logits, got neither"),
    ({"dist": "Normal", "loc": 0.0, "scale": 1.0, "shape": [2, 0]}, r"model\.z\.shape: every size must be at least 1"),
    ({"dist": "Poisson", "rate": 1.0, "enumerate": "parallel"}, r"model\.z\.enumerate: Poisson has an infinite support"),
    ({"dist": "Normal", "loc": 0.0, "scale": 1.0, "classes": 3}, r"model\.z\.classes: Normal takes no parameter"),
    ({"dist": "MixtureSameFamily", "logits": [0.0], "component": 3}, r"model\.z\.component: expected a distribution"),
    ({"dist": "MixtureSameFamily", "logits": [0.0], "component": {"dist": "Normal", "loc": 0.0, "scale": 1.0,
                                                                  "shape": [1]}},
     r"model\.z\.component\.shape: a component takes its distribution and parameters only"),
    ({"dist": "MixtureSameFamily", "logits": [0.0], "component": {"loc": 0.0}}, r"model\.z\.component: needs dist"),
    ({"dist": "MixtureSameFamily", "logits": [0.0], "component": {"dist": "Bernoulli", "probs": 0.5}},
     r"model\.z\.component\.dist: 'Bernoulli' cannot be a mixture component"),
    ({"dist": "MixtureSameFamily", "logits": [0.0], "component": {"dist": "TransformedDistribution"}},
     r"model\.z\.component\.dist: a TransformedDistribution cannot be a mixture component"),
    ({"dist": "Normal", "loc": 0.0, "scale": 1.0, "dequantize": "uniform", "observed": "y"},
     r"model\.z\.dequantize: applies to the model's observed site x only"),
])
def test_a_bad_site_is_refused_naming_its_key(value, pattern):
    with pytest.raises(SpecError, match=pattern):
        _read(value)


def test_a_guide_site_cannot_be_observed_or_global():
    with pytest.raises(SpecError, match=r"guide\.z\.observed: set observed on the model's site"):
        _read({"dist": "Normal", "loc": 0.0, "scale": 1.0, "observed": "x"}, part="guide")
    with pytest.raises(SpecError, match=r"guide\.z\.global: set global on the model's site"):
        _read({"dist": "Normal", "loc": 0.0, "scale": 1.0, "global": True}, part="guide")


@pytest.mark.parametrize("name,pattern", [("lambda", "not a valid name"), ("_z", "not a valid name"),
                                          ("softplus", "is reserved"), ("x_data", "is reserved"),
                                          ("a__b", "contains '__'")])
def test_names(name, pattern):
    with pytest.raises(SpecError, match=f"model.{name}: .*{pattern}"):
        check_name(name, f"model.{name}")
    check_name("z_1", "model.z_1")
