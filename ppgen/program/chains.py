"""Draws from a variational posterior laid out as chains, so that ArviZ reports R-hat and the ESS.

ArviZ computes R-hat (Vehtari et al. 2021) and the effective sample size from several chains. A
program's posterior draws come from its guide q, independently of each other, so there is no Markov
chain to run several of; :func:`arrange` splits the ``draws`` independent draws into :data:`CHAINS`
groups of equal length, each an independent sample of q, and ArviZ's (chain, draw) layout takes them as
chains. For such draws the rank-normalised R-hat is 1 up to Monte Carlo error and the bulk ESS close to
the number of draws: they measure the draws themselves (a value that drifted with the draw's index, or a
degenerate site with no spread, would show), not the convergence of a sampler, and say nothing about
how well q fits the posterior.

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
