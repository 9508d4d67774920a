"""ArviZ at the boundary: a run becomes InferenceData, summaries and plots.

Families build their own InferenceData through the ``inference_data(data, metrics)`` hook (what they share,
``arviz`` imported quietly and the loss trace as ``sample_stats``, is in :mod:`ppgen.arviz_data`);
:func:`diagnose` writes ``RUN/idata.nc``, prints ``az.summary`` and draws the family's figures
(:mod:`ppgen.plots.families`) or the generic ones.
"""

from __future__ import annotations

import warnings
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ppgen.arviz_data import arviz, independent_draws, labeller, loss_trace, markov_chains
from ppgen.plots import families
from ppgen.plots.metric_labels import metric_labels
from ppgen.store.atomic import atomic_write


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


#: Rows of the summary table printed by ``ppgen diagnose``; the full table is written to ``RUN/summary.csv``.
MAX_ROWS = 40


class SummaryTable(pd.DataFrame):
    """A summary table (a :class:`pandas.DataFrame`) that prints its notes beneath it: what was cut, and
    why R-hat and the ESS are absent where the draws are independent. ``notes`` is a list of lines.
    A table derived from it (a slice, a selection) is a plain DataFrame, without notes that may no
    longer hold."""

    _metadata = ["notes"]

    @property
    def _constructor(self) -> type:
        return pd.DataFrame

    def __repr__(self) -> str:
        text = super().__repr__()
        notes = getattr(self, "notes", None) or []
        return text + "".join(f"\n{note}" for note in notes)

    def _repr_html_(self) -> str | None:
        html = super()._repr_html_()
        notes = getattr(self, "notes", None) or []
        if html is None or not notes:
            return html
        return html + "".join(f"<p>{escape(note)}</p>" for note in notes)


def summary(idata: Any, max_vars: int | None = MAX_ROWS) -> SummaryTable:
    """``az.summary`` of the posterior group, cut to its first ``max_vars`` rows (a VAE's z has
    obs x latent entries) so that it prints; ``None``: every row. Row labels name the dim of each index,
    ``z[obs: 0, latent: 1]`` (:func:`ppgen.arviz_data.labeller`). The table's ``notes`` say when rows
    were cut, how many are shown of how many. A point estimate (a ``posterior`` of one draw whose
    attribute ``point_estimate`` says which: MAP, ML) gives its values in one column named after it;
    without a posterior, the Gibbs-chain statistics in ``sample_stats`` where there are several chains
    (R-hat and ESS included), else the log-likelihood of each example (:func:`_log_likelihood_table`), else
    the replicated data sets against the observed one (:func:`_predictive_table`). R-hat and the ESS are
    given only for Markov chains (:func:`ppgen.arviz_data.markov_chains`): draws that their InferenceData
    declares independent (a GAN's samples, draws from a variational q, a PixelCNN's ancestral samples)
    get the mean, sd and HDI, and a note that says so."""
    return _tables(idata, max_vars)[0]


def _tables(idata: Any, max_vars: int | None) -> tuple[SummaryTable, pd.DataFrame]:
    """The summary as printed (cut to ``max_vars`` rows, with notes) and in full."""
    az = arviz()
    notes: list[str] = []
    groups = idata.groups()
    order = None  # rows shown when cut, where not the first ones
    what = "rows"
    if "posterior" in groups and idata.posterior.attrs.get("point_estimate"):
        # one value per entry, not draws: the values, without moments, R-hat or ESS
        est = str(idata.posterior.attrs["point_estimate"])
        full = az.summary(idata, stat_funcs={est: _first}, extend=False, labeller=labeller())
    elif "posterior" not in groups and not _several_chains(idata, "sample_stats") and "log_likelihood" in groups:
        full = _log_likelihood_table(idata)
    elif ("posterior" not in groups and not _several_chains(idata, "sample_stats")
          and "posterior_predictive" in groups and "observed_data" in groups):
        full, varying = _predictive_table(idata)
        notes += _draws_note(idata, "posterior_predictive")
        if max_vars is not None and len(full) > max_vars:
            order = np.sort(varying[:max_vars])
            what = "values (those that vary most in the observed data)"
    else:
        # A family without a posterior (a GAN) is summarised by its prior predictive, the model's data;
        # Gibbs chains over units' states (RBM, DBN, BM) by their chain statistics.
        group = next((g for g in ("posterior", "prior_predictive", "prior") if g in groups), "posterior")
        if group not in groups and _several_chains(idata, "sample_stats"):
            group = "sample_stats"
        with warnings.catch_warnings():
            # R-hat and ESS need several chains; with one chain ArviZ warns and still gives the moments.
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            full = az.summary(idata, group=group, kind="all" if markov_chains(idata, group) else "stats",
                              labeller=labeller())
        notes += _draws_note(idata, group)
    shown = full
    if max_vars is not None and len(full) > max_vars:
        shown = full.iloc[order] if order is not None else full.iloc[:max_vars]
        first = "" if order is not None else "the first "
        notes.insert(0, f"showing {first}{len(shown)} of {len(full)} {what}")
    table = SummaryTable(shown)
    table.notes = notes
    return table, full


def _draws_note(idata: Any, group: str) -> list[str]:
    """Why a group's summary has no R-hat or ESS, where its draws are declared independent."""
    if not independent_draws(idata, group):
        return []
    n = idata[group].sizes.get("chain", 1) * idata[group].sizes.get("draw", 1)
    return [f"{group}: {n} independent draws, not Markov chains: mean, sd and HDI; "
            "R-hat and the ESS (convergence diagnostics of Markov chains) do not apply"]


