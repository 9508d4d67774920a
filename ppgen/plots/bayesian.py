"""The Bayesian families' figures: for ``ppgen diagnose`` trace, pair, posterior predictive, Pareto-k,
LOO-PIT and test-statistic checks (:func:`workflow_figures`); for ``ppgen fit`` the fitted mixture over
its data (:func:`gmm_figures`) and an HMM's decoded sequences and transition matrix (:func:`hmm_figures`)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import torch

from ppgen.arviz_data import arviz
from ppgen.data.core import Dataset
from ppgen.diagnostics.workflow import loo, loo_pit_data, predictive_pvalue
from ppgen.models.bayesian.base import BayesFamily
from ppgen.models.bayesian.gmm import GMM
from ppgen.models.bayesian.hmm import HMM, centre_theta
from ppgen.models.bayesian.stores import Theta
from ppgen.plots.common import label_trace_axes, panel_count, save_figure, subplots
from ppgen.plots.predictive import point_estimate_figure


def diagnostic_figures(model: BayesFamily, idata: Any, folder: Path,
                       labels: dict[str, str] | None = None) -> dict[str, Path]:
    """What ``ppgen diagnose`` draws for a Bayesian family: for a point estimate its values, likelihood and
    plug-in predictive (:func:`~ppgen.plots.predictive.point_estimate_figure`), for posterior draws
    :func:`workflow_figures`."""
    if idata.posterior.attrs.get("point_estimate"):
        return {"point_estimate": point_estimate_figure(idata, Path(folder) / "point_estimate.png")}
    return workflow_figures(idata, Path(folder), model)


def figures_of_gmm(model: GMM, folder: Path, data: Dataset) -> dict[str, Path]:
    """What ``ppgen fit`` draws for a GMM (:func:`gmm_figures`)."""
    return gmm_figures(model, data, Path(folder))


def figures_of_hmm(model: HMM, folder: Path, data: Dataset) -> dict[str, Path]:
    """What ``ppgen fit`` draws for an HMM (:func:`hmm_figures`)."""
    return hmm_figures(model, data, Path(folder))


def workflow_figures(idata: Any, folder: Path, model: BayesFamily | None = None) -> dict[str, Path]:
    """Trace, pair, posterior predictive, Pareto-k (and LOO-PIT for scalar examples) figures."""
    az = arviz()
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    names = list(idata.posterior.data_vars)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        rows = len(names[:4])
        fig, axes = subplots(rows, 2, figsize=(9, 2.0 * rows + 0.8), squeeze=False)
        az.plot_trace(idata, var_names=names[:4], compact=True, combined=False, axes=axes)
        label_trace_axes(axes)
        fig.suptitle("trace (relabelled draws; one line per chain)", fontsize=10)
        fig.tight_layout()
        out["trace"] = save_figure(fig, folder / "trace.png")

        pair_vars, pair_coords = model.pair_variables() if model is not None else (names[:2], {})
        k = panel_count(idata.posterior, pair_vars, pair_coords)
        fig, axes = subplots(k, k, figsize=(2.4 * k, 2.4 * k), squeeze=False, sharex="col")
        az.plot_pair(idata, var_names=pair_vars, coords=pair_coords, divergences="diverging" in idata.sample_stats,
                     kind="scatter", marginals=True, scatter_kwargs={"alpha": 0.3}, textsize=8, ax=axes)
        for i in range(k):  # the marginals on the diagonal are densities
            if not axes[i, i].get_ylabel():
                axes[i, i].set_ylabel("density", fontsize=7)
        out["pair"] = save_figure(fig, folder / "pair.png")

        # One panel per coordinate of a step (the last axis of an example), everything else pooled.
        obs_dims = [d for d in idata.posterior_predictive["x"].dims if d not in ("chain", "draw")]
        flatten = obs_dims[:-1] if len(obs_dims) > 1 else obs_dims
        panels = idata.posterior_predictive.sizes[obs_dims[-1]] if len(obs_dims) > 1 else 1
        fig, axes = subplots(1, panels, figsize=(min(6.0 * panels, 16.0), 4), squeeze=False)
        az.plot_ppc(idata, flatten=flatten, num_pp_samples=min(50, idata.posterior_predictive.sizes["draw"]),
                    random_seed=0, textsize=8, ax=axes[0] if panels > 1 else axes[0, 0])
        for ax in axes[0]:
            ax.set_ylabel("density", fontsize=8)
        out["ppc"] = save_figure(fig, folder / "ppc.png")

        result = loo(idata)
        fig, ax = subplots(figsize=(6, 4))
        az.plot_khat(result, show_bins=True, textsize=8, ax=ax)
        fig.suptitle(f"PSIS-LOO Pareto k per {idata.attrs.get('unit', 'example')} (elpd_loo {result.elpd_loo:.1f})", fontsize=10)
        out["khat"] = save_figure(fig, folder / "loo_khat.png")

        obs = idata.observed_data["x"]
        scalar = obs.ndim == 1 or (obs.ndim == 2 and obs.shape[1] == 1)
        thinned = int(idata.posterior_predictive.attrs.get("thinned_by", 1)) > 1
        if scalar and not thinned:
            fig, ax = subplots(figsize=(5, 3.5))
            pit = loo_pit_data(idata)
            az.plot_loo_pit(pit, y="x", ecdf=True, ax=ax)
            ax.set_xlabel("LOO probability integral transform", fontsize=8)
            ax.set_ylabel("ECDF minus uniform CDF", fontsize=8)
            ax.set_title("LOO-PIT (ECDF difference; inside the band: calibrated)", fontsize=9)
            out["loo_pit"] = save_figure(fig, folder / "loo_pit.png")

    if model is not None:
        stat = _statistic_figure(idata, folder, model)
        if stat is not None:
            out["ppc_statistic"] = stat
    return out


def _statistic_figure(idata: Any, folder: Path, model: BayesFamily) -> Path | None:
    obs = torch.as_tensor(idata.observed_data["x"].values)
    res = model.test_statistic(obs[None])
    if res is None:
        return None
    name, t_obs = res
    pp = torch.as_tensor(idata.posterior_predictive["x"].values)
    pp = pp.reshape(-1, *obs.shape)
    _, t_rep = model.test_statistic(pp)  # type: ignore[misc]
    p = predictive_pvalue(float(t_obs[0]), t_rep)
    fig, ax = subplots(figsize=(5, 3.5))
    ax.hist(t_rep.numpy(), bins=40, color="C0", alpha=0.7, label="replicated data")
    ax.axvline(float(t_obs[0]), color="k", lw=2, label="observed")
    ax.set_xlabel(name)
    ax.set_ylabel("replicated data sets")
    ax.set_title(f"posterior predictive check of {name}: p = {p:.2f}", fontsize=9)
    ax.legend(fontsize=8)
    return save_figure(fig, folder / "ppc_statistic.png")


@torch.no_grad()
def gmm_figures(model: GMM, data: Dataset, folder: Path, max_points: int = 3000) -> dict[str, Path]:
    """fit.png: 1-D data as a histogram under the fitted density (posterior mean and 90% band where there
    are draws) and its components; 2-D and up, the first two coordinates coloured by the most probable
    component (``infer_discrete`` at temperature 0) with 1- and 2-sigma ellipses: 2-D data in their own
    coordinates, more dimensions projected on the first two principal components of the training data
    (:func:`principal_plane`), the component means and covariances with them."""
    x, _ = data.split("train")
    x = x[:max_points]
    theta = model.theta()
    centre = {k: v.mean(0, keepdim=True) for k, v in model.relabelled_theta().items()}
    if model.has_posterior and model.cov == "full":
        # A mean of Cholesky factors is no Cholesky factor of a correlation matrix: renormalise its rows.
        l = centre["corr_cholesky"]
        centre["corr_cholesky"] = l / l.norm(dim=-1, keepdim=True)
    out: dict[str, Path] = {}
    fig, ax = subplots(figsize=(6, 4.5) if model.d == 1 else (5.5, 5.5))
    source = f"posterior ({theta['weights'].shape[0]} draws)" if model.has_posterior else "MAP"
    if model.d == 1:
        ax.hist(x[:, 0].numpy(), bins=60, density=True, color="0.75", label="training data")
        lo, hi = float(x.min()), float(x.max())
        pad = 0.1 * (hi - lo + 1e-6)
        grid = torch.linspace(lo - pad, hi + pad, 400)[:, None]
        dens = model.pointwise_log_lik(grid, theta).exp()
        ax.plot(grid[:, 0], dens.mean(0), color="C0", lw=2, label=f"fitted density ({source})")
        if dens.shape[0] > 1:
            q = torch.quantile(dens, torch.tensor([0.05, 0.95]), dim=0)
            ax.fill_between(grid[:, 0].numpy(), q[0].numpy(), q[1].numpy(), color="C0", alpha=0.25, label="90% band")
        comp = (model.component_log_prob(grid, centre) + torch.log(centre["weights"])[:, None, :]).exp()[0]
        for j in range(model.k):
            ax.plot(grid[:, 0], comp[:, j], "--", lw=1, color=f"C{(j + 1) % 10}")
        ax.set_xlabel("x")
        ax.set_ylabel("density")
        ax.legend(fontsize=8)
    else:
        one = {k: v[0] for k, v in centre.items()}
        z = model.assignments(x, temperature=0, theta=one)
        cov = _covariances(model, centre)[0]
        plane, axis_labels = principal_plane(x)
        mean = x.mean(0) if plane is not None else None
        if plane is not None:
            x = (x - mean) @ plane
            centre = {**centre, "locs": (centre["locs"] - mean) @ plane}
            cov = plane.T @ cov @ plane
        ax.scatter(x[:, 0], x[:, 1], c=z.numpy(), cmap="tab10", vmin=0, vmax=9, s=4, alpha=0.6)
        t = torch.linspace(0, 2 * math.pi, 100)
        circle = torch.stack([t.cos(), t.sin()], 0)
        for j in range(model.k):
            c2 = cov[j][:2, :2]
            l = torch.linalg.cholesky(c2)
            for r in (1.0, 2.0):
                pts = centre["locs"][0, j, :2, None] + r * l @ circle
                ax.plot(pts[0], pts[1], color="k", lw=0.8, alpha=0.8 if r == 1 else 0.4)
        ax.scatter(centre["locs"][0, :, 0], centre["locs"][0, :, 1], marker="x", color="k", s=40, label="component means")
        ax.legend(fontsize=8, loc="best")
        ax.set_aspect("equal")
        ax.set_xlabel(axis_labels[0])
        ax.set_ylabel(axis_labels[1])
    ax.set_title(f"Gaussian mixture, K = {model.k} ({source})", fontsize=10)
    out["fit"] = save_figure(fig, folder / "fit.png")
    return out


def principal_plane(x: torch.Tensor) -> tuple[torch.Tensor | None, tuple[str, str]]:
    """For data of more than two dimensions, the (D, 2) orthonormal basis of their first two principal
    components (the right singular vectors of the centred data) and axis labels that give each one's
    share of the variance; for 2-D data None and the coordinates' own names."""
    if x.shape[1] <= 2:
        return None, ("x1", "x2")
    centred = (x - x.mean(0)).double()
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    share = s**2 / (s**2).sum()
    # A singular vector's sign is arbitrary (it may differ between LAPACK builds): make each one's largest
    # entry positive so the picture is the same everywhere.
    vh = vh[:2] * torch.sign(vh[:2].gather(1, vh[:2].abs().argmax(1, keepdim=True)))
    labels = (f"PC 1 ({100 * float(share[0]):.0f}% of the variance)", f"PC 2 ({100 * float(share[1]):.0f}% of the variance)")
    return vh.T.to(x.dtype), labels


