"""The spec sections the energy families share (ppgen.models.energy.spec): their defaults, the bounds each
key accepts, and refusals as SpecError naming the dotted key, alone and inside a family's spec."""

from __future__ import annotations

import pytest

import ppgen
from ppgen.models.energy.spec import AISSpec, InitSpec, PriorSpec, SamplingSpec
from ppgen.spec import SpecError, validate


def test_defaults_are_the_documented_ones() -> None:
    init, prior, ais, sampling = InitSpec(), PriorSpec(), AISSpec(), SamplingSpec()
    assert (init.weight_std, init.visible_bias, init.hidden_bias) == (0.01, "data", 0.0)
    assert prior.weight_decay == 0.0  # a flat prior
    assert (ais.runs, ais.steps) == (100, 10_000)
    assert (sampling.steps, sampling.chains, sampling.warmup, sampling.draws) == (1000, 4, 500, 500)
    assert sampling.quality_samples is None  # left out: the count every family uses


# Each key at its extremes: (section, key, accepted values, refused values).
BOUNDS = [
    (InitSpec, "weight_std", [1e-6, 10.0], [0.0, -0.01, 10.5]),
    (InitSpec, "visible_bias", ["data", "zero"], ["mean", "", 0]),
    (InitSpec, "hidden_bias", [-20.0, 0.0, 20.0], [-20.5, 21.0]),
    (PriorSpec, "weight_decay", [0.0, 1.0], [-1e-4, 1.5]),
    (AISSpec, "runs", [2, 100_000], [1, 0, 100_001]),
    (AISSpec, "steps", [10, 1_000_000], [9, 1_000_001]),
    (SamplingSpec, "steps", [1, 1_000_000], [0, 1_000_001]),
    (SamplingSpec, "chains", [1, 64], [0, 65]),
    (SamplingSpec, "warmup", [0, 1_000_000], [-1, 1_000_001]),
    (SamplingSpec, "draws", [4, 100_000], [3, 100_001]),
    (SamplingSpec, "quality_samples", [None, 10, 100_000], [9, 100_001]),
]


@pytest.mark.parametrize("section, key, good, bad", BOUNDS, ids=[f"{s.__name__}.{k}" for s, k, _, _ in BOUNDS])
def test_each_key_accepts_its_range_and_refuses_outside_it_naming_the_key(section, key, good, bad) -> None:
    for value in good:
        assert getattr(validate(section, {key: value}, "section"), key) == value
    for value in bad:
        with pytest.raises(SpecError) as err:
            validate(section, {key: value}, "section")
        assert f"  {key}: " in str(err.value), str(err.value)
        assert f"(got {value!r})" in str(err.value) or f"(got {value})" in str(err.value), str(err.value)


@pytest.mark.parametrize("section", [InitSpec, PriorSpec, AISSpec, SamplingSpec])
def test_an_unknown_key_is_refused_with_the_accepted_ones(section) -> None:
    with pytest.raises(SpecError, match="stepz: unknown key; accepted keys here: ") as err:
        validate(section, {"stepz": 1}, "section")
    for key in section.model_fields:
        assert key in str(err.value)


def test_infinities_and_booleans_are_refused_where_a_number_is_expected() -> None:
    with pytest.raises(SpecError, match="weight_std"):
        validate(InitSpec, {"weight_std": float("inf")}, "init")
    with pytest.raises(SpecError, match="hidden_bias"):
        validate(InitSpec, {"hidden_bias": float("nan")}, "init")
    with pytest.raises(SpecError, match="runs"):
        validate(AISSpec, {"runs": True}, "ais")


@pytest.mark.parametrize("family", ["rbm", "bm", "dbn"])
def test_inside_a_family_spec_the_message_names_the_dotted_key(family: str) -> None:
    base = {"family": family, "data": {"name": "digits"}}
    for section, key, value in [("init", "weight_std", 0), ("prior", "weight_decay", 2),
                                ("ais", "steps", 5), ("sampling", "draws", 1)]:
        with pytest.raises(SpecError, match=rf"  {section}\.{key}: .*\(got {value}\)"):
            ppgen.load_spec({**base, section: {key: value}})
    spec = ppgen.load_spec({**base, "init": {"visible_bias": "zero", "hidden_bias": -4},
                            "sampling": {"quality_samples": 50}})
    assert isinstance(spec.init, InitSpec) and isinstance(spec.sampling, SamplingSpec)
    assert (spec.init.visible_bias, spec.init.hidden_bias, spec.sampling.quality_samples) == ("zero", -4.0, 50)


def test_assignment_is_checked_like_loading() -> None:
    s = SamplingSpec()
    with pytest.raises(ValueError, match="chains"):
        s.chains = 0
    assert s.chains == 4
