"""The checks across a program's sites, run on structures read site by site: what a site may read, the
observed and global sites, the guide's coverage, and the networks' inputs."""

from __future__ import annotations

import pytest

from ppgen.program.checks import check_guide, check_model, check_networks
from ppgen.program.decls import NetworkDecl, ParamDecl, SiteDecl
from ppgen.program.parse import Structure, parse_site
from ppgen.spec import SpecError

Z = {"dist": "Normal", "loc": 0.0, "scale": 1.0, "shape": [2]}
X = {"dist": "Bernoulli", "logits": "dec", "observed": "x"}
NETS = {"dec": {"inputs": ["z"]}}


def _structure(model: dict, guide: dict | None = None, networks: dict | None = None, params: dict | None = None):
    consts: dict = {}
    ps = {k: ParamDecl.model_validate(v) for k, v in (params or {}).items()}
    m = {k: parse_site(k, "model", SiteDecl.model_validate(v), consts, ps) for k, v in model.items()}
    g = None if guide is None else {k: parse_site(k, "guide", SiteDecl.model_validate(v), consts, ps) for k, v in guide.items()}
    nets = {k: NetworkDecl.model_validate(v) for k, v in (NETS if networks is None else networks).items()}
    return Structure(m, g, "declared" if g is not None else "auto", nets, ps, consts)


def _all(st: Structure) -> None:
    check_model(st)
    check_guide(st, None)
    check_networks(st)


def test_a_good_structure_passes_and_the_guide_site_takes_the_models_global_flag():
    st = _structure({"w": {**Z, "global": True}, "z": Z, "x": X},
                    guide={"w": {"dist": "Normal", "loc": 0.0, "scale": 1.0},
                           "z": {"dist": "Normal", "loc": "enc.loc", "scale": "softplus(enc.scale)"}},
                    networks={"dec": {"inputs": ["z"]}, "enc": {"inputs": ["x"]}})
    _all(st)
    assert st.guide["w"].is_global and not st.guide["z"].is_global


@pytest.mark.parametrize("model,pattern", [
    ({"z": Z, "x": X, "y": {"dist": "Normal", "loc": 0.0, "scale": 1.0, "observed": "y"}},
     r"model\.y: the labels y are classes; observe them with Categorical or OneHotCategorical, not Normal"),
    ({"z": Z, "x": {**X, "enumerate": "parallel"}}, r"model\.x\.enumerate: x is always observed"),
    ({"c": {"dist": "Bernoulli", "probs": 0.5, "global": True}, "z": Z, "x": X},
     r"model\.c: a global discrete latent is not supported"),
    ({"z": Z, "w": {**Z, "loc": "dec", "global": True}, "x": X}, r"model\.w: a global site cannot use the network 'dec'"),
    ({"z": {**Z, "loc": "p.h"}, "x": X}, r"model\.z\.loc: p is a parameter; it has no \.h"),
])
def test_model_checks(model, pattern):
    with pytest.raises(SpecError, match=pattern):
        check_model(_structure(model, params={"p": {"shape": [2]}}))


@pytest.mark.parametrize("model,guide,pattern", [
    ({"z": Z, "d": {"dist": "Delta", "v": "z"}, "x": X}, {"z": Z, "d": Z},
     r"guide\.d: d is a Delta \(deterministic\) site of the model; it needs no guide"),
    ({"z": Z, "c": {"dist": "Bernoulli", "probs": 0.5, "enumerate": "parallel"}, "x": X},
     {"z": Z, "c": {"dist": "Bernoulli", "probs": 0.5}}, r"model\.c: enumerated in the model and declared in the guide"),
    ({"z": Z, "x": X}, {"z": {"dist": "Bernoulli", "probs": 0.5}},
     r"guide\.z: the guide's Bernoulli is discrete but the model's Normal is not"),
    ({"z": Z, "x": X}, {"z": {"dist": "MixtureSameFamily", "logits": [0.0], "components": 1,
                               "component": {"dist": "Normal", "loc": [[0.0]], "scale": 1.0}}},
     r"guide\.z: MixtureSameFamily cannot be a guide distribution"),
    ({"z": Z, "k": {"dist": "Poisson", "rate": 1.0}, "x": X}, {"z": Z},
     r"model\.k: Poisson is discrete with infinite support"),
    ({"w": {**Z, "global": True}, "z": Z, "x": X},
     {"w": {"dist": "Normal", "loc": "x", "scale": 1.0}, "z": Z},
     r"guide\.w: the guide of a global site cannot depend on the data or local sites"),
])
def test_guide_checks(model, guide, pattern):
    st = _structure(model, guide)
    check_model(st)
    with pytest.raises(SpecError, match=pattern):
        check_guide(st, None)


