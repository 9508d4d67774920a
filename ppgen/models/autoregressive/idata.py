"""InferenceData of an autoregressive image family (:class:`~ppgen.models.autoregressive.base.PixelFamily`),
whose weights are point estimates: for a class-conditional model, the class of each test image drawn from
its exact posterior by Bayes' rule (:func:`class_inference_data`); for an unconditional one, which has no
posterior, the exact per-pixel log-likelihoods and replicated images (:func:`predictive_inference_data`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ppgen.arviz_data import arviz, declare_independent, loss_trace
from ppgen.data.core import Dataset

__all__ = ["class_inference_data", "predictive_inference_data"]


@torch.no_grad()
def class_inference_data(model: Any, data: Dataset, metrics: list[dict[str, Any]], n_obs: int = 16,
                         draws: int = 1000, seed: int = 0) -> Any:
    """ArviZ data of a class-conditional model: for the first ``n_obs`` test images,

    - ``posterior``: ``y`` drawn from p(y | x) by Bayes' rule, dims (chain, draw, obs);
    - ``observed_data``: the images, dims (obs, pixel); ``constant_data``: their labels;
    - ``sample_stats``: the training loss trace.

    The weights are point estimates (maximum likelihood or MAP), so an unconditional model has no
    posterior; its InferenceData holds what applies instead (:func:`predictive_inference_data`).
    The draws of y are exact and independent, declared so (:func:`ppgen.arviz_data.declare_independent`)."""
    x, y = data.split("test")
    x = x[:n_obs].to(model.device)
    n = x.shape[0]
    probs = model.class_posterior(x).exp().cpu()
    gen = torch.Generator().manual_seed(seed)
    y_draws = torch.multinomial(probs, draws, replacement=True, generator=gen).T  # (draw, obs)
    kwargs: dict[str, Any] = {}
    stats = loss_trace(metrics)
    if stats:
        kwargs["sample_stats"] = stats
    if y is not None:
        kwargs["constant_data"] = {"label": y[:n].cpu().numpy()}
    idata = arviz().from_dict(
        posterior={"y": y_draws.numpy()[None]},
        observed_data={"x": x.reshape(n, -1).cpu().numpy()},
        coords={"obs": np.arange(n), "pixel": np.arange(model.height * model.width)},
        dims={"y": ["obs"], "x": ["obs", "pixel"], "label": ["obs"]},
        **kwargs,
    )
    return declare_independent(idata, "posterior")


@torch.no_grad()
def predictive_inference_data(model: Any, data: Dataset, metrics: list[dict[str, Any]], n_obs: int = 16,
                              draws: int = 16, seed: int = 0) -> Any:
    """ArviZ data of an unconditional model, which has no latent variable and point-estimate weights,
    so no ``posterior`` group: for the first ``n_obs`` test images,

    - ``log_likelihood``: ``x``, log p(x_i | x_<i) of every pixel in nats, exact, dims (chain = 1,
      draw = 1, obs, pixel), the pixels in raster order (attributes ``height``, ``width``); their sum
      over the pixels is the exact log p(x) of each image;
    - ``posterior_predictive``: ``x``, ``draws`` replicated data sets of ``n_obs`` images drawn from
      the model, independent (declared so: :func:`ppgen.arviz_data.declare_independent`), laid out
      as chains (:func:`ppgen.program.chains.arrange`), dims (chain, draw, obs, pixel);
    - ``observed_data``: the images, dims (obs, pixel); ``sample_stats``: the training loss trace."""
    from ppgen.program.chains import arrange

    x = data.split("test")[0][:n_obs].to(model.device)
    n, pixels = x.shape[0], model.height * model.width
    ll = torch.cat([model.pixel_log_probs(x[s : s + model.eval_chunk]) for s in range(0, n, model.eval_chunk)])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        reps = model.sample(draws * n).reshape(draws, n, pixels)
    kwargs: dict[str, Any] = {}
    stats = loss_trace(metrics)
    if stats:
        kwargs["sample_stats"] = stats
    idata = arviz().from_dict(
        log_likelihood={"x": ll.reshape(1, 1, n, pixels).double().cpu().numpy()},
        posterior_predictive={"x": arrange(reps.cpu().numpy())},
        observed_data={"x": x.reshape(n, pixels).cpu().numpy()},
        coords={"obs": np.arange(n), "pixel": np.arange(pixels)},
        dims={"x": ["obs", "pixel"]},
        attrs={"family": model.family_name,
               "posterior": "none: no latent variable, and the weights are point estimates"},
        **kwargs,
    )
    idata.log_likelihood["x"].attrs.update(height=model.height, width=model.width, unit="nats")
    return declare_independent(idata, "posterior_predictive")
