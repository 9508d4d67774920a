"""Compiling a checked program against its data: each site's shape and options, the parameters' shapes,
network heads, the automatic guides' placement, and the errors that need the data, naming the site."""

from __future__ import annotations

import pytest
import torch

from ppgen.data.core import DataInfo
from ppgen.program.compile import compile_program
from ppgen.program.schema import ProgramSpec
from ppgen.spec import SpecError

DIGITS = DataInfo((1, 8, 8), "binary", 10)
GREY = DataInfo((1, 8, 8), "continuous", 10)
POINTS = DataInfo((2,), "continuous")


def _compile(model: dict, info: DataInfo = POINTS, data: str = "toy2d", **rest):
    spec = ProgramSpec.model_validate({"family": "program", "data": {"name": data}, "model": model, **rest})
    return compile_program(spec, info)


X2 = {"dist": "Normal", "loc": "z", "scale": 0.5, "observed": "x"}


def test_shapes_are_read_from_constants_and_parameters():
    p = _compile({"w": {"dist": "Normal", "loc": [0.0, 1.0, 2.0], "scale": 1.0, "global": True},
                  "c": {"dist": "Categorical", "logits": [0.0, 0.0, 0.0, 0.0], "enumerate": "parallel"},
                  "z": {"dist": "Normal", "loc": "onehot(c, 4) @ W", "scale": 1.0},
                  "x": X2},
                 params={"W": {"shape": [4, 2]}})
    by = p.model_by_name
    assert by["w"].shape == (3,) and by["c"].shape == () and by["z"].shape == (2,) and by["x"].shape == (2,)
    assert by["c"].options["classes"] == 4 and by["c"].param_shapes["logits"] == (4,)
    assert by["w"].param_shapes == {"loc": (3,), "scale": (3,)}
    # a constant is stored already broadcast to the parameter's shape
    scale = by["w"].args["scale"].name
    torch.testing.assert_close(p.constants[scale][0], torch.ones(3))
    # global sites first; the guide of the global w is Pyro's AutoNormal written out
    assert [s.name for s in p.model] == ["w", "c", "z", "x"]
    assert [s.name for s in p.guide] == ["w", "z"] and p.auto_globals == {"w": "normal"}
    assert set(p.params) == {"W", "auto__w__loc", "auto__w__scale"}
    torch.testing.assert_close(p.params["auto__w__scale"][0], torch.full((3,), 0.1))


def test_the_observed_site_takes_the_datas_shape_or_a_view_of_as_many_values():
    p = _compile({"z": {"dist": "Normal", "loc": 0.0, "scale": 1.0, "shape": [3]},
                  "x": {"dist": "Bernoulli", "logits": "dec", "observed": "x", "shape": [64]}},
                 DIGITS, "digits", networks={"dec": {"inputs": ["z"], "hidden": [5]}})
    assert p.x_site.shape == (64,) and p.x_site.fast == "bernoulli"
    decl, inputs, heads = p.networks["dec"]
    assert heads == {"out": (64,)} and inputs[0].site == "z" and inputs[0].shape == (3,)
    # guide: auto is an encoder of x with a loc and a scale head per local latent
    assert p.networks["auto__encoder"][2] == {"z__loc": (3,), "z__scale": (3,)}
    assert [g.entry.name for g in p.guide] == ["Normal"]


def test_a_positive_latent_gets_a_constrained_normal_guide_and_pixel_levels_follow_the_data():
    p = _compile({"s": {"dist": "Gamma", "concentration": 2.0, "rate": 1.0, "shape": [2]},
                  "x": {"dist": "PixelCategorical", "logits": "dec", "observed": "x"}},
                 GREY, "digits", networks={"dec": {"inputs": ["s"], "hidden": [5]}})
    assert p.guide[0].entry.name == "ConstrainedNormal"
    assert p.x_site.options == {"levels": 17, "scale": 16.0}
    assert p.networks["dec"][2] == {"out": (1, 8, 8, 17)}
    p = _compile({"x": {"dist": "PixelCategorical", "logits": 0.0, "observed": "x"}}, GREY, "mnist")
    assert p.x_site.options == {"levels": 256, "scale": 256.0}
    assert p.x_site.param_shapes["logits"] == (1, 8, 8, 256)


