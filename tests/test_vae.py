"""The VAE against exact answers: analytic vs Monte Carlo KL, the fused objectives vs Pyro's ELBOs, and
the importance-sampling likelihood vs the exact marginal of probabilistic PCA."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pytest
import torch
from torch.distributions import kl_divergence

import ppgen
from ppgen.data.core import DataInfo
from ppgen.inference.svi import SVIConfig, pyro_elbo, pyro_loss
from ppgen.models.vae import VAE, VAESpec


def _vae(**kw) -> VAE:
    spec = VAESpec(data={"name": "digits"}, latent={"dim": 3}, encoder={"hidden": [16]}, decoder={"hidden": [16]}, **kw)
    return VAE(spec, DataInfo((1, 8, 8), "binary"))


def _binary(n: int = 7) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, 1, 8, 8), 0.3), generator=torch.Generator().manual_seed(1))


def test_analytic_kl_equals_monte_carlo() -> None:
    torch.manual_seed(0)
    model = _vae()
    x = _binary(5)
    with torch.no_grad():
        q = model.posterior(x)
        p = model.prior((5,))
        exact = kl_divergence(q, p)
        z = q.sample((200_000,))
        mc = (q.log_prob(z) - p.log_prob(z))
    se = mc.std(0) / math.sqrt(mc.shape[0])
    assert torch.all((mc.mean(0) - exact).abs() < 4 * se + 1e-4), (mc.mean(0), exact, se)
    # and against the closed form 0.5 * sum(mu^2 + s^2 - 1 - log s^2)
    mu, s = q.base_dist.loc, q.base_dist.scale
    closed = 0.5 * (mu**2 + s**2 - 1 - torch.log(s**2)).sum(-1)
    torch.testing.assert_close(exact, closed)


@pytest.mark.parametrize("elbo,k", [("trace", 1), ("meanfield", 1), ("iwae", 4)])
def test_fused_loss_equals_pyro_elbo(elbo: str, k: int) -> None:
    """The fast path computes the same number, from the same random draws, as Pyro's ELBO."""
    model = _vae()
    x = _binary(6)
    config = SVIConfig(elbo=elbo, num_particles=k)
    # Pyro's RenyiELBO bounds the likelihood of a whole batch at once, the IWAE bound one example at a
    # time: they agree example by example.
    batches = [x[i : i + 1] for i in range(len(x))] if elbo == "iwae" else [x]
    for xb in batches:
        torch.manual_seed(3)
        fused = model.fused_loss(xb, elbo, k) / xb.shape[0]
        torch.manual_seed(3)
        through_pyro = pyro_loss(model, pyro_elbo(config, max_plate_nesting=1), xb, None, differentiate=True)
        torch.testing.assert_close(fused, torch.as_tensor(through_pyro), rtol=1e-5, atol=1e-4)


def test_fused_gradients_equal_pyro_gradients() -> None:
    model = _vae()
    x = _binary(6)
    config = SVIConfig(elbo="meanfield")
    torch.manual_seed(5)
    (model.fused_loss(x, "meanfield") / 6).backward()
    fused = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    torch.manual_seed(5)
    pyro_loss(model, pyro_elbo(config, max_plate_nesting=1), x, None, differentiate=True).backward()
    for a, p in zip(fused, model.parameters()):
        torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-5)


def _ppca_data(tmp_path, n: int = 600, d: int = 6, q: int = 2) -> str:
    g = np.random.default_rng(0)
    w = g.normal(size=(d, q))
    z = g.normal(size=(n, q))
    x = z @ w.T + 0.5 + 0.3 * g.normal(size=(n, d))
    path = tmp_path / "ppca.npz"
    np.savez(path, x=x.astype(np.float32))
    return str(path)


