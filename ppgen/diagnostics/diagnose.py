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

from ppgen.arviz_data import arviz, loss_trace
from ppgen.plots import families


def inference_data(run: Any) -> Any:
    """The run's InferenceData, built by its family; a :class:`~ppgen.spec.SpecError` if the family
    has no posterior to convert."""
    return run.build_idata()


def summary(idata: Any, max_vars: int = 40) -> Any:
    """``az.summary`` of the posterior group, cut to its first ``max_vars`` rows (a VAE's z has
    obs x latent entries) so that it prints."""
    az = arviz()
    with warnings.catch_warnings():
        # R-hat and ESS need several chains; with one chain ArviZ warns and still gives the moments.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        # A family without a posterior (a GAN) is summarised by its prior predictive, the model's data.
        group = next((g for g in ("posterior", "prior_predictive", "prior") if g in idata.groups()), "posterior")
        table = az.summary(idata, group=group, kind="all" if idata[group].sizes.get("chain", 1) > 1 else "stats")
    return table.iloc[:max_vars]


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
    figures.update(own if own is not None else _default_figures(az, idata, folder))
    return {"idata": path, "summary": table, "figures": figures}


def _default_figures(az: Any, idata: Any, folder: Path) -> dict[str, Path]:
    """Posterior densities of the first latent coordinates of the first examples and the loss trace."""
    from ppgen.plots.common import grid_axes, loss_trace_figure, panel_count, save_figure

    out: dict[str, Path] = {}
    post = idata.posterior
    var = next(iter(post.data_vars))
    sel = {d: slice(0, 4) for d in post[var].dims if d not in ("chain", "draw")}
    fig, axes = grid_axes(min(panel_count(post, [var], sel), az.rcParams["plot.max_subplots"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        az.plot_posterior(idata, var_names=[var], coords=sel, hdi_prob=0.9, textsize=8, ax=axes)
    fig.suptitle(f"posterior of {var} for the first examples (q(z|x))", fontsize=10)
    out["posterior"] = save_figure(fig, folder / "posterior.png")
    trace = loss_trace_figure(idata, folder / "loss_trace.png")
    if trace is not None:
        out["loss_trace"] = trace
    return out
