"""InferenceData of a Bayesian family (:class:`~ppgen.models.bayesian.base.BayesFamily`): the posterior draws,
relabelled, with the pointwise log-likelihood filled in (a default ``az.from_pyro`` conversion leaves it out
for models whose likelihood is a marginal over enumerated or hand-marginalised discrete states), for R-hat
and ESS, PSIS-LOO and ``az.compare`` (:mod:`ppgen.diagnostics.workflow`), replicated data for posterior
predictive checks (:mod:`ppgen.plots.bayesian`); or a point estimate in the same groups.

References:
    Vehtari, Gelman & Gabry (2017), Practical Bayesian model evaluation using leave-one-out
    cross-validation and WAIC, Statistics and Computing 27, 1413-1432.
    Gelman, Meng & Stern (1996), Posterior predictive assessment of model fitness via realized
    discrepancies, Statistica Sinica 6, 733-807.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Mapping

import numpy as np
import torch

from ppgen.arviz_data import arviz, declare_independent
from ppgen.models.bayesian.stores import flatten_draws


#: Largest posterior predictive array (chains x draws x data values) kept in full; beyond it draws are
#: thinned for the predictive group and LOO-PIT is skipped.
MAX_PREDICTIVE_VALUES = 4_000_000


@torch.no_grad()
def inference_data(model: Any, x: torch.Tensor, *, draws: Mapping[str, torch.Tensor] | None = None,
                   stats: Mapping[str, torch.Tensor] | None = None, relabel_draws: bool = True,
                   inference: str = "nuts", seed: int = 0) -> Any:
    """InferenceData for posterior draws (chain, draw, ...) of a :class:`BayesFamily` on data ``x``:

    - ``posterior``: the draws, relabelled (see :func:`relabel`), with named dims;
    - ``log_likelihood``: ``x`` of shape (chain, draw, obs), log p(x_n | theta) per example (per data
      point, or per sequence for an HMM), the unit of PSIS-LOO;
    - ``posterior_predictive``: ``x``, one replicated data set per draw (thinned if huge);
    - ``observed_data``: ``x``;
    - ``sample_stats``: ``lp`` (log joint), and the sampler's ``diverging`` and ``step_size`` if given.
    """
    az = arviz()
    draws = dict(model.posterior.draws() if draws is None else draws)
    stats = dict(model.posterior.stats() if stats is None else stats)
    chains, n_draws = next(iter(draws.values())).shape[:2]
    if relabel_draws:
        draws, _ = model.relabel(draws)
    flat = flatten_draws(draws)
    ll = model.pointwise_log_lik(x, flat)  # (S, N)
    lp = model.log_prior(flat) + ll.sum(-1)
    shown, dims = model.posterior_variables(flat)
    posterior = {k: v.reshape(chains, n_draws, *v.shape[1:]).double().numpy() for k, v in shown.items()}
    obs_dims = ["obs"] + [f"event_{i}" for i in range(x.dim() - 1)]
    # Replicated data: one data set per draw, thinned so that the group stays small.
    stride = max(1, math.ceil(chains * n_draws * x.numel() / MAX_PREDICTIVE_VALUES))
    keep = {k: v[:, ::stride] for k, v in draws.items()}
    gen_state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        x_rep = model.simulate(flatten_draws(keep), x.shape[0])
    finally:
        torch.set_rng_state(gen_state)
    kept = next(iter(keep.values())).shape[1]
    x_rep = x_rep.reshape(chains, kept, *x.shape)
    sample_stats: dict[str, np.ndarray] = {"lp": lp.reshape(chains, n_draws).double().numpy()}
    for name, v in stats.items():
        if v.shape[:2] == (chains, n_draws):
            sample_stats[name] = v.numpy()
    idata = az.from_dict(
        posterior=posterior,
        log_likelihood={"x": ll.reshape(chains, n_draws, -1).double().numpy()},
        sample_stats=sample_stats,
        observed_data={"x": x.double().numpy()},
        coords={"obs": np.arange(x.shape[0])},
        dims={**dims, "x": obs_dims},
        attrs={"inference": inference, "relabelled": int(relabel_draws), "family": model.family_name,
               "unit": model.unit},
    )
    idata.extend(_predictive(az, x_rep, x, obs_dims))
    idata.posterior_predictive.attrs["thinned_by"] = stride
    return idata


def _predictive(az: Any, x_rep: torch.Tensor, x: torch.Tensor, obs_dims: list[str]) -> Any:
    """The ``posterior_predictive`` group of replicated data ``x_rep`` (chain, draw, *x.shape). Draws
    thinned for large data may be fewer than the sampler's chains; ArviZ then guesses that the two axes
    are swapped and warns, but the layout is (chain, draw) by construction, so that guess is not passed on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"More chains \(\d+\) than draws", category=UserWarning)
        return az.from_dict(posterior_predictive={"x": x_rep.double().numpy()}, coords={"obs": np.arange(x.shape[0])},
                            dims={"x": obs_dims})


