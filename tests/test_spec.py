"""Specs built in Python behave like YAML ones: the same checks, the same messages."""

from __future__ import annotations

import pytest

import ppgen
from ppgen.models.vae import VAESpec
from ppgen.spec import SpecError, apply_overrides, load_recipe, load_spec


def test_python_spec_equals_yaml_spec(tmp_path) -> None:
    built = VAESpec(name="vae", data={"name": "digits"}, latent={"dim": 2})
    path = tmp_path / "s.yaml"
    path.write_text("family: vae\nname: vae\ndata: {name: digits}\nlatent: {dim: 2}\n")
    assert load_spec(path) == built
    assert load_spec(built) == built
    assert load_spec(built.model_dump()) == built


def test_overrides_reach_nested_keys_and_keep_checks() -> None:
    spec = load_spec({"family": "vae"}, ["latent.dim=7", "encoder.hidden=[64, 32]", "data.name=digits"])
    assert spec.latent.dim == 7 and spec.encoder.hidden == [64, 32] and spec.data.name == "digits"
    with pytest.raises(SpecError, match=r"latent.dim: Input should be less than or equal to 4096 \(got 5000\)"):
        load_spec({"family": "vae"}, ["latent.dim=5000"])
    with pytest.raises(SpecError, match="latent.dim is a value"):
        apply_overrides({"latent": {"dim": 2}}, ["latent.dim.x=1"])


def test_assignment_is_checked_too() -> None:
    spec = VAESpec()
    with pytest.raises(ValueError):
        spec.latent.dim = -1


def test_recipe_defaults_and_errors() -> None:
    recipe = load_recipe(None)
    assert recipe.routine == "svi" and recipe.elbo == "meanfield"
    with pytest.raises(SpecError, match="unknown routine 'sgd'"):
        load_recipe({"routine": "sgd"})
    with pytest.raises(SpecError, match="optimizer.lr: Input should be greater than 0"):
        load_recipe({"routine": "svi", "optimizer": {"lr": 0}})
    with pytest.raises(SpecError, match="accepted families: .*vae"):
        load_spec({"latent": {"dim": 2}})


def test_build_from_spec_reads_the_data_shape() -> None:
    model = ppgen.build({"family": "vae", "data": {"name": "toy2d", "distribution": "moons"},
                         "likelihood": {"kind": "gaussian"}})
    assert model.event_shape == (2,)
    with pytest.raises(SpecError, match="needs binary data"):
        ppgen.build({"family": "vae", "data": {"name": "toy2d", "distribution": "moons"}})
