"""A program's services from its structure: posterior draws of summed-out sites against their exact
conditional, InferenceData for every kind of program, sampling with a site fixed, the labels' hidden
examples summed out."""

from __future__ import annotations

import math

import pytest
import torch

import ppgen
from ppgen.data import load
from ppgen.program import sampling, sites

from test_program_fused import ENUM_PROGRAMS, PROGRAMS, _build, _data

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_posterior_draws_of_an_enumerated_assignment_follow_the_responsibilities() -> None:
    spec, info = ENUM_PROGRAMS["gmm"]
    model = _build(spec, info)
    x = _data(info, 4)
    prog, mods = model.program, model._mods()
    torch.manual_seed(0)
    draws = sampling.posterior_draws(prog, mods, x, sites.labels(prog, None, 4), 4000)["c"]  # (4000, 4)
    with torch.no_grad():
        w, locs, s = (model.params.value(n) for n in ("w", "locs", "s"))
        joint = w.log() + torch.distributions.Normal(locs, s[:, None]).log_prob(x[:, None, :]).sum(-1)
        resp = torch.softmax(joint, -1)  # (4, 3)
    freq = torch.stack([(draws == k).float().mean(0) for k in range(3)], -1)
    se = (resp * (1 - resp) / 4000).sqrt()
    assert torch.all((freq - resp).abs() < 5 * se + 1e-3), (freq, resp)


@pytest.mark.parametrize("name", ["vae_with_latent_class", "m2", "labels_summed_in_the_model"])
def test_inference_data_of_programs_that_sum_sites_out(name: str) -> None:
    spec, info = ENUM_PROGRAMS[name]
    model = _build(spec, info)
    data = load({"name": "digits", "binarize": "static"})
    idata = model.inference_data(data, [])
    assert "x" in idata.posterior_predictive and "x" in idata.log_likelihood
    latents = set(idata.posterior.data_vars)
    expected = {"vae_with_latent_class": {"c", "z"}, "m2": {"z"}, "labels_summed_in_the_model": {"z"}}[name]
    assert expected <= latents
    if name == "vae_with_latent_class":
        c = idata.posterior["c"].values
        assert set(c.ravel().tolist()) <= {0, 1, 2}


def test_hidden_labels_are_summed_out_in_the_likelihood() -> None:
    """log p(x) of a program with a label site is log sum_y p(x, y), whichever labels are passed."""
    spec, info = PROGRAMS["cvae"]
    model = _build(spec, info)
    x = _data(info, 3)
    torch.manual_seed(0)
    a, _ = model.log_likelihood(x, k=30, y=torch.tensor([1, 2, 3]))
    torch.manual_seed(0)
    b, _ = model.log_likelihood(x, k=30, y=None)
    torch.testing.assert_close(a, b)


def test_exact_likelihood_when_nothing_is_sampled() -> None:
    spec, info = ENUM_PROGRAMS["gmm"]
    model = _build(spec, info)
    assert model.program.exact and not model.importance_samples
    x = _data(info, 5)
    a, se = model.log_likelihood(x, k=3)
    b, _ = model.log_likelihood(x, k=300)
    torch.testing.assert_close(a, b)
    assert torch.all(se == 0)


def test_sampling_with_a_fixed_site_and_pixel_means() -> None:
    spec, info = PROGRAMS["vae"]
    model = _build(spec, info)
    z = torch.zeros(4, 2)
    sites = model.sample_sites(4, given={"z": z})
    assert torch.equal(sites["z"], z)
    means = model.sample(4, given={"z": z}, mean=True)
    assert torch.allclose(means, means[:1].expand(4, -1, -1, -1))  # the same z: the same pixel probabilities
    assert ((means > 0) & (means < 1)).all()
    with pytest.raises(ppgen.SpecError, match="does not fit the site's shape"):
        model.sample(4, given={"z": torch.zeros(3)})


def test_a_delta_guide_has_no_likelihood_but_reconstructs() -> None:
    spec, info = PROGRAMS["autoencoder"]
    model = _build(spec, info)
    x = _data(info, 4)
    assert model.log_likelihood(x) is None
    extra = model.evaluate_extra(x, None)
    assert "objective" in extra and "elbo" not in extra and math.isfinite(extra["reconstruction_sq_error"])
    assert model.reconstruct(x).shape == x.shape