def _covariances(model: GMM, theta: Theta) -> torch.Tensor:
    """(S, K, D, D) covariance matrices."""
    if model.cov == "full":
        tril = model._scale_tril(theta)
        return tril @ tril.transpose(-1, -2)
    scales = theta["scales"]
    if model.cov == "spherical":
        scales = scales[..., None].expand(*scales.shape, model.d)
    return torch.diag_embed(scales**2)


@torch.no_grad()
def hmm_figures(model: HMM, data: Dataset, folder: Path, n_show: int = 3) -> dict[str, Path]:
    """sequences.png: test sequences with the Viterbi path (``infer_discrete`` at temperature 0) and the
    posterior state marginals p(z_t | x); transition.png: the transition matrix."""
    x, _ = data.split("test")
    x = model._seq(x[:n_show])
    centre = centre_theta(model)
    one = {k: v[0] for k, v in centre.items()}
    path = model.viterbi(x, one)
    marg = model.state_marginals(x, model.relabelled_theta()).mean(0)
    out: dict[str, Path] = {}
    fig, axes = subplots(2 * len(x), 1, figsize=(9, 2.6 * len(x)), sharex=True,
                         gridspec_kw={"height_ratios": [2, 1] * len(x)}, squeeze=False)
    steps = torch.arange(x.shape[1])
    colors = [f"C{j % 10}" for j in range(model.k)]
    for i in range(len(x)):
        ax, axm = axes[2 * i, 0], axes[2 * i + 1, 0]
        for t in range(x.shape[1]):
            ax.axvspan(t - 0.5, t + 0.5, color=colors[int(path[i, t])], alpha=0.15, lw=0)
        ax.plot(steps, x[i, :, 0], "k.-" if model.kind == "gaussian" else "k.", lw=0.8, ms=3)
        ax.set_ylabel(f"sequence {i}", fontsize=8)
        axm.stackplot(steps.numpy(), marg[i].T.numpy(), colors=colors, alpha=0.8)
        axm.set_ylim(0, 1)
        axm.set_ylabel("p(z_t | x)", fontsize=8)
    axes[0, 0].set_title("test sequences, Viterbi path (background) and posterior state marginals", fontsize=10)
    axes[-1, 0].set_xlabel("t")
    out["sequences"] = save_figure(fig, folder / "sequences.png")

    fig, ax = subplots(figsize=(1.6 + 0.7 * model.k, 1.2 + 0.7 * model.k))
    trans = centre["transition"][0]
    ax.imshow(trans.numpy(), vmin=0, vmax=1, cmap="Blues")
    for a in range(model.k):
        for b in range(model.k):
            ax.text(b, a, f"{float(trans[a, b]):.2f}", ha="center", va="center", fontsize=8,
                    color="white" if trans[a, b] > 0.6 else "black")
    ax.set_xticks(range(model.k))
    ax.set_yticks(range(model.k))
    ax.set_xlabel("to state z[t+1]")
    ax.set_ylabel("from state z[t]")
    ax.set_title("transition probabilities p(z[t+1] | z[t])\n" + ("(posterior mean)" if model.has_posterior else "(MAP)"),
                 fontsize=9)
    out["transition"] = save_figure(fig, folder / "transition.png")
    return out
