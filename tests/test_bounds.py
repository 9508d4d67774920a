"""ppgen.bounds: the table from a recipe's ``elbo`` to the bound it names, and the bounds as values."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ppgen.bounds import BOUNDS, Bound, ImportanceWeighted, MeanField, Trace, as_bound
from ppgen.spec import SpecError


def test_the_table_holds_the_three_bounds_under_their_names() -> None:
    assert BOUNDS == {"trace": Trace, "meanfield": MeanField, "iwae": ImportanceWeighted}
    assert all(cls.name == name for name, cls in BOUNDS.items())


@pytest.mark.parametrize("name, cls", [("trace", Trace), ("meanfield", MeanField), ("iwae", ImportanceWeighted)])
def test_a_name_gives_its_bound_with_the_particles_asked_for(name: str, cls: type[Bound]) -> None:
    bound = as_bound(name, 7)
    assert type(bound) is cls and bound.num_particles == 7
    assert as_bound(name).num_particles == 1


def test_a_bound_is_returned_as_it_is_and_its_own_particles_count() -> None:
    given = ImportanceWeighted(5)
    assert as_bound(given) is given
    assert as_bound(given, 3) is given and as_bound(given, 3).num_particles == 5


def test_bounds_are_values_that_differ_by_kind_and_particles() -> None:
    assert Trace(2) == Trace(2) and hash(Trace(2)) == hash(Trace(2))
    assert Trace(2) != MeanField(2) and Trace(2) != Trace(3)
    assert len({Trace(1), MeanField(1), ImportanceWeighted(1), Trace(1)}) == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        Trace(1).num_particles = 2  # type: ignore[misc]


@pytest.mark.parametrize("elbo", ["Trace", "elbo", "", "trace "])
def test_an_unknown_name_is_refused_with_the_names_accepted(elbo: str) -> None:
    with pytest.raises(SpecError) as err:
        as_bound(elbo)
    assert str(err.value) == f"elbo: {elbo!r} is not one of trace, meanfield, iwae"


@pytest.mark.parametrize("elbo", [None, ["trace"], {"trace": 1}, 3])
def test_a_value_that_is_neither_a_bound_nor_a_name_is_refused(elbo: object) -> None:
    with pytest.raises(SpecError, match=r"^elbo: .* is not one of trace, meanfield, iwae$"):
        as_bound(elbo)  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [0, -1, 1.5, 2.0, True, "2", None])
def test_a_bound_needs_a_positive_whole_number_of_particles(n: object) -> None:
    with pytest.raises(SpecError) as err:
        as_bound("iwae", n)  # type: ignore[arg-type]
    assert str(err.value) == f"num_particles: expected an integer >= 1, got {n!r}"
    with pytest.raises(SpecError, match="num_particles: expected an integer >= 1"):
        Trace(n)  # type: ignore[arg-type]


def test_a_family_refuses_zero_particles_rather_than_drawing_one() -> None:
    # The check is the bound's, so it holds whichever family computes the bound.
    from ppgen.registry import build

    model = build({"family": "vae", "data": {"name": "toy2d", "distribution": "ring8", "n": 40}, "latent": {"dim": 1}, "likelihood": {"kind": "gaussian"},
                   "encoder": {"hidden": [4]}, "decoder": {"hidden": [4]}})
    x = torch.zeros(3, 2)
    assert torch.isfinite(model.fused_loss(x, "trace", 1))
    with pytest.raises(SpecError, match="num_particles"):
        model.fused_loss(x, "trace", 0)
