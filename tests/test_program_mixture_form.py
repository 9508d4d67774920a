"""Recognising the programs EM fits in closed form: the mixture's size, blocks and priors read off a
compiled program, and every other program refused with its reason."""

from __future__ import annotations

import copy
import math

import pytest

from ppgen.data.core import DataInfo
from ppgen.program import expr
from ppgen.program.compile import compile_program
from ppgen.program.mixture_form import Block, NotConjugate, _indexed, mixture_form
from ppgen.program.schema import ProgramSpec

POINTS = DataInfo((2,), "continuous")
BINARY = DataInfo((5,), "binary")

GAUSS = {
    "family": "program", "data": {"name": "toy2d"}, "guide_globals": "delta",
    "model": {
        "sd": {"dist": "LogNormal", "loc": "log(2.0)", "scale": 0.5, "shape": [3], "global": True},
        "w": {"dist": "Dirichlet", "concentration": [2.0, 2.0, 2.0], "global": True},
        "mu": {"dist": "Normal", "loc": 1.0, "scale": 5.0, "shape": [3, 2], "global": True},
        "c": {"dist": "Categorical", "probs": "w", "enumerate": "parallel"},
        "x": {"dist": "Normal", "loc": "onehot(c, 3) @ mu", "scale": "onehot(c, 3) @ sd", "observed": "x"},
    },
}
BERN = {
    "family": "program", "data": {"name": "digits"}, "guide_globals": "delta",
    "params": {"w": {"shape": [2], "init": 0.5, "constraint": "simplex"},
               "p": {"shape": [2, 5], "init": 0.5, "constraint": "unit_interval"}},
    "model": {
        "c": {"dist": "Categorical", "probs": "w", "enumerate": "parallel"},
        "x": {"dist": "Bernoulli", "probs": "onehot(c, 2) @ p", "observed": "x"},
    },
}


def _form(spec: dict, info: DataInfo = POINTS, change=None):
    spec = copy.deepcopy(spec)
    if change is not None:
        change(spec)
    return mixture_form(compile_program(ProgramSpec.model_validate(spec), info))


def test_a_spherical_gaussian_mixture_with_priors():
    form = _form(GAUSS)
    assert (form.components, form.dim, form.covariance, form.emission) == (3, 2, "spherical", "normal")
    assert (form.assignment, form.observed, form.flat) == ("c", "x", False)
    assert form.blocks["weights"] == Block("weights", "w", "site", (2.0,))
    assert form.blocks["locs"] == Block("locs", "mu", "site", (1.0, 5.0))
    name, kind, (log_median, tau) = form.blocks["scales"].name, form.blocks["scales"].kind, form.blocks["scales"].prior
    assert (name, kind, tau) == ("sd", "site", 0.5) and math.isclose(log_median, math.log(2.0), rel_tol=1e-6)


def test_diagonal_scales():
    form = _form(GAUSS, change=lambda s: s["model"]["sd"].update({"shape": [3, 2]}))
    assert form.covariance == "diag"


def test_a_bernoulli_mixture_of_parameters_is_maximum_likelihood():
    form = _form(BERN, BINARY)
    assert (form.components, form.dim, form.covariance, form.emission, form.flat) == (2, 5, None, "bernoulli", True)
    assert form.blocks == {"weights": Block("weights", "w", "param"), "probs": Block("probs", "p", "param")}


def _learnt_concentration(s: dict) -> None:
    s["params"] = {"a": {"shape": [3], "init": 2.0, "constraint": "positive"}}
    s["model"]["w"]["concentration"] = "a"


def _logits(s: dict) -> None:
    del s["model"]["x"]["probs"]
    s["model"]["x"]["logits"] = "onehot(c, 2) @ p"


def _continuous_local(s: dict) -> None:
    x = s["model"].pop("x")
    s["model"]["h"] = {"dist": "Normal", "loc": 0.0, "scale": 1.0, "shape": [1]}
    s["model"]["x"] = x


@pytest.mark.parametrize("spec,info,change,reason", [
    (GAUSS, POINTS, lambda s: s["model"].update({"extra": {"dist": "Normal", "loc": 0.0, "scale": 1.0,
                                                           "global": True}}),
     "it has sites EM would not update (extra)"),
    (GAUSS, POINTS, lambda s: s["model"]["mu"].update({"shape": [2, 2]}), "the locs 'mu' have shape [2, 2]"),
    (GAUSS, POINTS, lambda s: s["model"]["x"].update({"scale": "onehot(c, 3) @ mu"}),
     "the weights, locations and scales must be three different"),
    (GAUSS, POINTS, lambda s: s["model"]["x"].update({"loc": "onehot(c, 2) @ mu"}), "EM needs onehot(c, 3) @ NAME"),
    (GAUSS, POINTS, "_learnt_concentration", "model.w.concentration is not a constant"),
    (BERN, BINARY, lambda s: s["params"]["p"].update({"constraint": "real"}),
     "the parameter 'p' is not constrained unit_interval"),
    (BERN, BINARY, "_logits", "model.x takes logits"),
    (BERN, BINARY, lambda s: s["model"]["x"].update({"probs": "onehot(c, 2) @ w"}),
     "the weights and the emission probabilities must be two different"),
    (BERN, BINARY, lambda s: s["model"].update({"x": {**s["model"]["x"], "shape": [1, 5]}}), "shape [1, 5]"),
    (BERN, BINARY, "_continuous_local", "its local latent sites are c, h"),
])
def test_other_programs_are_refused_with_the_reason(spec, info, change, reason):
    change = globals()[change] if isinstance(change, str) else change
    with pytest.raises(NotConjugate) as err:
        _form(spec, info, change)
    assert reason in str(err.value), str(err.value)
    assert "EM does not apply to this program" in str(err.value)


def test_labels_are_refused():
    info = DataInfo((2,), "continuous", 3)

    def labels(s):
        x = s["model"].pop("x")
        s["model"]["y"] = {"dist": "Categorical", "probs": "w", "observed": "y"}
        s["model"]["x"] = x
    with pytest.raises(NotConjugate, match="model.y observes labels"):
        _form(GAUSS, info, labels)


def test_indexed_reads_only_onehot_of_the_assignment_at_k():
    def node(text):
        return expr.parse(text, "here")
    assert _indexed(node("onehot(c, 3) @ mu"), "c", 3) == "mu"
    assert _indexed(node("onehot(c, 3) @ mu"), "c", 2) is None
    assert _indexed(node("onehot(d, 3) @ mu"), "c", 3) is None
    assert _indexed(node("mu @ onehot(c, 3)"), "c", 3) is None
    assert _indexed(node("onehot(c, 3) @ net.h"), "c", 3) is None