#: Replicated data sets drawn from the plug-in predictive of a point estimate: chains x draws.
POINT_PREDICTIVE = (4, 25)


@torch.no_grad()
def point_inference_data(model: Any, x: torch.Tensor, *, seed: int = 0) -> Any:
    """InferenceData of a point estimate theta_hat of a :class:`BayesFamily` on data ``x``, in ArviZ's groups
    with one draw where there is one value:

    - ``posterior``: theta_hat as one chain of one draw (dims chain = 1, draw = 1, then the sites' dims),
      with the attribute ``point_estimate``: ``"MAP"`` (the posterior mode of the declared priors, what
      the default routine and EM fit) or ``"ML"`` (set by :func:`ppgen.diagnostics.inference_data` for
      an EM fit with ``prior: flat``). A value, not draws: there is no R-hat, ESS or LOO;
    - ``log_likelihood``: ``x`` of shape (1, 1, obs), log p(x_n | theta_hat) per example (per data point,
      or per sequence for an HMM);
    - ``posterior_predictive``: ``x``, replicated data sets from the plug-in predictive p(x | theta_hat),
      independent, laid out as :data:`POINT_PREDICTIVE` chains x draws (fewer draws if the data are
      large, and then no more chains than draws); its attribute ``predictive`` says that they do not
      carry the parameters' uncertainty;
    - ``observed_data``: ``x``; ``sample_stats``: ``lp``, the log joint at theta_hat (1, 1).
    """
    az = arviz()
    theta = model.theta("point")  # S = 1
    ll = model.pointwise_log_lik(x, theta)  # (1, N)
    lp = model.log_prior(theta) + ll.sum(-1)
    shown, dims = model.posterior_variables(theta)
    posterior = {k: v.reshape(1, 1, *v.shape[1:]).double().numpy() for k, v in shown.items()}
    obs_dims = ["obs"] + [f"event_{i}" for i in range(x.dim() - 1)]
    chains, per = POINT_PREDICTIVE
    per = max(2, min(per, MAX_PREDICTIVE_VALUES // max(1, chains * x.numel())))
    chains = min(chains, per)  # the draws are independent: with few of them, fewer chains
    gen_state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        x_rep = model.simulate({k: v.expand(chains * per, *v.shape[1:]) for k, v in theta.items()}, x.shape[0])
    finally:
        torch.set_rng_state(gen_state)
    coords = {"obs": np.arange(x.shape[0])}
    idata = az.from_dict(
        posterior=posterior,
        log_likelihood={"x": ll.reshape(1, 1, -1).double().numpy()},
        sample_stats={"lp": lp.reshape(1, 1).double().numpy()},
        observed_data={"x": x.double().numpy()},
        coords=coords,
        dims={**dims, "x": obs_dims},
        attrs={"inference": "point estimate", "family": model.family_name, "unit": model.unit},
    )
    idata.extend(_predictive(az, x_rep.reshape(chains, per, *x.shape), x, obs_dims))
    idata.posterior.attrs["point_estimate"] = "MAP"
    idata.posterior_predictive.attrs["predictive"] = "plug-in p(x | theta_hat) at the point estimate"
    return declare_independent(idata, "posterior_predictive")
