"""A fitted program as ArviZ InferenceData.

For a fixed subset of test examples (the first ``n_obs``):

- ``posterior``: draws of every global latent from its guide (dims ``SITE_dim_i``) and of every local
  latent from q(latent | x) (dims ``obs``, ``SITE_dim_i``); sites summed out in the model are drawn from
  their exact conditional given x and the other draws;
- ``posterior_predictive``: the observed sites drawn given each draw (x flattened: dims ``obs``, ``pixel``);
- ``log_likelihood``: log p(x | latents) of each example at each draw;
- ``observed_data`` (and ``constant_data``: the labels, where the data have them);
- ``sample_stats``: the training records (loss, ...) as one chain.

The draws come from a variational posterior, one chain: ArviZ reports their moments, not R-hat (which
needs several chains of a sampler). A program with no latent at all has no posterior; its model's draws
are the ``prior_predictive`` group, as for the GANs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ppgen.program import runtime


@torch.no_grad()
def program_inference_data(model: Any, data: Any, metrics: list[dict[str, Any]], n_obs: int = 16, draws: int = 200,
                           seed: int = 0) -> Any:
    from ppgen.diagnostics import arviz, loss_trace

    az = arviz()
    prog, mods = model.program, model._mods()
    x_all, y_all = data.split("test")
    n_obs = min(n_obs, x_all.shape[0])
    x = x_all[:n_obs].to(model.device)
    y = y_all[:n_obs].to(model.device) if y_all is not None and prog.y_site is not None else None
    lab = runtime.labels(prog, y, n_obs)
    posterior: dict[str, np.ndarray] = {}
    dims: dict[str, list[str]] = {}
    coords: dict[str, Any] = {"obs": np.arange(n_obs)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        values = runtime.posterior_draws(prog, mods, x, lab, draws)
        observed = runtime.conditional(prog, mods, x, lab, values)
        pred = {name: d.sample() for name, d in observed.items()}
        xd = observed[prog.x_site.name]
        loglik = xd.log_prob(x)
        prior_pred = None if values else model.sample(draws)
    for name, v in values.items():
        site = prog.model_by_name[name]
        arr = v.detach().float().cpu().numpy()
        extra = [f"{name}_dim_{i}" for i in range(len(site.shape))]
        dims[name] = extra if site.is_global else ["obs", *extra]
        posterior[name] = arr[None]
    groups: dict[str, Any] = {}
    if posterior:
        groups["posterior"] = posterior
    pp = {}
    for name, v in pred.items():
        arr = v.expand(draws, *v.shape[-1 - len(prog.model_by_name[name].shape):]).reshape(draws, n_obs, -1)
        pp[name] = arr.float().cpu().numpy()[None]
        dims[name] = ["obs", "pixel"] if name == prog.x_site.name else ["obs", f"{name}_dim"]
    groups["posterior_predictive"] = pp
    ll = loglik.expand(draws, n_obs) if loglik.dim() >= 1 else loglik.expand(draws, n_obs)
    groups["log_likelihood"] = {prog.x_site.name: ll.reshape(draws, n_obs).float().cpu().numpy()[None]}
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
    return _from_dict(az, groups, coords, dims, prog, prior_pred is not None)


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
