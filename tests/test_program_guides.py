"""The automatic guides written in the model language: an encoder of x with unconstrained heads for each
local latent, and free parameters for each global latent (Pyro's AutoNormal and AutoDelta)."""

from __future__ import annotations

import torch
from torch.distributions import constraints

from ppgen.program import expr
from ppgen.program.compiled import Site
from ppgen.program.dists import TABLE
from ppgen.program.guides import auto_global_guide, auto_local_guide, _support
from ppgen.program.schema import ProgramSpec

SPEC = ProgramSpec.model_validate({
    "family": "program", "data": {"name": "toy2d"}, "auto_network": {"hidden": [7], "activation": "tanh"},
    "model": {"x": {"dist": "Normal", "loc": 0.0, "scale": 1.0, "observed": "x"}}})


def _site(name: str, dist: str, shape: tuple[int, ...], is_global: bool = False, observed: str | None = None,
          options: dict | None = None) -> Site:
    return Site(name, "model", TABLE[dist], {}, options or {}, shape, is_global, observed, False)


X = _site("x", "Normal", (2,), observed="x")


def test_supports():
    assert _support(_site("a", "Normal", (2,))) is constraints.real
    assert _support(_site("a", "Gamma", (2,))) is constraints.positive
    assert _support(_site("a", "Dirichlet", (3,))) is constraints.simplex
    assert _support(_site("a", "Beta", ())) is constraints.unit_interval
    mix = _site("a", "MixtureSameFamily", (1,), options={"component_entry": TABLE["LogNormal"]})
    assert _support(mix) is constraints.positive


def test_the_local_normal_guide_reads_x_through_one_encoder_with_unconstrained_heads():
    nets: dict = {}
    z, w = _site("z", "Normal", (4,)), _site("w", "Dirichlet", (3,))
    out = auto_local_guide(SPEC, [X, z, w], [z, w], "normal", nets)
    enc = nets["auto__encoder"]
    assert enc.inputs == ["x"] and enc.hidden == [7] and enc.activation == "tanh"
    # a simplex of 3 values has 2 unconstrained coordinates
    assert enc.outputs == {"z__loc": [4], "z__scale": [4], "w__loc": [2], "w__scale": [2]}
    assert [g.entry.name for g in out] == ["Normal", "ConstrainedNormal"]
    assert out[0].fast == "normal" and out[1].options == {"support": constraints.simplex}
    assert all(g.part == "guide" and not g.is_global for g in out)
    assert expr.to_text(out[0].args["scale"]) == "(softplus(auto__encoder.z__scale) + 0.0001)"


def test_the_local_delta_guide_is_one_value_per_latent():
    nets: dict = {}
    s = _site("s", "HalfNormal", (2,))
    (g,) = auto_local_guide(SPEC, [X, s], [s], "delta", nets)
    assert g.entry.name == "ConstrainedDelta" and g.options["support"] is constraints.positive
    assert nets["auto__encoder"].outputs == {"s__value": [2]}


def test_the_global_guides_have_free_parameters_starting_at_zero_and_0_1():
    params: dict = {}
    g = auto_global_guide(_site("m", "Normal", (2,), is_global=True), "normal", params)
    assert g.entry.name == "Normal" and g.is_global and g.fast == "normal"
    torch.testing.assert_close(params["auto__m__loc"][0], torch.zeros(2))
    torch.testing.assert_close(params["auto__m__scale"][0], torch.full((2,), 0.1))
    assert params["auto__m__scale"][1] is constraints.positive
    g = auto_global_guide(_site("p", "Dirichlet", (4,), is_global=True), "delta", params)
    assert g.entry.name == "ConstrainedDelta" and params["auto__p__value"][0].shape == (3,)
    g = auto_global_guide(_site("r", "Gamma", (), is_global=True), "normal", params)
    assert g.entry.name == "ConstrainedNormal" and params["auto__r__loc"][0].shape == ()
