"""The Bayesian workflow over fitted runs (Gelman, Vehtari, Simpson et al. 2020): R-hat and ESS summaries,
PSIS-LOO with its Pareto-k warnings kept as data, ``az.compare`` across runs or run folders, choosing a
model by parsimony, posterior predictive p-values and the data LOO-PIT needs. The InferenceData comes from
the family (:func:`ppgen.models.bayesian.idata.inference_data`); the figures are in
:mod:`ppgen.plots.bayesian`.

References:
    Vehtari, Gelman & Gabry (2017), Practical Bayesian model evaluation using leave-one-out
    cross-validation and WAIC, Statistics and Computing 27, 1413-1432.
    Gelman, Meng & Stern (1996), Posterior predictive assessment of model fitness via realized
    discrepancies, Statistica Sinica 6, 733-807.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ppgen.arviz_data import arviz, labeller
from ppgen.store.folder import Run, open_run
from ppgen.spec import SpecError


def summary(idata: Any, var_names: Sequence[str] | None = None) -> Any:
    """``az.summary`` with R-hat (rank-normalized, split) and bulk/tail ESS of the posterior group.
    Entries that are constant across draws (none in the families here) get NaN R-hat. Row labels name the
    dim of each index, ``locs[component: 0, dim: 0]`` (:func:`ppgen.arviz_data.labeller`)."""
    az = arviz()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # 0/0 for a constant entry
        return az.summary(idata, var_names=list(var_names) if var_names else None, kind="all", labeller=labeller())


def loo(idata: Any) -> Any:
    """PSIS-LOO of the pointwise log-likelihood group. ArviZ's warning about large Pareto k is kept as
    data: ``result.warning`` is True and ``result.pareto_k`` says which examples (k > 0.7: unreliable)."""
    az = arviz()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return az.loo(idata, pointwise=True)


def _as_idata(item: Any) -> Any:
    if isinstance(item, (str, Path)):
        item = open_run(item)
    if isinstance(item, Run):
        return item.idata
    return item


def compare(models: Mapping[str, Any], ic: str = "loo") -> Any:
    """``az.compare`` over named InferenceData, runs or run folders (each with a log_likelihood group),
    ranked by expected log pointwise predictive density (higher is better)."""
    az = arviz()
    data = {name: _as_idata(item) for name, item in models.items()}
    for name, idata in data.items():
        if "log_likelihood" not in idata.groups():
            raise SpecError(f"compare: {name!r} has no log_likelihood group; build it with ppgen diagnose (NUTS runs)")
        if "posterior" in idata.groups() and idata.posterior.attrs.get("point_estimate"):
            raise SpecError(f"compare: {name!r} holds a point estimate ({idata.posterior.attrs['point_estimate']}), "
                            "not posterior draws, so it has no LOO; fit it with --inference nuts (the zoo's nuts recipe)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return az.compare(data, ic=ic)


def choose(table: Any, complexity: Mapping[str, float] | None = None, rule: str = "parsimony") -> str:
    """The model a comparison table picks. ``best``: the highest elpd. ``parsimony``: the least complex
    model whose elpd is within one standard error of the difference (``dse``) of the best, complexity
    from ``complexity`` (e.g. the number of components) or else the effective number of parameters
    ``p_loo`` -- differences smaller than their standard error are not evidence for the bigger model."""
    if rule == "best":
        return str(table.index[0])
    if rule != "parsimony":
        raise SpecError(f"choose: rule must be 'best' or 'parsimony', got {rule!r}")
    near = [name for name in table.index if table.loc[name, "elpd_diff"] <= max(table.loc[name, "dse"], 1e-12)]
    key = (lambda n: (complexity[n], n)) if complexity is not None else (lambda n: (table.loc[n, "p_loo"], n))
    return str(min(near, key=key))


def predictive_pvalue(observed: float, replicated: torch.Tensor) -> float:
    """Posterior predictive p-value P(T(x_rep) >= T(x) | x) (Gelman, Meng & Stern 1996); near 0 or 1
    says the model does not reproduce the statistic."""
    return float((replicated >= observed).double().mean())


def loo_pit_data(idata: Any) -> Any:
    """The observed data, posterior predictive and log-likelihood groups with one scalar per example,
    as ``az.plot_loo_pit(data, y="x")`` wants them (for examples that are single values)."""
    az = arviz()
    obs = idata.observed_data["x"].values.reshape(-1)
    pp = idata.posterior_predictive["x"].values
    pp = pp.reshape(pp.shape[0], pp.shape[1], -1)
    ll = idata.log_likelihood["x"].values
    # The relative efficiency of the draws (for PSIS) is estimated from the posterior group.
    posterior = {name: idata.posterior[name].values for name in idata.posterior.data_vars}
    return az.from_dict(posterior=posterior, posterior_predictive={"x": pp}, log_likelihood={"x": ll},
                        observed_data={"x": obs})
