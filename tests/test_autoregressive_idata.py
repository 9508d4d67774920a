"""InferenceData of the autoregressive image families (ppgen.models.autoregressive.idata), on a tiny
PixelCNN: the class drawn from its exact posterior p(y | x) for a conditional model, the exact per-pixel
log-likelihoods and replicated images for an unconditional one; groups, dims, shapes, the 'independent'
declaration (ppgen.arviz_data) and the caller's random state left alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ppgen
from ppgen.arviz_data import independent_draws, markov_chains
from ppgen.data.core import Dataset
from ppgen.models.autoregressive.idata import class_inference_data, predictive_inference_data

pytestmark = pytest.mark.usefixtures("one_torch_thread")

METRICS = [{"kind": "train", "step": 1, "loss": 3.5}, {"kind": "val", "loss": 9.0},
           {"kind": "train", "step": 2, "loss": 2.5}]


def _setup(conditional: bool) -> tuple[object, Dataset]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 2, (30, 1, 3, 4), generator=gen).float()
    y = torch.randint(0, 3, (30,), generator=gen)
    data = Dataset("tiny", x[:10], x[10:15], x[15:], y[:10], y[10:15], y[15:], binarize="static", num_classes=3)
    data._fixed.update(train=x[:10], val=x[10:15], test=x[15:])  # already binary
    spec = ppgen.load_spec({"family": "pixelcnn", "conditional": conditional,
                            "net": {"channels": 4, "first_kernel": 3, "kernel": 3, "blocks": 1, "head": 4}})
    model = ppgen.build(spec, data.info)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0, 0.03 if "table" in name else 0.7)  # small class biases: a posterior not all on one class
    return model, data


def test_class_draws_follow_bayes_rule_in_posterior_with_images_and_labels() -> None:
    model, data = _setup(conditional=True)
    before = torch.get_rng_state()
    idata = class_inference_data(model, data, METRICS, n_obs=4, draws=4000, seed=3)
    assert torch.equal(torch.get_rng_state(), before)
    assert set(idata.groups()) == {"posterior", "observed_data", "constant_data", "sample_stats"}
    post = idata.posterior["y"]
    assert post.dims == ("chain", "draw", "obs") and post.shape == (1, 4000, 4)
    x, y = data.split("test")
    assert np.array_equal(idata.observed_data["x"].values, x[:4].reshape(4, 12).numpy())
    assert idata.observed_data["x"].dims == ("obs", "pixel")
    assert np.array_equal(idata.constant_data["label"].values, y[:4].numpy())
    assert idata.sample_stats["loss"].values.tolist() == [[3.5, 2.5]]  # the training records only
    # the draws' frequencies are p(y | x) = p(x | y) p(y) / sum_y' p(x | y') p(y'), computed here by hand
    with torch.no_grad():
        joint = torch.stack([model.log_prob(x[:4], torch.full((4,), k)) for k in range(3)], 1)
        joint = joint + torch.log_softmax(model.class_logits, 0)
        exact = torch.softmax(joint.double(), 1).numpy()
    freq = np.stack([(post.values[0] == k).mean(0) for k in range(3)], 1)
    assert np.abs(freq - exact).max() < 0.03, (freq, exact)
    assert exact.max(1).min() < 0.95  # not a degenerate posterior: the check can fail
    # exact, independent draws: declared so, and no R-hat applies
    assert independent_draws(idata, "posterior") and not markov_chains(idata, "posterior")
    again = class_inference_data(model, data, METRICS, n_obs=4, draws=4000, seed=3)
    assert np.array_equal(again.posterior["y"].values, post.values)
    assert "sample_stats" not in class_inference_data(model, data, [], n_obs=2, draws=5).groups()


def test_unconditional_model_has_pixel_log_likelihoods_and_replicates_but_no_posterior() -> None:
    model, data = _setup(conditional=False)
    model.eval_chunk = 2  # several chunks
    x = data.split("test")[0][:5]
    before = torch.get_rng_state()
    idata = predictive_inference_data(model, data, METRICS, n_obs=5, draws=16, seed=4)
    assert torch.equal(torch.get_rng_state(), before)
    assert set(idata.groups()) == {"log_likelihood", "posterior_predictive", "observed_data", "sample_stats"}
    ll = idata.log_likelihood["x"]
    assert ll.dims == ("chain", "draw", "obs", "pixel") and ll.shape == (1, 1, 5, 12)
    assert (ll.attrs["height"], ll.attrs["width"], ll.attrs["unit"]) == (3, 4, "nats")
    with torch.no_grad():
        per_pixel = model.pixel_log_probs(x).reshape(5, 12).double().numpy()
        total = model.log_prob(x).double().numpy()
    assert np.allclose(ll.values[0, 0], per_pixel, atol=1e-6)
    assert np.allclose(ll.values[0, 0].sum(1), total, atol=1e-5)  # the sum over pixels is log p(x)
    pp = idata.posterior_predictive["x"]
    assert pp.dims == ("chain", "draw", "obs", "pixel") and pp.shape == (4, 4, 5, 12)  # 16 draws as 4 chains of 4
    assert set(np.unique(pp.values)) <= {0.0, 1.0}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(4)
        reps = model.sample(16 * 5).reshape(16, 5, 12).numpy()
    assert np.array_equal(pp.values.reshape(16, 5, 12), reps)  # the replicates are the model's draws, in order
    assert independent_draws(idata, "posterior_predictive") and not markov_chains(idata, "posterior_predictive")
    assert "posterior" not in idata.groups() and "none" in idata.attrs["posterior"]
    assert idata.attrs["family"] == "pixelcnn"
    assert np.array_equal(idata.observed_data["x"].values, x.reshape(5, 12).numpy())


def test_the_family_picks_the_builder() -> None:
    cond, data = _setup(conditional=True)
    assert "posterior" in cond.inference_data(data, [], n_obs=2, draws=10).groups()
    plain, data = _setup(conditional=False)
    assert "posterior" not in plain.inference_data(data, [], n_obs=2).groups()
