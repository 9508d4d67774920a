"""The variational bounds a recipe's ``elbo`` names, as strategy objects.

A :class:`Bound` says *which* objective to compute -- the evidence lower bound with a Monte Carlo KL
(:class:`Trace`), with the KL in closed form where it exists (:class:`MeanField`), or the
importance-weighted bound (:class:`ImportanceWeighted`) -- and with how many particles. It is chosen from
the recipe through one table, :data:`BOUNDS`, and handed to whoever computes it: the svi routine's Pyro
objectives (:data:`ppgen.inference.svi.ELBOS`, one per bound) or a family's closed-form
``fused_loss(x, bound)``, which dispatches on the bound's type (an unknown bound is an error there, never
a silent default).

References:
    Kingma & Welling (2013), Auto-Encoding Variational Bayes, arXiv:1312.6114 (the ELBO, analytic KL).
    Burda, Grosse & Salakhutdinov (2015), Importance Weighted Autoencoders, arXiv:1509.00519.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ppgen.spec import SpecError


@dataclass(frozen=True)
class Bound:
    """A lower bound on log p(x), estimated with ``num_particles`` draws of the latents per example."""

    num_particles: int = 1
    name: ClassVar[str]

    def __post_init__(self) -> None:
        n = self.num_particles
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise SpecError(f"num_particles: expected an integer >= 1, got {n!r}")


@dataclass(frozen=True)
class Trace(Bound):
    """The ELBO, E_q[log p(x, z) - log q(z | x)], every term by Monte Carlo (Pyro's Trace_ELBO)."""

    name: ClassVar[str] = "trace"


@dataclass(frozen=True)
class MeanField(Bound):
    """The ELBO with KL(q || p) in closed form where it exists (Pyro's TraceMeanField_ELBO)."""

    name: ClassVar[str] = "meanfield"


@dataclass(frozen=True)
class ImportanceWeighted(Bound):
    """log (1/k) sum_i p(x, z_i) / q(z_i | x), k = ``num_particles``, per example (Burda et al. 2015)."""

    name: ClassVar[str] = "iwae"


#: A recipe's ``elbo`` -> the bound it names.
BOUNDS: dict[str, type[Bound]] = {cls.name: cls for cls in (Trace, MeanField, ImportanceWeighted)}


def as_bound(elbo: Bound | str, num_particles: int = 1) -> Bound:
    """``elbo`` as a :class:`Bound`: a bound is returned as it is, a name is looked up in :data:`BOUNDS`."""
    if isinstance(elbo, Bound):
        return elbo
    cls = BOUNDS.get(elbo) if isinstance(elbo, str) else None
    if cls is None:
        raise SpecError(f"elbo: {elbo!r} is not one of {', '.join(BOUNDS)}")
    return cls(num_particles)
