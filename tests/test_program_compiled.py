"""A compiled program's derived facts (which sites are latent, a site's parents, when log p(x) is exact,
which KL terms are closed form, when labels are required) and its parameter and constant stores."""

from __future__ import annotations

import math

import torch
from torch.distributions import constraints

from ppgen.data.core import DataInfo
from ppgen.program.compile import compile_program
from ppgen.program.compiled import ConstSet, ParamSet
from ppgen.program.schema import ProgramSpec

POINTS = DataInfo((2,), "continuous")
LABELLED = DataInfo((2,), "continuous", 3)


def _compile(model: dict, info: DataInfo = POINTS, **rest):
    spec = ProgramSpec.model_validate({"family": "program", "data": {"name": "toy2d"}, "model": model, **rest})
    return compile_program(spec, info)


def test_parents_pass_through_networks_and_deterministic_sites():
    p = _compile({"a": {"dist": "Normal", "loc": 0.0, "scale": 1.0, "shape": [2]},
                  "b": {"dist": "Normal", "loc": 0.0, "scale": 1.0, "shape": [2]},
                  "d": {"dist": "Delta", "v": "a * 2"},
                  "z": {"dist": "Normal", "loc": "net", "scale": "softplus(d)", "shape": [2]},
                  "x": {"dist": "Normal", "loc": "z", "scale": 1.0, "observed": "x"}},
                 networks={"net": {"inputs": ["b"], "hidden": [3]}})
    by = p.model_by_name
    assert p.parents(by["z"]) == {"b", "d", "a"}
    assert p.parents(by["x"]) == {"z"}
    assert by["d"].deterministic and not by["d"].latent and not by["x"].latent and by["a"].latent
    assert p.x_site is by["x"] and p.y_site is None


def test_log_px_is_exact_only_when_nothing_is_sampled():
    mixture = {"c": {"dist": "Categorical", "logits": [0.0, 0.0], "enumerate": "parallel"},
               "x": {"dist": "Normal", "loc": "onehot(c, 2) @ mu", "scale": 1.0, "observed": "x"}}
    p = _compile(mixture, params={"mu": {"shape": [2, 2]}})
    assert p.exact and p.enumerated == ["c"] and p.always_enumerates and p.guide == []
    p = _compile({"z": {"dist": "Normal", "loc": 0.0, "scale": 1.0, "shape": [2]},
                  "x": {"dist": "Normal", "loc": "z", "scale": 1.0, "observed": "x"}})
    assert not p.exact and not p.always_enumerates
    p = _compile({"z": {"dist": "Normal", "loc": 0.0, "scale": 1.0, "shape": [2]},
                  "x": {"dist": "Normal", "loc": "z", "scale": 1.0, "observed": "x"}}, guide="delta")
    assert not p.exact and p.delta_locals == ["z"]
    # a global latent with a point estimate is plugged in: exact
    p = _compile({"m": {"dist": "Normal", "loc": 0.0, "scale": 1.0, "shape": [2], "global": True},
                  "x": {"dist": "Normal", "loc": "m", "scale": 1.0, "observed": "x"}}, guide_globals="delta")
    assert p.exact and p.has_global_latents and [s.name for s in p.global_guide] == ["m"]


def test_closed_form_kl_only_where_the_guide_draws_the_parents_first():
    model = {"a": {"dist": "Normal", "loc": 0.0, "scale": 1.0, "shape": [2]},
             "b": {"dist": "Normal", "loc": "a", "scale": 1.0},
             "x": {"dist": "Normal", "loc": "b", "scale": 1.0, "observed": "x"}}
    q = {"dist": "Normal", "loc": 0.0, "scale": 1.0}
    assert _compile(model, guide={"a": q, "b": q}).kl_ok == {"a", "b"}
    assert _compile(model, guide={"b": q, "a": q}).kl_ok == {"a"}


def test_labels_are_required_when_the_guide_reads_y_without_a_site_for_it():
    model = {"y": {"dist": "Categorical", "logits": [0.0, 0.0, 0.0], "observed": "y"},
             "z": {"dist": "Normal", "loc": 0.0, "scale": 1.0, "shape": [2]},
             "x": {"dist": "Normal", "loc": "z", "scale": 1.0, "observed": "x"}}
    reads_y = {"z": {"dist": "Normal", "loc": "enc.loc", "scale": "softplus(enc.scale)"}}
    p = _compile(model, LABELLED, guide=reads_y, networks={"enc": {"inputs": ["x", "y"], "hidden": [4]}})
    assert p.labels_required and p.y_site.name == "y"
    p = _compile(model, LABELLED, guide=reads_y, networks={"enc": {"inputs": ["x"], "hidden": [4]}})
    assert not p.labels_required


def test_a_parameter_is_stored_unconstrained_and_read_back_constrained():
    ps = ParamSet()
    ps.add("s", torch.tensor([1.0, 2.0]), constraints.positive)
    ps.add("p", torch.tensor([0.2, 0.3, 0.5]), constraints.simplex)
    torch.testing.assert_close(ps.s.detach(), torch.tensor([0.0, math.log(2.0)]))
    torch.testing.assert_close(ps.value("s"), torch.tensor([1.0, 2.0]))
    assert ps.p.shape == (2,)
    torch.testing.assert_close(ps.value("p"), torch.tensor([0.2, 0.3, 0.5]))
    torch.manual_seed(0)
    ps.add("n", torch.zeros(1000), constraints.real, noise=0.5)
    assert 0.45 < float(ps.n.detach().std()) < 0.55
    assert set(dict(ps.named_parameters())) == {"s", "p", "n"}


def test_constants_are_buffers_that_are_not_saved():
    cs = ConstSet()
    cs.add("#c0", torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(cs.value("#c0"), torch.tensor([1.0, 2.0]))
    assert "c0" in dict(cs.named_buffers()) and cs.state_dict() == {}


def test_build_modules_makes_the_declared_networks_and_parameters():
    p = _compile({"z": {"dist": "Normal", "loc": 0.0, "scale": 1.0, "shape": [3]},
                  "x": {"dist": "Normal", "loc": "dec", "scale": {"param": 0.5, "constraint": "positive"},
                        "observed": "x"}}, networks={"dec": {"inputs": ["z"], "hidden": [4]}})
    nets, params, consts = p.build_modules()
    assert set(nets) == {"dec", "auto__encoder"}
    torch.testing.assert_close(params.value("x__scale"), torch.tensor(0.5))
    assert len(list(consts.buffers())) == len(p.constants)
