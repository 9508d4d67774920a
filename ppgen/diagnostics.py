"""ArviZ at the boundary: a run becomes InferenceData, summaries and plots.

Families build their own InferenceData through the ``inference_data(data, metrics)`` hook; this module
holds what they share (``arviz`` imported quietly, the loss trace as ``sample_stats``), the VAE's
conversion, and :func:`diagnose`, which writes ``RUN/idata.nc`` and prints ``az.summary``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from ppgen.arviz_data import arviz, loss_trace
from ppgen.contracts import DiagnosticFigures


def inference_data(run: Any) -> Any:
    """The run's InferenceData, built by its family; a :class:`~ppgen.spec.SpecError` if the family
    has no posterior to convert."""
    from ppgen.spec import SpecError

    idata = run.model.inference_data(run.data, run.metrics)
    if idata is None:
        raise SpecError(f"{run.path}: the {run.spec.family!r} family has no posterior to convert to ArviZ")
    return idata


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
    if isinstance(run.model, DiagnosticFigures):
        figures.update(run.model.diagnostic_figures(idata, folder))
    else:
        figures.update(_default_figures(az, idata, folder))
    return {"idata": path, "summary": table, "figures": figures}


def _default_figures(az: Any, idata: Any, folder: Path) -> dict[str, Path]:
    """Posterior draws of the first latent coordinates of the first examples and the loss trace."""
    from ppgen.plots import loss_trace_figure, posterior_figure

    out: dict[str, Path] = {}
    var = next(iter(idata.posterior.data_vars))
    out["posterior"] = posterior_figure(idata, folder / "posterior.png", var)
    trace = loss_trace_figure(idata, folder / "loss_trace.png")
    if trace is not None:
        out["loss_trace"] = trace
    return out
