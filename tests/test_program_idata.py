"""A fitted program as InferenceData: the groups and dims, draws laid out as chains, the log-likelihood
of each example at each draw, and the prior predictive of a program without latents; its figures."""

from __future__ import annotations

import torch
from torch.distributions import Normal

import ppgen
from ppgen.data.core import Dataset
from ppgen.program.idata import program_diagnostic_figures, program_inference_data

LATENT = {
    "family": "program", "data": {"name": "toy2d"}, "num_data": 20,
    "model": {"m": {"dist": "Normal", "loc": 0.0, "scale": 1.0, "shape": [2], "global": True},
              "z": {"dist": "Normal", "loc": "m", "scale": 1.0, "shape": [2]},
              "x": {"dist": "Normal", "loc": "z", "scale": 0.5, "observed": "x"}},
}


def _data(n: int = 5) -> Dataset:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 2, generator=g)
    return Dataset("toy2d", x, x, x)


def _build(spec: dict, data: Dataset):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return ppgen.build(spec, data.info)


def test_groups_shapes_and_the_log_likelihood_at_each_draw():
    data = _data()
    model = _build(LATENT, data)
    idata = program_inference_data(model, data, [{"kind": "train", "step": 1, "loss": 3.0}, {"kind": "train", "step": 2, "loss": 2.0}],
                                   n_obs=3, draws=16)
    assert {"posterior", "posterior_predictive", "log_likelihood", "observed_data"} <= set(idata.groups())
    post = idata.posterior
    assert post["z"].dims == ("chain", "draw", "obs", "z_dim") and post["z"].shape == (4, 4, 3, 2)
    assert post["m"].dims == ("chain", "draw", "m_dim") and post["m"].shape == (4, 4, 2)
    assert idata.posterior_predictive["x"].dims == ("chain", "draw", "obs", "pixel")
    assert idata.observed_data["x"].dims == ("obs", "pixel")
    x = data.test_x[:3]
    torch.testing.assert_close(torch.from_numpy(idata.observed_data["x"].values), x)
    z = torch.from_numpy(post["z"].values)
    expect = Normal(z, 0.5).log_prob(x).sum(-1)
    torch.testing.assert_close(torch.from_numpy(idata.log_likelihood["x"].values), expect, atol=1e-5, rtol=1e-5)
    assert "prior_predictive" not in idata.groups()
    assert idata.sample_stats["loss"].values.tolist() == [[3.0, 2.0]]


def test_event_dims_are_named_after_their_site_never_by_arviz_defaults():
    """One event dim is SITE_dim, several are SITE_dim_0, SITE_dim_1, ...; a scalar site has none; a dim
    whose name is another site's gets a trailing underscore, so that no dim is also a variable."""
    spec = {"family": "program", "data": {"name": "toy2d"}, "num_data": 20,
            "model": {"W": {"dist": "Normal", "loc": 0.0, "scale": 1.0, "shape": [3, 2], "global": True},
                      "s": {"dist": "LogNormal", "loc": 0.0, "scale": 1.0, "global": True},
                      "z": {"dist": "Normal", "loc": 0.0, "scale": 1.0, "shape": [3]},
                      "z_dim": {"dist": "Normal", "loc": 0.0, "scale": 1.0},
                      "x": {"dist": "Normal", "loc": "z @ W + z_dim", "scale": "s", "observed": "x"}}}
    data = _data()
    idata = program_inference_data(_build(spec, data), data, [], n_obs=3, draws=16)
    post = idata.posterior
    assert post["W"].dims == ("chain", "draw", "W_dim_0", "W_dim_1") and post["W"].shape[2:] == (3, 2)
    assert post["s"].dims == ("chain", "draw")
    assert post["z"].dims == ("chain", "draw", "obs", "z_dim_") and post["z"].shape[2:] == (3, 3)
    assert post["z_dim"].dims == ("chain", "draw", "obs")
    assert set(post.dims) == {"chain", "draw", "obs", "W_dim_0", "W_dim_1", "z_dim_"}
    assert idata.posterior_predictive["x"].dims == ("chain", "draw", "obs", "pixel")


def test_the_draws_do_not_depend_on_the_callers_random_state_and_leave_it_alone():
    data = _data()
    model = _build(LATENT, data)
    torch.manual_seed(5)
    a = program_inference_data(model, data, [], n_obs=2, draws=16, seed=3)
    after = torch.rand(1)
    torch.manual_seed(5)
    b = program_inference_data(model, data, [], n_obs=2, draws=16, seed=3)
    assert torch.equal(after, torch.rand(1))
    assert (a.posterior["z"].values == b.posterior["z"].values).all()


def test_a_program_without_latents_has_a_prior_predictive_and_no_posterior():
    data = _data()
    spec = {"family": "program", "data": {"name": "toy2d"},
            "model": {"x": {"dist": "Normal", "loc": [1.0, -1.0], "scale": 0.5, "observed": "x"}}}
    idata = program_inference_data(_build(spec, data), data, [], n_obs=2, draws=16)
    assert "posterior" not in idata.groups() and "prior_predictive" in idata.groups()
    assert idata.prior_predictive["x"].shape == (1, 16, 2)
    torch.testing.assert_close(torch.from_numpy(idata.log_likelihood["x"].values[0, 0]),
                               Normal(torch.tensor([1.0, -1.0]), 0.5).log_prob(data.test_x[:2]).sum(-1))


def test_diagnostic_figures_show_local_and_global_draws(tmp_path):
    data = _data()
    model = _build(LATENT, data)
    idata = program_inference_data(model, data, [{"kind": "train", "step": 1, "loss": 3.0}, {"kind": "train", "step": 2, "loss": 2.0}],
                                   n_obs=3, draws=16)
    out = program_diagnostic_figures(model, idata, tmp_path)
    assert set(out) == {"posterior", "loss_trace"}
    assert out["posterior"].stat().st_size > 0 and out["posterior"].parent == tmp_path