def test_a_global_latent_may_be_left_to_the_automatic_guide_of_the_globals():
    st = _structure({"w": {**Z, "global": True}, "z": Z, "x": X}, guide={"z": Z})
    check_model(st)
    check_guide(st, None)


def test_network_checks():
    st = _structure({"z": Z, "x": X}, networks={"dec": {"inputs": ["z"], "outputs": {"h": [0]}}})
    with pytest.raises(SpecError, match=r"networks\.dec\.outputs\.h: sizes must be at least 1, got \[0\]"):
        check_networks(st)
    st = _structure({"z": {**Z, "loc": "dec"}, "x": X}, networks={"dec": {"inputs": ["x"]}})
    with pytest.raises(SpecError, match=r"model\.z\.loc: the network dec reads 'x', which is defined after it"):
        check_networks(st)
    st = _structure({"z": Z, "x": X}, guide={"z": {"dist": "Normal", "loc": "enc", "scale": 1.0}},
                    networks={"dec": {"inputs": ["z"]}, "enc": {"inputs": ["z"]}})
    with pytest.raises(SpecError, match=r"guide\.z\.loc: the network enc reads z itself"):
        check_networks(st)


Y = {"dist": "Categorical", "logits": 0.0, "observed": "y"}


@pytest.mark.parametrize("per, extra, pattern", [
    ("w", {}, r"networks\.dec\.per: 'w' is not a site of the model"),
    ("z", {}, r"networks\.dec\.per: 'z' is a Normal site; one network per class needs a scalar Categorical site"),
    ("y", {"inputs": ["z", "y"]}, r"networks\.dec: 'y' is both in inputs and per"),
    ("y", {"kind": "conv", "hidden": [8]}, r"networks\.dec\.per: one network per class is for kinds mlp and linear"),
])
def test_per_class_network_checks(per, extra, pattern):
    st = _structure({"y": Y, "z": Z, "x": X}, networks={"dec": {"inputs": ["z"], "per": per, **extra}})
    with pytest.raises(SpecError, match=pattern):
        check_networks(st)


def test_a_per_class_network_reads_its_label_like_an_input():
    """The label that chooses the network is read like an input: defined before the site that uses it."""
    _all(_structure({"y": Y, "z": Z, "x": X}, networks={"dec": {"inputs": ["z"], "per": "y"}}))
    st = _structure({"z": {**Z, "loc": "net"}, "y": Y, "x": {**X, "logits": "dec"}},
                    networks={"net": {"inputs": ["x"], "per": "y"}, "dec": {"inputs": ["z"]}})
    with pytest.raises(SpecError, match=r"model\.z\.loc: the network net reads '(x|y)', which is defined after it"):
        check_networks(st)
    st = _structure({"w": {**Z, "loc": 0.0}, "z": {**Z, "loc": "net"}, "y": Y, "x": X},
                    networks={"net": {"inputs": ["w"], "per": "y"}, "dec": {"inputs": ["z"]}})
    with pytest.raises(SpecError, match=r"model\.z\.loc: the network net reads 'y', which is defined after it"):
        check_networks(st)
