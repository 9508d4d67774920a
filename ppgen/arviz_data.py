"""ArviZ at the boundary: the import (without its banner), the training records as ``sample_stats`` and
the row labels of summaries. The families' InferenceData builders and :mod:`ppgen.diagnostics` use these."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np


def arviz() -> Any:
    """``import arviz``, without the banner about its refactor that it prints as a FutureWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az
    return az


def labeller() -> Any:
    """The labeller for ``az.summary`` (its ``labeller=``): row labels that name the dimension of each
    index, e.g. ``z[obs: 3, latent: 1]`` (example 3, latent dimension 1) rather than ``z[3, 1]``;
    the names are those of the InferenceData's dims, so a label reads as ``idata.posterior.z.sel(obs=3,
    latent=1)``."""
    return arviz().labels.DimCoordLabeller()


def loss_trace(metrics: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The training records as ``sample_stats`` arrays of shape (1 chain, n records): loss and every
    other per-step number, aligned on the records that carry it."""
    train = [m for m in metrics if m.get("kind") == "train"]
    if not train:
        return {}
    keys = [k for k, v in train[0].items() if k not in ("kind",) and isinstance(v, (int, float))]
    return {k: np.asarray([[float(m.get(k, np.nan)) for m in train]]) for k in keys}


#: The ``draws`` attribute of a group whose draws are independent of each other: ancestral samples of a
#: fitted model, draws from a variational q, replicates from a plug-in predictive. ppgen lays such draws
#: out as several chains (:func:`ppgen.program.chains.arrange`) for ArviZ's plots, but they are not Markov
#: chains: R-hat and the effective sample size diagnose a chain's convergence and mixing, and of
#: independent draws say nothing (R-hat is 1 and the ESS the number of draws, up to Monte Carlo error).
INDEPENDENT = "independent"


def declare_independent(idata: Any, *groups: str) -> Any:
    """Mark ``groups`` of ``idata`` (those it has) as holding independent draws (:data:`INDEPENDENT`);
    return ``idata``. The attribute is kept in ``idata.nc``."""
    for group in groups:
        if group in idata.groups():
            idata[group].attrs["draws"] = INDEPENDENT
    return idata


def independent_draws(idata: Any, group: str) -> bool:
    """Whether the builder of ``idata`` declared the draws of ``group`` independent."""
    return group in idata.groups() and idata[group].attrs.get("draws") == INDEPENDENT


def markov_chains(idata: Any, group: str) -> bool:
    """Whether R-hat and the ESS apply to ``group``: several chains, and draws not declared independent
    (Markov chains: NUTS, Gibbs sampling)."""
    return (group in idata.groups() and idata[group].sizes.get("chain", 1) > 1
            and not independent_draws(idata, group))
