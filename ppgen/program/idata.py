"""A fitted program as ArviZ InferenceData.

For a fixed subset of test examples (the first ``n_obs``):

- ``posterior``: draws of every global latent from its guide (dims: its event dims) and of every local
  latent from q(latent | x) (dims ``obs`` and its event dims); sites summed out in the model are drawn from
  their exact conditional given x and the other draws. A site's event dims are named after it:
  ``SITE_dim`` when it has one (``z[obs: 3, z_dim: 1]`` in a summary), ``SITE_dim_0``, ``SITE_dim_1``, ...
  when it has several, never ArviZ's anonymous defaults;
- ``posterior_predictive``: the observed sites drawn given each draw (x flattened: dims ``obs``, ``pixel``);
- ``log_likelihood``: log p(x | latents) of each example at each draw;
- ``observed_data`` (and ``constant_data``: the labels, where the data have them);
- ``sample_stats``: the training records (loss, ...) as one chain.

The draws come from a variational posterior, independent of each other, and are laid out as 4 chains of
equal length (:mod:`ppgen.program.chains`) for ArviZ's plots; every group of draws is declared independent
(:func:`ppgen.arviz_data.declare_independent`), so that no R-hat or ESS is reported as if they were Markov chains. A program with no latent at all
has no posterior; its model's draws are the ``prior_predictive`` group, as for the GANs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ppgen.program import chains, sampling, sites


@torch.no_grad()
def program_inference_data(model: Any, data: Any, metrics: list[dict[str, Any]], n_obs: int = 16, draws: int = 200,
                           seed: int = 0) -> Any:
    from ppgen.arviz_data import arviz, declare_independent, loss_trace

    az = arviz()
    prog, mods = model.program, model._mods()
    x_all, y_all = data.split("test")
    n_obs = min(n_obs, x_all.shape[0])
    x = model._x_in(x_all[:n_obs].to(model.device))
    y = y_all[:n_obs].to(model.device) if y_all is not None and prog.y_site is not None else None
    lab = sites.labels(prog, y, n_obs)
    posterior: dict[str, np.ndarray] = {}
    dims: dict[str, list[str]] = {}
    coords: dict[str, Any] = {"obs": np.arange(n_obs)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        values = sampling.posterior_draws(prog, mods, x, lab, draws)
        observed = sampling.conditional(prog, mods, x, lab, values)
        pred = {prog.x_site.name: observed[prog.x_site.name].sample()}
        xd = observed[prog.x_site.name]
        loglik = xd.log_prob(x)
        prior_pred = None if values else model.sample(draws)
    taken = {"chain", "draw", "obs", "pixel", "label", *prog.model_by_name}
    for name, v in values.items():
        site = prog.model_by_name[name]
        v = v.reshape(draws, *site.shape) if site.is_global else v.expand(draws, n_obs, *site.shape)
        arr = v.detach().float().cpu().numpy()
        extra = event_dims(name, len(site.shape), taken)
        dims[name] = extra if site.is_global else ["obs", *extra]
        posterior[name] = chains.arrange(arr)
    groups: dict[str, Any] = {}
    if posterior:
        groups["posterior"] = posterior
    pp = {}
    for name, v in pred.items():
        arr = v.expand(draws, n_obs, *prog.x_site.shape).reshape(draws, n_obs, -1)
        pp[name] = chains.arrange(arr.float().cpu().numpy())
        dims[name] = ["obs", "pixel"]
    groups["posterior_predictive"] = pp
    ll = loglik.expand(draws, n_obs) if loglik.dim() >= 1 else loglik.expand(draws, n_obs)
    groups["log_likelihood"] = {prog.x_site.name: chains.arrange(ll.reshape(draws, n_obs).float().cpu().numpy())}
    obs_data = {prog.x_site.name: x.reshape(n_obs, -1).float().cpu().numpy()}
    if y is not None:
        obs_data[prog.y_site.name] = y.cpu().numpy()
        dims.setdefault(prog.y_site.name, ["obs"])
    groups["observed_data"] = obs_data
    if y_all is not None:
        groups["constant_data"] = {"label": y_all[:n_obs].cpu().numpy()}
        dims["label"] = ["obs"]
    stats = loss_trace(metrics)
    if stats:
        groups["sample_stats"] = stats
    if prior_pred is not None:
        groups["prior_predictive"] = {prog.x_site.name: prior_pred.reshape(draws, -1).float().cpu().numpy()[None]}
        dims.setdefault("pixel", [])
    dims = {k: v for k, v in dims.items() if v}
    if prior_pred is not None:
        # the prior predictive's x has no obs axis: its own dims
        groups["prior_predictive_dims"] = None
    idata = _from_dict(az, groups, coords, dims, prog, prior_pred is not None)
    return declare_independent(idata, "posterior", "posterior_predictive", "log_likelihood", "prior_predictive")


def event_dims(site: str, n: int, taken: set[str]) -> list[str]:
    """Names for the ``n`` event dims of the site ``site``: ``SITE_dim`` for one, ``SITE_dim_0``,
    ``SITE_dim_1``, ... for several. A name in ``taken`` (a variable's, or a dim already named) gets a
    trailing ``_`` until it is free, so that no dim shares its name with a variable; the names given are
    added to ``taken``."""
    out = []
    for name in [f"{site}_dim"] if n == 1 else [f"{site}_dim_{i}" for i in range(n)]:
        while name in taken:
            name += "_"
        taken.add(name)
        out.append(name)
    return out


def _from_dict(az: Any, groups: dict[str, Any], coords: dict, dims: dict, prog: Any, has_prior: bool) -> Any:
    groups.pop("prior_predictive_dims", None)
    xname = prog.x_site.name
    pred_dims = dict(dims)
    kwargs = {k: v for k, v in groups.items()}
    if has_prior:
        prior = kwargs.pop("prior_predictive")
        idata = az.from_dict(coords=coords, dims=pred_dims, **kwargs)
        extra = az.from_dict(prior_predictive=prior, dims={xname: ["pixel"]})
        idata.extend(extra)
        return idata
    return az.from_dict(coords=coords, dims=pred_dims, **kwargs)


def program_diagnostic_figures(model: Any, idata: Any, folder: Any, rows: int = 2, cols: int = 4,
                               labels: dict[str, str] | None = None) -> dict[str, Any]:
    """``posterior.png``: histograms of the draws of the first local latent's first coordinates for the
    first examples (and of the first global latent's first coordinates); ``loss_trace.png``, its axis named
    by ``labels`` (:func:`~ppgen.plots.metric_labels.metric_labels` of the run's recipe and spec)."""
    from pathlib import Path

    from ppgen.plots.common import save_figure, subplots
    from ppgen.plots.curves import loss_trace_figure

    folder = Path(folder)
    out: dict[str, Any] = {}
    post = idata.posterior if "posterior" in idata.groups() else None
    if post is not None and post.data_vars:
        local = [v for v in post.data_vars if "obs" in post[v].dims]
        glob = [v for v in post.data_vars if "obs" not in post[v].dims]
        panels = []
        if local:
            v = post[local[0]]
            flat = v.values.reshape(v.shape[0] * v.shape[1], v.shape[2], -1)
            for i in range(min(rows, flat.shape[1])):
                for j in range(min(cols, flat.shape[2])):
                    panels.append((f"{local[0]}[obs {i}, {j}]", flat[:, i, j]))
        if glob:
            v = post[glob[0]]
            flat = v.values.reshape(v.shape[0] * v.shape[1], -1)
            for j in range(min(cols, flat.shape[1])):
                panels.append((f"{glob[0]}[{j}]", flat[:, j]))
        ncol = min(cols, len(panels))
        nrow = -(-len(panels) // ncol)
        fig, axes = subplots(nrow, ncol, figsize=(2.4 * ncol, 1.9 * nrow), squeeze=False)
        for ax, (title, values) in zip(axes.flat, panels):
            ax.hist(values, bins=30, color="C0", alpha=0.8)
            ax.set_title(title, fontsize=8)
            ax.set_xlabel(title.split("[")[0], fontsize=7)
            ax.set_ylabel("draws", fontsize=7)
            ax.tick_params(labelsize=6)
        for ax in list(axes.flat)[len(panels):]:
            ax.set_axis_off()
        fig.suptitle("draws from q (the guide) for the first test examples" + (" and the global sites" if glob else ""),
                     fontsize=9)
        fig.subplots_adjust(hspace=0.6, wspace=0.35)
        out["posterior"] = save_figure(fig, folder / "posterior.png")
    trace = loss_trace_figure(idata, folder / "loss_trace.png", labels)
    if trace is not None:
        out["loss_trace"] = trace
    return out
