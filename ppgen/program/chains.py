"""Independent draws laid out in ArviZ's (chain, draw) shape.

A program's posterior draws come from its guide q (and a model's predictive draws from the model),
independently of each other, so there is no Markov chain to run several of. :func:`arrange` splits the
``draws`` independent draws into :data:`CHAINS` groups of equal length, each an independent sample, so
that ArviZ's tools that expect chains (trace, rank and forest plots) read them. The groups that hold
them are declared independent (:func:`ppgen.arviz_data.declare_independent`), and ``ppgen diagnose``
reports no R-hat or ESS for them: for independent draws the rank-normalised R-hat (Vehtari et al. 2021)
is 1 up to Monte Carlo error and the bulk ESS close to the number of draws whatever q is, so they would
say nothing about how well q fits the posterior.

References:
    Vehtari, Gelman, Simpson, Carpenter & Buerkner (2021), Rank-normalization, folding, and localization:
    an improved R-hat for assessing convergence of MCMC, Bayesian Analysis 16(2).
"""

from __future__ import annotations

import numpy as np

#: Chains the independent draws from q are split into.
CHAINS = 4


def arrange(draws: np.ndarray, chains: int = CHAINS) -> np.ndarray:
    """``draws`` of shape (draws, ...) as (chains, draws / chains, ...), in the order drawn (chain c holds
    draws c * L to (c + 1) * L - 1). One chain when the draws do not split evenly."""
    n = draws.shape[0]
    if chains < 1 or n % chains or n < 2 * chains:
        chains = 1
    return draws.reshape(chains, n // chains, *draws.shape[1:])
