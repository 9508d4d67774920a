"""Specs built in Python behave like YAML ones: the same checks, the same messages."""

from __future__ import annotations

import pytest

import ppgen
from ppgen.models.vae import VAESpec
from ppgen.registry import load_recipe, load_spec
from ppgen.overrides import apply_overrides
from ppgen.spec import SpecError


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


# --------------------------------------------------------------------------- project-wide rules of a spec


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), "inf", "nan", 1e39, 1e300, 1e-40])
def test_numbers_are_finite_and_within_float32(value) -> None:
    with pytest.raises(ValueError, match="finite number|float32's range"):
        load_recipe({"routine": "svi", "optimizer": {"lr": value}})
    with pytest.raises(SpecError, match="likelihood.scale"):
        load_spec({"family": "vae", "likelihood": {"kind": "gaussian", "scale": value}})


def test_booleans_only_where_a_boolean_goes() -> None:
    with pytest.raises(SpecError, match="latent.dim: expected an integer, not a boolean"):
        load_spec({"family": "vae", "latent": {"dim": True}})
    with pytest.raises(SpecError, match="encoder.hidden: expected an integer in each entry, not a boolean"):
        load_spec({"family": "vae", "encoder": {"hidden": [8, False]}})
    with pytest.raises(SpecError, match="optimizer.lr: expected a number, not a boolean"):
        load_recipe({"routine": "svi", "optimizer": {"lr": True}})
    for value in (1, 0, "yes"):
        with pytest.raises(SpecError, match="fused: expected true or false"):
            load_recipe({"routine": "svi", "fused": value})
    assert load_recipe({"routine": "svi", "fused": False}).fused is False
    with pytest.raises(SpecError, match=r"2\*\*63"):
        load_spec({"family": "vae", "data": {"limit": 2**64}})


def test_model_copy_checks_the_result() -> None:
    recipe = load_recipe({"routine": "svi", "snapshots": [3], "epochs": 5})
    assert recipe.model_copy(update={"epochs": 4}).epochs == 4
    with pytest.raises(SpecError, match=r"SVIConfig with epochs=0 is invalid:\n  epochs: Input should be greater than or equal to 1"):
        recipe.model_copy(update={"epochs": 0})
    with pytest.raises(SpecError, match=r"epochs: integers must lie within"):
        recipe.model_copy(update={"epochs": 10**30})


def test_optimizer_betas_and_the_keys_each_optimizer_reads() -> None:
    with pytest.raises(SpecError, match=r"optimizer.betas.0: Input should be less than 1 \(got 1.5\)"):
        load_recipe({"routine": "svi", "optimizer": {"betas": [1.5, 0.999]}})
    with pytest.raises(SpecError, match="optimizer.betas.1: Input should be greater than or equal to 0"):
        load_recipe({"routine": "svi", "optimizer": {"betas": [0.5, -0.1]}})
    with pytest.raises(SpecError, match="optimizer.momentum does not apply to optimizer.name 'adam'"):
        load_recipe({"routine": "svi", "optimizer": {"momentum": 0.9}})
    with pytest.raises(SpecError, match="optimizer.betas does not apply to optimizer.name 'sgd'"):
        load_recipe({"routine": "svi", "optimizer": {"name": "sgd", "betas": [0.5, 0.9]}})
    # A resolved recipe writes every default out; defaults are not "set".
    dumped = load_recipe({"routine": "svi", "optimizer": {"name": "sgd", "momentum": 0.9}}).model_dump()
    assert load_recipe(dumped).optimizer.momentum == 0.9


def test_snapshots_from_1_to_the_epochs() -> None:
    from ppgen.spec import check_snapshots

    with pytest.raises(SpecError, match="snapshots.0: Input should be greater than or equal to 1"):
        load_recipe({"routine": "svi", "snapshots": [-1]})
    # A recipe may list snapshots beyond its own epochs (a fit's --epochs may go further) ...
    recipe = load_recipe({"routine": "svi", "snapshots": [5, 11], "epochs": 10})
    # ... but a fit that would never reach one is refused.
    with pytest.raises(SpecError, match=r"snapshots: epoch 11 is after the last epoch of this fit \(10"):
        check_snapshots(recipe)
    check_snapshots(recipe.model_copy(update={"epochs": 11}))


# --------------------------------------------------------------------------- YAML and messages


def test_yaml_duplicate_keys_are_refused_with_their_lines(tmp_path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("family: vae\nlatent:\n  dim: 2\n  prior: normal\n  dim: 3\n")
    with pytest.raises(SpecError, match=r"line 5, column 3: the key 'dim' appears twice in one mapping \(first on line 3\)"):
        load_spec(path)
    # A merge key (<<) is not a repetition: the explicit key overrides the merged one, as YAML says.
    path.write_text("family: vae\nbase: &b {dim: 3}\n".replace("base: &b {dim: 3}\n", "") +
                    "latent:\n  <<: {dim: 3}\n  dim: 4\n")
    assert load_spec(path).latent.dim == 4


def test_yaml_nesting_and_aliases_are_bounded() -> None:
    from ppgen.spec import MAX_DEPTH
    from ppgen.spec_yaml import MAX_VALUES, parse_yaml
    import yaml

    assert parse_yaml("a: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)) is not None
    with pytest.raises(yaml.YAMLError, match=f"nested more than {MAX_DEPTH} levels"):
        parse_yaml("a: " + "[" * 20000 + "]" * 20000)
    bomb = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9))
    with pytest.raises(yaml.YAMLError, match=f"more than {MAX_VALUES} values once its aliases"):
        parse_yaml(bomb)
    with pytest.raises(yaml.YAMLError, match="contains it"):
        parse_yaml("a: &a [1, *a]")
    # A few aliases that share a section are fine.
    assert parse_yaml("e: &n {hidden: [8]}\nd: *n\n") == {"e": {"hidden": [8]}, "d": {"hidden": [8]}}


def test_messages_quote_values_cut_short() -> None:
    from ppgen.spec import MAX_ECHO, MAX_PROBLEMS, short

    assert len(short("x" * 10**6)) <= MAX_ECHO
    nested: list = []
    for _ in range(200):
        nested = [nested, nested]
    assert len(short(nested)) <= MAX_ECHO
    with pytest.raises(SpecError) as err:
        load_spec({"family": "vae", **{f"k{i}": 1 for i in range(500)}})
    lines = str(err.value).splitlines()
    assert len(lines) == 1 + MAX_PROBLEMS + 1 and lines[-1] == f"  ... and {500 - MAX_PROBLEMS} more problems"
    with pytest.raises(SpecError) as err:
        load_spec({"family": "vae", "latent": {"dim": "9" * 100_000 + "x"}})
    assert len(str(err.value)) < 1000


def test_set_errors_name_the_set(tmp_path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("family: vae\nlatent: {dim: 2}\n")
    with pytest.raises(SpecError) as err:
        load_spec(path, ["latent.dim=0"])
    assert str(err.value) == ("--set is invalid:\n  latent.dim: Input should be greater than or equal to 1 (got 0), "
                              "from --set latent.dim=0")
    path.write_text("family: vae\nlatent: {dim: -2}\n")
    with pytest.raises(SpecError) as err:
        load_spec(path, ["name=x"])
    assert str(err.value).startswith(f"{path} is invalid:") and "--set" not in str(err.value)
    with pytest.raises(SpecError, match=r"optimizer.lr: .* from --set inference.optimizer.lr=-1"):
        load_recipe(None, ["optimizer.lr=-1"])
