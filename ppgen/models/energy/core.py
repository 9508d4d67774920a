"""Energy-based model math shared by the RBM, Gaussian-Bernoulli RBM, Boltzmann machine and DBN families:
:class:`EnergyCore`, the training protocol that :mod:`ppgen.inference.gibbs` drives, and the small tensor
helpers every core uses.

Two cores hold the parameters and everything that only depends on them:

- :class:`~ppgen.models.energy.rbm_core.RBMCore`, a restricted Boltzmann machine with Bernoulli hidden units
  and Bernoulli or Gaussian visible units: conditionals, block Gibbs steps, free energies on both sides,
  exact log Z by enumerating the smaller side, annealed importance sampling (AIS) for log Z,
  pseudo-likelihood, and the closed-form contrastive-divergence gradient;
- :class:`~ppgen.models.energy.bm_core.BMCore`, a general (small) Boltzmann machine with visible-visible and
  hidden-hidden couplings: sequential single-site Gibbs sweeps, clamped and free phases, exact enumeration
  and AIS.

Both offer the same small training protocol (``positive_phase``, ``init_chains``, ``negative_phase``,
``set_gradients``, ``monitor``, ``validation_metrics``) that :mod:`ppgen.inference.gibbs` drives, so one
CD/PCD routine trains every energy family. The spec sections they share are in
:mod:`ppgen.models.energy.spec`, the partition function's numerics in :mod:`ppgen.models.energy.partition`.

Conventions: visible vectors are flat, shape ``(batch, D)``; hidden ``(batch, H)``.

References:
    Hinton (2002), Training Products of Experts by Minimizing Contrastive Divergence, Neural Comp. 14.
    Tieleman (2008), Training Restricted Boltzmann Machines using Approximations to the Likelihood
    Gradient, ICML.
    Hinton (2010), A Practical Guide to Training Restricted Boltzmann Machines, UTML TR 2010-003.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

import torch
from torch import nn

_F = TypeVar("_F", bound=Callable[..., Any])


def no_grad(fn: _F) -> _F:
    """``torch.no_grad`` for the methods of a training step, entered only when gradients are on: a CD
    update calls several of them per batch, and entering the context costs microseconds each time."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if torch.is_grad_enabled():
            with torch.no_grad():
                return fn(*args, **kwargs)
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def bernoulli(p: torch.Tensor) -> torch.Tensor:
    """Draws of Bernoulli(p), elementwise: ``u < p`` for uniform u, three times faster on a CPU than
    ``torch.bernoulli`` for the small batches of CD (it matters: sampling is half of an update)."""
    return torch.rand_like(p).lt_(p)  # in place: 1.0 where u < p, else 0.0


def base_rate_logits(x: torch.Tensor, smoothing: float = 1.0) -> torch.Tensor:
    """Logits ``log p / (1 - p)`` of the per-unit marginals of binary data (rows of ``x``), with
    ``smoothing`` pseudo-counts of each value (Laplace's rule by default) so that a unit that is always
    off in the data gets a large negative, not an infinite, bias: the base-rate model of S&M 2008 and
    the visible-bias initialisation of Hinton (2010, §8)."""
    p = (x.float().sum(0) + smoothing) / (x.shape[0] + 2 * smoothing)
    return torch.log(p) - torch.log1p(-p)


# --------------------------------------------------------------------------- the core contract


class EnergyCore(nn.Module):
    """What the CD/PCD routines (:mod:`ppgen.inference.gibbs`) drive: an energy model over visible and
    hidden units with ``positive_phase``, ``negative_phase``, ``chains_from_data``, ``init_chains``,
    ``monitor``, ``set_gradients`` and ``validation_metrics``. ``sgd_update`` is a core's fused update,
    used only where it equals the general path (``set_gradients`` then the optimizer's step); the
    default has none."""

    def sgd_update(self, pos: dict[str, torch.Tensor], neg: dict[str, torch.Tensor], opt: torch.optim.Optimizer) -> bool:
        """Apply the update in place and return True, or return False (and do nothing) where the fused
        update does not apply; the routine then takes the general path."""
        return False
