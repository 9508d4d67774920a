"""ArviZ at the boundary: a run becomes InferenceData, summaries and plots.

Families build their own InferenceData through the ``inference_data(data, metrics)`` hook (what they share,
``arviz`` imported quietly and the loss trace as ``sample_stats``, is in :mod:`ppgen.arviz_data`);
:func:`diagnose` writes ``RUN/idata.nc``, prints ``az.summary`` and draws the family's figures
(:mod:`ppgen.plots.families`) or the generic ones.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ppgen.arviz_data import arviz, loss_trace
from ppgen.plots import families


def inference_data(run: Any) -> Any:
    """The run's InferenceData, built by its family; a :class:`~ppgen.spec.SpecError` if the family
    has no posterior to convert."""
    idata = run.build_idata()
    if "posterior" in idata.groups() and idata.posterior.attrs.get("point_estimate") == "MAP":
        recipe = run.recipe.model_dump()
        if recipe["routine"] == "em" and recipe["prior"] == "flat":
            # EM without the priors: the estimate is the maximum of the likelihood alone
            idata.posterior.attrs["point_estimate"] = "ML"
    return idata


def summary(idata: Any, max_vars: int = 40) -> Any:
    """``az.summary`` of the posterior group, cut to its first ``max_vars`` rows (a VAE's z has
    obs x latent entries) so that it prints. A point estimate (a ``posterior`` of one draw whose
    attribute ``point_estimate`` says which: MAP, ML) gives its values in one column named after it;
    without a posterior, the Gibbs-chain statistics in ``sample_stats`` where there are several chains
    (R-hat and ESS included), else the log-likelihood of each example (:func:`_log_likelihood_table`), else
    the replicated data sets against the observed one (:func:`_predictive_table`)."""
    az = arviz()
    if "posterior" in idata.groups() and idata.posterior.attrs.get("point_estimate"):
        # one value per entry, not draws: the values, without moments, R-hat or ESS
        est = str(idata.posterior.attrs["point_estimate"])
        return az.summary(idata, stat_funcs={est: _first}, extend=False).iloc[:max_vars]
    groups = idata.groups()
    if "posterior" not in groups and not _several_chains(idata, "sample_stats"):
        if "log_likelihood" in groups:
            return _log_likelihood_table(idata).iloc[:max_vars]
        if "posterior_predictive" in groups and "observed_data" in groups:
            return _predictive_table(idata, max_vars)
    with warnings.catch_warnings():
        # R-hat and ESS need several chains; with one chain ArviZ warns and still gives the moments.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        # A family without a posterior (a GAN) is summarised by its prior predictive, the model's data;
        # Gibbs chains over units' states (RBM, DBN, BM) by their chain statistics.
        group = next((g for g in ("posterior", "prior_predictive", "prior") if g in idata.groups()), "posterior")
        if group not in idata.groups() and _several_chains(idata, "sample_stats"):
            group = "sample_stats"
        table = az.summary(idata, group=group, kind="all" if idata[group].sizes.get("chain", 1) > 1 else "stats")
    return table.iloc[:max_vars]


def _log_likelihood_table(idata: Any, var: str = "x") -> Any:
    """Per example of the ``log_likelihood`` group: log p(x) in nats (summed over the example's other
    dims, e.g. pixels; averaged over draws, where there are several) and its mean per value."""
    import pandas as pd

    ll = idata.log_likelihood[var]
    other = [d for d in ll.dims if d not in ("chain", "draw", "obs")]
    per_value = int(np.prod([ll.sizes[d] for d in other])) if other else 1
    total = (ll.sum(other) if other else ll).mean(("chain", "draw")).values.reshape(-1)
    return pd.DataFrame({"log_lik_nats": total, "nats_per_value": total / per_value},
                        index=[f"{var}[{i}]" for i in range(total.size)]).round(3)


def _predictive_table(idata: Any, max_vars: int, var: str = "x") -> Any:
    """The mean of each value over a replicated data set, summarised over the replicates with R-hat and
    the ESS where there are several chains, beside the observed data's mean: for the ``max_vars`` values
    that vary most in the observed data (a corner pixel that is always 0 says nothing)."""
    az = arviz()
    pp = idata.posterior_predictive[var]
    obs = idata.observed_data[var]
    obs_dim = obs.dims[0]
    means = pp.mean(obs_dim).values.reshape(pp.sizes["chain"], pp.sizes["draw"], -1)
    observed = obs.values.reshape(obs.shape[0], -1)
    keep = np.sort(np.argsort(-observed.var(0), kind="stable")[:max_vars])
    name = f"mean {var}"
    kind = "all" if pp.sizes["chain"] > 1 else "stats"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        data = az.from_dict(posterior_predictive={name: means[:, :, keep]}, dims={name: ["value"]},
                            coords={"value": keep})
        table = az.summary(data, group="posterior_predictive", kind=kind)
    table.insert(0, "observed", observed.mean(0)[keep].round(3))
    return table


def _first(values: Any) -> float:
    return float(np.ravel(values)[0])


def _several_chains(idata: Any, group: str) -> bool:
    return group in idata.groups() and idata[group].sizes.get("chain", 1) > 1


def diagnose(run: Any, *, quiet: bool = False) -> dict[str, Any]:
    """Write ``RUN/idata.nc`` and diagnostic figures; return the summary table and the paths."""
    az = arviz()
    idata = inference_data(run)
    path = Path(run.path) / "idata.nc"
    tmp = path.with_name("idata.nc.tmp")
    tmp.unlink(missing_ok=True)  # written anew, never through a link left there
    idata.to_netcdf(str(tmp))
    tmp.replace(path)
    table = summary(idata)
    figures: dict[str, Path] = {}
    folder = Path(run.path) / "figures"
    own = families.diagnostic_figures(run.model, idata, folder)
    if own is not None:
        figures.update(own)
    elif "posterior" in idata.groups():
        figures.update(_default_figures(az, idata, folder))
    else:
        figures.update(_no_posterior_figures(idata, folder))
    return {"idata": path, "summary": table, "figures": figures}


def _default_figures(az: Any, idata: Any, folder: Path) -> dict[str, Path]:
    """Posterior draws of the first latent coordinates of the first examples and the loss trace."""
    from ppgen.plots.common import loss_trace_figure, posterior_figure

    out: dict[str, Path] = {}
    var = next(iter(idata.posterior.data_vars))
    out["posterior"] = posterior_figure(idata, folder / "posterior.png", var)
    trace = loss_trace_figure(idata, folder / "loss_trace.png")
    if trace is not None:
        out["loss_trace"] = trace
    return out


def _no_posterior_figures(idata: Any, folder: Path) -> dict[str, Path]:
    """For a fit without a posterior: the mean per-pixel negative log-likelihood as an image (where the
    ``log_likelihood`` group is per pixel) and the loss trace."""
    from ppgen.plots.common import loss_trace_figure
    from ppgen.plots.predictive import pixel_nll_figure

    out: dict[str, Path] = {}
    if "log_likelihood" in idata.groups() and "pixel" in idata.log_likelihood["x"].dims:
        out["pixel_nll"] = pixel_nll_figure(idata, folder / "pixel_nll.png")
    trace = loss_trace_figure(idata, folder / "loss_trace.png")
    if trace is not None:
        out["loss_trace"] = trace
    return out