def _exact_ppca_log_lik(model: VAE, x: torch.Tensor) -> torch.Tensor:
    """log N(x; b, W W^T + s^2 I) with W, b the linear decoder and s the learned scale (Tipping & Bishop 1999)."""
    linear = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linear) == 1
    w, b = linear[0].weight.double(), linear[0].bias.double()
    s2 = model.log_scale.double().exp() ** 2
    cov = w @ w.T + s2 * torch.eye(w.shape[0], dtype=torch.float64)
    return torch.distributions.MultivariateNormal(b, covariance_matrix=cov).log_prob(x.double().reshape(len(x), -1))


def test_iwae_estimate_against_exact_ppca_marginal(tmp_path) -> None:
    """Probabilistic PCA as a linear-Gaussian VAE: the k=1000 importance-sampling estimate is a lower
    bound of the exact marginal log-likelihood and within 0.05 nats per example of it."""
    spec = {
        "family": "vae",
        "data": {"name": "npz", "path": _ppca_data(tmp_path), "batch_size": 50},
        "latent": {"dim": 2},
        "likelihood": {"kind": "gaussian", "scale": 1.0, "learn_scale": True},
        "encoder": {"kind": "linear"},
        "decoder": {"kind": "linear"},
    }
    recipe = {"routine": "svi", "elbo": "iwae", "num_particles": 8, "optimizer": {"lr": 0.02}}
    run = ppgen.fit(spec, recipe, epochs=15, out=tmp_path / "run", progress=False)
    model, data = run.model, run.data
    x = torch.cat([data.split(part)[0] for part in ("train", "val", "test")])
    torch.manual_seed(0)
    est, se = model.log_likelihood(x, k=1000)
    with torch.no_grad():
        exact = _exact_ppca_log_lik(model, x)
    gap = float((exact - est.double()).mean())
    assert gap >= -3 * float(se.mean()) / math.sqrt(len(x)), gap  # a lower bound, up to Monte Carlo error
    assert gap < 0.05, gap
    # the ELBO (k = 1) is visibly looser than k = 1000: the estimator is not trivially exact
    elbo = model.evaluate_extra(x, None)["elbo"]
    assert float(exact.mean()) - elbo > gap


def test_bernoulli_on_continuous_data_is_a_clear_error() -> None:
    spec = VAESpec(data={"name": "digits", "binarize": "none"})
    with pytest.raises(ValueError, match="binarize"):
        VAE(spec, DataInfo((1, 8, 8), "continuous"))


def test_conv_vae_shapes_and_sampling() -> None:
    spec = VAESpec(data={"name": "mnist"}, latent={"dim": 4}, encoder={"kind": "conv", "hidden": [8, 16]},
                   decoder={"kind": "conv", "hidden": [8, 16]})
    model = VAE(spec, DataInfo((1, 28, 28), "binary"))
    x = torch.bernoulli(torch.full((3, 1, 28, 28), 0.2))
    assert model.sample(5).shape == (5, 1, 28, 28)
    loss = model.fused_loss(x, "meanfield")
    assert loss.shape == () and torch.isfinite(loss)
    tr = pyro.poutine.trace(model.model).get_trace(x)
    assert tr.nodes["x"]["fn"].event_shape == (1, 28, 28)
    assert tr.nodes["z"]["fn"].event_shape == (4,)


@pytest.mark.parametrize("elbo", ["trace", "meanfield"])
def test_fused_loss_equals_pyro_elbo_gaussian(elbo: str) -> None:
    spec = VAESpec(data={"name": "digits", "binarize": "none"}, latent={"dim": 2}, encoder={"hidden": [8]},
                   decoder={"kind": "linear"}, likelihood={"kind": "gaussian", "scale": 0.7, "learn_scale": True})
    model = VAE(spec, DataInfo((5,), "continuous"))
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(2))
    for k in (1, 3):
        config = SVIConfig(elbo=elbo, num_particles=k)
        torch.manual_seed(11)
        fused = model.fused_loss(x, elbo, k) / x.shape[0]
        torch.manual_seed(11)
        through_pyro = pyro_loss(model, pyro_elbo(config, max_plate_nesting=1), x, None, differentiate=True)
        torch.testing.assert_close(fused, torch.as_tensor(through_pyro), rtol=1e-5, atol=1e-4)