@pytest.mark.parametrize("model,kwargs,info,pattern", [
    ({"c": {"dist": "Categorical", "logits": "W", "enumerate": "parallel"}, "x": {**X2, "loc": 0.0}},
     {"params": {"W": {"shape": []}}}, POINTS, r"model\.c: cannot tell the number of classes"),
    ({"x": {"dist": "Normal", "loc": 0.0, "scale": 1.0, "observed": "x", "shape": [3]}}, {}, POINTS,
     r"model\.x\.shape: \[3\], but one example of the data has shape \[2\]"),
    ({"x": X2 | {"loc": 0.0}, "y": {"dist": "Categorical", "logits": [0.0, 0.0], "observed": "y"}}, {}, POINTS,
     r"model\.y: observed: y, but these data have no labels"),
    ({"x": {"dist": "Bernoulli", "logits": 0.0, "observed": "x"},
      "y": {"dist": "OneHotCategorical", "logits": [0.0] * 10, "observed": "y", "shape": [3]}}, {}, DIGITS,
     r"model\.y\.shape: \[3\], but a label is \[10\]"),
    ({"x": {"dist": "PixelCategorical", "logits": 0.0, "observed": "x"}}, {}, DIGITS,
     r"model\.x: PixelCategorical models grey levels; set data\.binarize: none"),
    ({"x": {"dist": "Categorical", "logits": [0.0, 0.0], "observed": "x"}}, {}, DataInfo((), "continuous"),
     r"model\.x: Categorical cannot model the data x"),
    ({"d": {"dist": "Dirichlet", "concentration": 1.0}, "x": {**X2, "loc": 0.0}}, {}, POINTS,
     r"model\.d: Dirichlet needs a vector parameter"),
    ({"c": {"dist": "Bernoulli", "probs": 0.5, "shape": [2], "enumerate": "parallel"}, "x": {**X2, "loc": 0.0}}, {},
     POINTS, r"model\.c: an enumerated site takes one value per example"),
    ({"x": {**X2, "loc": "p"}}, {"params": {"p": {"shape": [], "constraint": "simplex", "init": 1.0}}}, POINTS,
     r"params\.p: a simplex parameter needs a shape"),
    ({"x": {**X2, "loc": "p"}}, {"params": {"p": {"shape": [2], "constraint": "lower_cholesky", "init": 1.0}}},
     POINTS, r"params\.p: a lower_cholesky parameter needs a square shape"),
    ({"x": {**X2, "loc": "p"}}, {"params": {"p": {"shape": [2], "init": [1.0, 2.0, 3.0]}}}, POINTS,
     r"params\.p\.init: \[1\.0, 2\.0, 3\.0\] does not fit the shape \[2\]"),
    ({"x": {**X2, "loc": 0.0, "scale": {"param": -1.0, "constraint": "positive"}}}, {}, POINTS,
     r"model\.x\.scale\.init: -1\.0 is outside its constraint positive"),
    ({"z": {"dist": "Normal", "loc": 0.0, "scale": 1.0, "shape": [2]}, "x": X2},
     {"guide": {"z": {"dist": "Normal", "loc": 0.0, "scale": 1.0, "shape": [3]}}}, POINTS,
     r"guide\.z\.shape: \[3\], but the model's z has shape \[2\]"),
    ({"c": {"dist": "Categorical", "logits": [0.0, 0.0, 0.0]}, "x": {**X2, "loc": 0.0}},
     {"guide": {"c": {"dist": "Categorical", "logits": [0.0, 0.0], "classes": 2}}}, POINTS,
     r"guide\.c\.classes: 2, but the model's c has 3 classes"),
])
def test_errors_that_need_the_data_name_the_site(model, kwargs, info, pattern):
    with pytest.raises(SpecError, match=pattern):
        _compile(model, info, "digits" if info is not POINTS else "toy2d", **kwargs)


def test_a_head_read_through_a_matrix_product_must_be_declared():
    model = {"z": {"dist": "Normal", "loc": 0.0, "scale": 1.0, "shape": [3]},
             "x": {"dist": "Normal", "loc": "dec.h @ W", "scale": 1.0, "observed": "x"}}
    with pytest.raises(SpecError, match=r"model\.x\.loc: the shape of dec\.h cannot be read from this expression"):
        _compile(model, params={"W": {"shape": [4, 2]}}, networks={"dec": {"inputs": ["z"]}})
    p = _compile(model, params={"W": {"shape": [4, 2]}}, networks={"dec": {"inputs": ["z"], "outputs": {"h": [4]}}})
    assert p.networks["dec"][2] == {"h": (4,)}


def test_a_head_used_with_two_shapes_is_refused():
    model = {"z": {"dist": "Normal", "loc": "dec.h", "scale": 1.0, "shape": [3], "global": False},
             "x": {"dist": "Normal", "loc": "dec.h", "scale": 1.0, "observed": "x"}}
    with pytest.raises(SpecError, match=r"dec\.h would have shape \[2\] here but \[3\] in model\.z\.loc"):
        _compile({"w": {"dist": "Normal", "loc": 0.0, "scale": 1.0, "shape": [1]}, **model},
                 networks={"dec": {"inputs": ["w"]}})


@pytest.mark.parametrize("is_global", [False, True])
def test_a_scalar_site_with_constant_parameters_compiles(is_global):
    p = _compile({"e": {"dist": "Normal", "loc": 0.0, "scale": 1.0, "global": is_global},
                  "x": {"dist": "Normal", "loc": "e", "scale": 1.0, "observed": "x"}})
    e = p.model_by_name["e"]
    assert e.shape == () and e.param_shapes == {"loc": (), "scale": ()} and e.standard_normal
    torch.testing.assert_close(p.constants[e.args["scale"].name][0], torch.tensor(1.0))