def _log_likelihood_table(idata: Any, var: str = "x") -> Any:
    """Per example of the ``log_likelihood`` group: log p(x) in nats (summed over the example's other
    dims, e.g. pixels; averaged over draws, where there are several) and its mean per value."""
    ll = idata.log_likelihood[var]
    other = [d for d in ll.dims if d not in ("chain", "draw", "obs")]
    per_value = int(np.prod([ll.sizes[d] for d in other])) if other else 1
    total = (ll.sum(other) if other else ll).mean(("chain", "draw")).values.reshape(-1)
    # labelled as az.summary labels them (ppgen.arviz_data.labeller): the dim of the index named
    rows = [f"{var}[obs: {c}]" for c in ll["obs"].values] if "obs" in ll.dims else [f"{var}[{i}]" for i in range(total.size)]
    return pd.DataFrame({"log_lik_nats": total, "nats_per_value": total / per_value}, index=rows).round(3)


def _predictive_table(idata: Any, var: str = "x") -> tuple[pd.DataFrame, np.ndarray]:
    """The mean of each value over a replicated data set, summarised over the replicates (with R-hat and
    the ESS only where they are Markov chains), beside the observed data's mean; and the values' indices
    from the one that varies most in the observed data to the least (a corner pixel that is always 0 says
    nothing: a cut table shows the first of them). Rows are named by the observed data's dim of the values
    (``pixel`` for an image's pixels, flattened; ``value`` where it has none of its own)."""
    az = arviz()
    pp = idata.posterior_predictive[var]
    obs = idata.observed_data[var]
    obs_dim = obs.dims[0]
    means = pp.mean(obs_dim).values.reshape(pp.sizes["chain"], pp.sizes["draw"], -1)
    observed = obs.values.reshape(obs.shape[0], -1)
    varying = np.argsort(-observed.var(0), kind="stable")
    flat = obs.dims[1] if obs.ndim == 2 else "value"
    name = f"mean {var}"
    kind = "all" if markov_chains(idata, "posterior_predictive") else "stats"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        data = az.from_dict(posterior_predictive={name: means}, dims={name: [flat]},
                            coords={flat: np.arange(means.shape[-1])})
        table = az.summary(data, group="posterior_predictive", kind=kind, labeller=labeller())
    table.insert(0, "observed", observed.mean(0).round(3))
    return table, varying


def _first(values: Any) -> float:
    return float(np.ravel(values)[0])


def _several_chains(idata: Any, group: str) -> bool:
    return group in idata.groups() and idata[group].sizes.get("chain", 1) > 1


def diagnose(run: Any, *, quiet: bool = False) -> dict[str, Any]:
    """Write ``RUN/idata.nc``, the full summary table ``RUN/summary.csv`` and diagnostic figures; return
    the summary as printed (:data:`MAX_ROWS` rows at most, its notes saying so and where the full table
    is) and the paths (``idata``, ``summary_csv``, ``figures``)."""
    az = arviz()
    idata = inference_data(run)
    path = Path(run.path) / "idata.nc"
    tmp = path.with_name("idata.nc.tmp")
    tmp.unlink(missing_ok=True)  # written anew, never through a link left there
    idata.to_netcdf(str(tmp))
    tmp.replace(path)
    table, full = _tables(idata, MAX_ROWS)
    csv = Path(run.path) / "summary.csv"
    atomic_write(csv, lambda f: f.write(full.to_csv(index_label="variable").encode()))
    if len(table) < len(full):
        table.notes.insert(1, f"the full table ({len(full)} rows): {csv}")
    figures: dict[str, Path] = {}
    folder = Path(run.path) / "figures"
    labels = metric_labels(run.recipe, run.spec)
    own = families.diagnostic_figures(run.model, idata, folder, labels=labels)
    if own is not None:
        figures.update(own)
    elif "posterior" in idata.groups():
        figures.update(_default_figures(az, idata, folder, labels))
    else:
        figures.update(_no_posterior_figures(idata, folder, labels))
    return {"idata": path, "summary": table, "summary_csv": csv, "figures": figures}


def _default_figures(az: Any, idata: Any, folder: Path, labels: dict[str, str] | None = None) -> dict[str, Path]:
    """Posterior draws of the first latent coordinates of the first examples and the loss trace (its axis
    named by ``labels``, :func:`~ppgen.plots.metric_labels.metric_labels`)."""
    from ppgen.plots.common import posterior_figure
    from ppgen.plots.curves import loss_trace_figure

    out: dict[str, Path] = {}
    var = next(iter(idata.posterior.data_vars))
    out["posterior"] = posterior_figure(idata, folder / "posterior.png", var)
    trace = loss_trace_figure(idata, folder / "loss_trace.png", labels)
    if trace is not None:
        out["loss_trace"] = trace
    return out


def _no_posterior_figures(idata: Any, folder: Path, labels: dict[str, str] | None = None) -> dict[str, Path]:
    """For a fit without a posterior: the mean per-pixel negative log-likelihood as an image (where the
    ``log_likelihood`` group is per pixel) and the loss trace (its axis named by ``labels``)."""
    from ppgen.plots.curves import loss_trace_figure
    from ppgen.plots.predictive import pixel_nll_figure

    out: dict[str, Path] = {}
    if "log_likelihood" in idata.groups() and "pixel" in idata.log_likelihood["x"].dims:
        out["pixel_nll"] = pixel_nll_figure(idata, folder / "pixel_nll.png")
    trace = loss_trace_figure(idata, folder / "loss_trace.png", labels)
    if trace is not None:
        out["loss_trace"] = trace
    return out
