"""The spec sections the autoregressive image families share (ppgen.models.autoregressive.spec): the pixel
likelihood and weight prior sections with their refusals naming the key, the rule that images are needed,
and the odd-kernel rule."""

from __future__ import annotations

import pytest

import ppgen
from ppgen.models.autoregressive.spec import PixelLikelihoodSpec, PixelModelSpec, WeightPriorSpec, odd_kernel
from ppgen.spec import SpecError, validate


def test_pixel_likelihood_defaults_and_bounds() -> None:
    s = PixelLikelihoodSpec()
    assert (s.kind, s.levels, s.scale) == ("auto", None, None)  # left out: they follow the data
    assert validate(PixelLikelihoodSpec, {"kind": "categorical", "levels": 4096, "scale": 0.5}, "l").levels == 4096
    for key, value in (("levels", 1), ("levels", 4097), ("scale", 0), ("scale", -2.0), ("kind", "gaussian")):
        with pytest.raises(SpecError, match=rf"  {key}: .*\(got {value!r}\)"):
            validate(PixelLikelihoodSpec, {"kind": "categorical", key: value}, "likelihood")


@pytest.mark.parametrize("extra", [{"levels": 4}, {"scale": 255.0}])
def test_levels_and_scale_are_refused_with_a_bernoulli_likelihood(extra: dict) -> None:
    with pytest.raises(SpecError, match="likelihood.levels and likelihood.scale apply to kind 'categorical'"):
        validate(PixelLikelihoodSpec, {"kind": "bernoulli", **extra}, "likelihood")
    assert validate(PixelLikelihoodSpec, {"kind": "auto", **extra}, "likelihood").kind == "auto"


def test_weight_prior_keys_apply_only_to_the_normal_prior() -> None:
    p = WeightPriorSpec()
    assert (p.kind, p.scale, p.num_data) == ("none", 1.0, None)
    assert validate(WeightPriorSpec, {"kind": "normal", "scale": 0.1, "num_data": 7}, "prior").num_data == 7
    with pytest.raises(SpecError, match="prior.scale applies only with prior.kind 'normal'"):
        validate(WeightPriorSpec, {"scale": 2.0}, "prior")
    with pytest.raises(SpecError, match="prior.num_data applies only with prior.kind 'normal'"):
        validate(WeightPriorSpec, {"num_data": 10}, "prior")
    # the defaults written out are not a change
    assert validate(WeightPriorSpec, {"kind": "none", "scale": 1.0}, "prior").kind == "none"
    for key, value in (("scale", 0), ("num_data", 0), ("kind", "laplace")):
        with pytest.raises(SpecError, match=rf"  {key}: "):
            validate(WeightPriorSpec, {"kind": "normal", key: value}, "prior")


@pytest.mark.parametrize("family", ["pixelcnn", "gated_pixelcnn", "pixelrnn"])
def test_every_pixel_family_takes_the_shared_sections_and_names_their_keys(family: str) -> None:
    spec = ppgen.load_spec({"family": family, "conditional": True, "prior": {"kind": "normal", "scale": 0.5},
                            "likelihood": {"kind": "bernoulli"}})
    assert isinstance(spec, PixelModelSpec)
    assert (spec.conditional, spec.prior.scale, spec.likelihood.kind) == (True, 0.5, "bernoulli")
    assert ppgen.load_spec({"family": family}).conditional is False
    with pytest.raises(SpecError, match=r"  likelihood\.levels: .*\(got 1\)"):
        ppgen.load_spec({"family": family, "likelihood": {"levels": 1}})
    with pytest.raises(SpecError, match=r"  prior\.kind: "):
        ppgen.load_spec({"family": family, "prior": {"kind": "flat"}})
    with pytest.raises(SpecError, match=rf"family '{family}' models images; data.name 'toy1d' holds points"):
        ppgen.load_spec({"family": family, "data": {"name": "toy1d"}})
    with pytest.raises(SpecError, match="conditional"):
        ppgen.load_spec({"family": family, "conditional": "yes"})


def test_odd_kernel() -> None:
    assert [odd_kernel(k, None) for k in (1, 3, 31)] == [1, 3, 31]
    for k in (0, 2, 30):
        with pytest.raises(ValueError, match=f"must be odd so that a masked kernel has a centre pixel, got {k}"):
            odd_kernel(k, None)
    with pytest.raises(SpecError, match=r"net\.first_kernel: must be odd"):
        ppgen.load_spec({"family": "pixelcnn", "net": {"first_kernel": 6}})
