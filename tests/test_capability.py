"""What each routine requires of a family (ppgen.inference.capability): the declared protocols, the check
made before a run folder is written, and the zoo recipes that fit each family."""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

import pytest
import torch

from ppgen import registry
from ppgen.inference.capability import check_fit, fitting_recipes, members, missing
from ppgen.registry import load_recipe
from ppgen.spec import SpecError

#: The zoo recipes (by stem) that fit each registered family: what the declarations must give.
FITS = {
    "vae": {"svi", "iwae", "mle"},
    "pixelcnn": {"svi", "iwae", "mle"},
    "gated_pixelcnn": {"svi", "iwae", "mle"},
    "pixelrnn": {"svi", "iwae", "mle"},
    "gan": {"adversarial", "adversarial_1d", "adversarial_toy", "hinge", "minimax", "wgan_gp"},
    "rbm": {"cd", "pcd"},
    "gbrbm": {"cd", "pcd"},
    "bm": {"cd", "pcd"},
    "dbn": {"layerwise"},
    "program": {"svi", "iwae", "mle", "em", "ssvae"},
    "python": {"svi", "iwae", "mle"},
    "gmm": {"em", "map_enum", "nuts"},
    "hmm": {"em", "map_enum", "nuts"},
}


def test_every_family_is_listed_here() -> None:
    assert set(registry.family_names()) == set(FITS)


@pytest.mark.parametrize("family", sorted(FITS))
def test_zoo_recipes_that_fit_each_family(family: str) -> None:
    cls = registry.family(family)
    found = {p.stem for p in fitting_recipes(cls, registry.repo_folder("inference"))}
    assert found == FITS[family]
    # The default routine, with its default recipe, fits.
    check_fit(cls, load_recipe(None, default=cls.default_routine))


class Needs(Protocol):
    """a test requirement"""

    flag: ClassVar[bool]
    net: torch.nn.Module

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None, *, n_total: int | None = None) -> Any: ...

    @property
    def ready(self) -> bool:
        """whether it is ready"""
        ...


def test_protocol_members_and_what_is_missing() -> None:
    assert list(members(Needs)) == ["flag", "net", "model", "ready"]

    class Nothing:
        pass

    gaps = missing(Nothing, Needs)
    assert [g.split(" ")[0].split("(")[0] for g in gaps] == ["flag", "net", "model", "ready"]
    assert "model(x, y=None, *, n_total=None)" in gaps[2]

    class Partial:
        flag = False  # declared, but not true
        net: torch.nn.Module  # a class-level annotation declares what __init__ builds

        def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None: ...

        @property
        def ready(self) -> bool:
            return True

    gaps = missing(Partial, Needs)
    assert gaps[0] == "flag = True" and "takes no n_total= argument" in gaps[1] and len(gaps) == 2

    class Full(Partial):
        flag = True

        def model(self, x: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> None: ...

    assert missing(Full, Needs) == []
    # On a built object, a data member must be there, not only declared.
    assert [g.split(" ")[0] for g in missing(Full(), Needs)] == ["net"]


def test_positional_arguments_are_counted() -> None:
    class Two(Protocol):
        def log_joint(self, x: torch.Tensor, theta: Any) -> torch.Tensor: ...

    class One:
        def log_joint(self, x: torch.Tensor) -> torch.Tensor: ...

    class Star:
        def log_joint(self, *args: Any) -> torch.Tensor: ...

    assert "takes 1 positional arguments, the routine passes 2" in missing(One, Two)[0]
    assert missing(Star, Two) == []


def test_the_message_names_routine_family_missing_and_fitting_recipes() -> None:
    with pytest.raises(SpecError) as err:
        check_fit(registry.family("rbm"), load_recipe({"routine": "svi"}))
    msg = str(err.value)
    assert msg.startswith("routine 'svi' cannot fit the 'rbm' family:")
    assert "variational posterior" in msg and "variational_guide = True" in msg
    assert "zoo recipes that fit rbm (--inference NAME): cd, pcd" in msg and "default routine is 'cd'" in msg


def test_a_recipe_option_can_add_a_requirement() -> None:
    """enum_svi's closed form (fused: true) needs map_loss; a family with the enumerable model and guide
    but no closed form fits fused: false only."""
    gmm = registry.family("gmm")

    class NoClosedForm(gmm):  # type: ignore[misc, valid-type]
        map_loss = None

    check_fit(NoClosedForm, load_recipe({"routine": "enum_svi", "fused": False}))
    with pytest.raises(SpecError, match=r"(?s)closed form.*map_loss\(x, \*, n_total=None\)"):
        check_fit(NoClosedForm, load_recipe({"routine": "enum_svi", "fused": True}))


def test_routine_init_checks_the_built_model() -> None:
    """A routine started by hand (not through the loop) makes the same check on the model it gets."""
    from ppgen.inference.svi import SVI, SVIConfig

    model = registry.family("rbm")(load_spec_rbm(), _info())
    with pytest.raises(SpecError, match="routine 'svi' cannot fit the 'rbm' family"):
        SVI(SVIConfig()).init(model)


def load_spec_rbm() -> Any:
    from ppgen.registry import load_spec

    return load_spec({"family": "rbm", "hidden": 3, "data": {"name": "digits"}})


def _info() -> Any:
    from ppgen.data.core import DataInfo

    return DataInfo((1, 8, 8), "binary", 10)


@pytest.mark.parametrize("family", sorted(FITS))
def test_every_refusal_names_the_recipes_that_fit_by_zoo_name(family: str) -> None:
    """An installed ppgen has no ``inference/`` folder: a refusal names the recipes that fit as
    ``--inference`` takes them, by zoo name, and never by a checkout's path."""
    from ppgen import zoo

    cls = registry.family(family)
    refused = 0
    for name in zoo.names("inference"):
        try:
            config = load_recipe(name)
            check_fit(cls, config)
        except SpecError as err:
            msg = str(err)
            refused += 1
            assert "inference/" not in msg and ".yaml" not in msg, msg
            line = next(x for x in msg.splitlines() if "that fit" in x)
            assert line.strip().startswith(f"zoo recipes that fit {family} (--inference NAME): "), msg
            named = line.split(": ", 1)[1].split(", ")
            assert set(named) == FITS[family] and all(zoo.path("inference", n) is not None for n in named), msg
    assert refused == len(zoo.names("inference")) - len(FITS[family])
