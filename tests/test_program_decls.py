"""The sections of a program's spec: defaults, the ``global`` alias, strictness and the bounds of each key."""

from __future__ import annotations

import pydantic
import pytest

from ppgen.program.decls import AutoNetworkDecl, NetworkDecl, ParamDecl, SiteDecl
from ppgen.program.dequantize import DequantizeDecl


def test_network_defaults_and_refusals():
    net = NetworkDecl(inputs=["z"])
    assert (net.kind, net.hidden, net.activation, net.outputs) == ("mlp", [400], "relu", None)
    with pytest.raises(pydantic.ValidationError, match="inputs"):
        NetworkDecl(inputs=[])
    with pytest.raises(pydantic.ValidationError, match="kind"):
        NetworkDecl(inputs=["z"], kind="transformer")
    with pytest.raises(pydantic.ValidationError, match="hiden"):
        NetworkDecl.model_validate({"inputs": ["z"], "hiden": [3]})


def test_param_defaults_and_bounds():
    p = ParamDecl()
    assert (p.shape, p.init, p.init_std, p.constraint) == ([], 0.0, 0.0, "real")
    assert ParamDecl(init=[[1.0, 2.0]], constraint="simplex").init == [[1.0, 2.0]]
    with pytest.raises(pydantic.ValidationError, match="init_std"):
        ParamDecl(init_std=-0.1)
    with pytest.raises(pydantic.ValidationError, match="constraint"):
        ParamDecl(constraint="negative")


def test_site_reads_global_by_its_alias_and_keeps_the_distributions_keys():
    site = SiteDecl.model_validate({"dist": "Normal", "loc": 0.0, "scale": "s", "global": True, "shape": [2]})
    assert site.global_ is True and site.shape == [2]
    assert site.model_extra == {"loc": 0.0, "scale": "s"}
    assert site.model_dump(exclude_none=True)["global"] is True
    assert SiteDecl(dist="Normal").global_ is False


def test_site_refuses_bad_observed_enumerate_and_dequantize():
    with pytest.raises(pydantic.ValidationError, match="observed"):
        SiteDecl.model_validate({"dist": "Normal", "observed": "z"})
    with pytest.raises(pydantic.ValidationError, match="enumerate"):
        SiteDecl.model_validate({"dist": "Bernoulli", "enumerate": "sequential"})
    with pytest.raises(pydantic.ValidationError, match="dequantize"):
        SiteDecl.model_validate({"dist": "Normal", "dequantize": "gaussian"})
    deq = SiteDecl.model_validate({"dist": "Normal", "dequantize": {"levels": 17, "scale": 16}}).dequantize
    assert isinstance(deq, DequantizeDecl) and (deq.levels, deq.scale) == (17, 16.0)


def test_auto_network_is_strict():
    assert AutoNetworkDecl().hidden == [400]
    with pytest.raises(pydantic.ValidationError, match="inputs"):
        AutoNetworkDecl.model_validate({"inputs": ["x"]})
