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


# --------------------------------------------------------------------------- the fused path only where it holds


class MixturePriorVAE(VAE):
    """A VAE with a learned mixture-of-Gaussians prior p(z) = sum_c pi_c N(z; mu_c, I): a subclass that
    redefines ``prior`` and not ``fused_loss``."""

    def __init__(self, spec: VAESpec, info: DataInfo, components: int = 3) -> None:
        super().__init__(spec, info)
        self.prior_means = torch.nn.Parameter(2.0 * torch.randn(components, self.z_dim))
        self.prior_logits = torch.nn.Parameter(torch.zeros(components))

    def prior(self, batch: tuple[int, ...] = ()) -> pyro.distributions.Distribution:
        mix = pyro.distributions.Categorical(logits=self.prior_logits.expand(*batch, -1))
        comp = pyro.distributions.Normal(self.prior_means.expand(*batch, -1, -1), 1.0).to_event(1)
        return pyro.distributions.MixtureSameFamily(mix, comp)


def test_a_subclass_with_its_own_prior_trains_its_prior_under_the_default_recipe() -> None:
    from ppgen.inference.svi import SVI
    from ppgen.models.base import fused_loss_applies

    torch.manual_seed(0)
    spec = VAESpec(data={"name": "digits"}, latent={"dim": 3}, encoder={"hidden": [16]}, decoder={"hidden": [16]})
    model = MixturePriorVAE(spec, DataInfo((1, 8, 8), "binary"))
    assert fused_loss_applies(_vae()) and not fused_loss_applies(model)
    routine = SVI(SVIConfig())  # the default recipe: meanfield, fused: true
    state = routine.init(model)
    assert not routine.use_fused
    x = _binary(32)
    torch.manual_seed(1)
    loss = routine._loss(model, x, None)
    torch.manual_seed(1)
    assert torch.equal(loss, pyro_loss(model, pyro_elbo(SVIConfig(), 1), x, None))
    (grad,) = torch.autograd.grad(loss, [model.prior_means])
    assert grad.abs().sum() > 0
    means = model.prior_means.detach().clone()
    for _ in range(3):
        routine.step(state, (x, None))
    assert not torch.equal(means, model.prior_means)
    # replacing a method on the instance counts too
    other = _vae()
    other.prior = model.prior
    assert not fused_loss_applies(other)


# --------------------------------------------------------------------------- the importance-weighted bound


def test_iwae_bound_per_example_equals_the_fused_bound_for_the_same_draws() -> None:
    from ppgen.inference.svi import IWAE

    model, x, k = _vae(), _binary(6), 5
    torch.manual_seed(4)
    per_example, glob = IWAE(k, 1).bound(model, x)
    params = list(model.parameters())
    g_general = torch.autograd.grad(-per_example.sum(), params)
    torch.manual_seed(4)
    fused = model.fused_loss(x, "iwae", k)
    g_fused = torch.autograd.grad(fused, params)
    assert per_example.shape == (6,) and float(glob) == 0.0
    torch.testing.assert_close(-per_example.sum(), fused, rtol=1e-5, atol=1e-4)
    for a, b in zip(g_general, g_fused):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # example by example, as Burda et al. (2015, eq. 8) define it, from the same draws
    torch.manual_seed(4)
    with torch.no_grad():
        q = model.posterior(x)
        z = q.rsample((k,))
        log_w = model.likelihood(z).log_prob(x) + model.prior((k, 6)).log_prob(z) - q.log_prob(z)
    torch.testing.assert_close(per_example.detach(), torch.logsumexp(log_w, 0) - math.log(k), rtol=1e-5, atol=1e-4)
    # one particle: the bound is the single-sample ELBO
    torch.manual_seed(6)
    one = IWAE(1, 1).loss(model, x, None)
    torch.manual_seed(6)
    torch.testing.assert_close(one, pyro_loss(model, pyro_elbo(SVIConfig(elbo="trace"), 1), x, None))


class _Conjugate:
    """z ~ N(0, 1), x | z ~ N(z, 1), and the exact posterior N(x/2, 1/2) as the guide: every importance
    weight is p(x), so the bound is log N(x; 0, 2) exactly, for any k."""

    max_plate_nesting = 1

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", pyro.distributions.Normal(torch.zeros_like(x), 1.0))
            pyro.sample("x", pyro.distributions.Normal(z, 1.0), obs=x)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", pyro.distributions.Normal(x / 2, math.sqrt(0.5)))


def test_iwae_bound_of_a_conjugate_model_is_the_exact_marginal() -> None:
    from ppgen.inference.svi import IWAE

    x = torch.tensor([-1.5, 0.0, 0.3, 2.0], dtype=torch.float64)
    exact = torch.distributions.Normal(0.0, math.sqrt(2.0)).log_prob(x)
    for k in (1, 7):
        per_example, _ = IWAE(k, 1).bound(_Conjugate(), x)
        torch.testing.assert_close(per_example, exact)


def test_iwae_refuses_what_its_per_example_bound_cannot_handle() -> None:
    from ppgen.inference.svi import IWAE

    class GlobalLatent(_Conjugate):
        def model(self, x, y=None):
            w = pyro.sample("w", pyro.distributions.Normal(0.0, 1.0))
            with pyro.plate("data", x.shape[0]):
                pyro.sample("x", pyro.distributions.Normal(w, 1.0), obs=x)

        def guide(self, x, y=None):
            pyro.sample("w", pyro.distributions.Normal(0.0, 1.0))

    class Discrete(_Conjugate):
        def model(self, x, y=None):
            with pyro.plate("data", x.shape[0]):
                c = pyro.sample("c", pyro.distributions.Bernoulli(0.5 * torch.ones_like(x)))
                pyro.sample("x", pyro.distributions.Normal(c, 1.0), obs=x)

        def guide(self, x, y=None):
            with pyro.plate("data", x.shape[0]):
                pyro.sample("c", pyro.distributions.Bernoulli(0.5 * torch.ones_like(x)))

    x = torch.zeros(3)
    with pytest.raises(ppgen.SpecError, match="'w' is outside the 'data' plate"):
        IWAE(4, 1).bound(GlobalLatent(), x)
    with pytest.raises(ppgen.SpecError, match="guide site 'c' .* cannot be reparameterized"):
        IWAE(4, 1).bound(Discrete(), x)


def test_iwae_through_pyro_trains(tmp_path) -> None:
    """``elbo: iwae`` with ``fused: false`` moves every weight and lowers the loss (with Pyro's Renyi
    ELBO it moved none: that ELBO differentiates only where it sees param sites)."""
    spec = {"family": "vae", "data": {"name": "digits", "batch_size": 64}, "latent": {"dim": 3},
            "encoder": {"hidden": [32]}, "decoder": {"hidden": [32]}}
    recipe = {"routine": "svi", "elbo": "iwae", "num_particles": 4, "fused": False, "epochs": 3}
    run = ppgen.fit(spec, recipe, out=tmp_path / "run", seed=1, progress=False)
    losses = [m["loss"] for m in run.metrics if m["kind"] == "epoch"]
    assert losses[-1] < losses[0] - 3.0, losses
    fused = ppgen.fit(spec, {**recipe, "fused": True}, out=tmp_path / "fused", seed=1, progress=False)
    # the general and the fused path draw the same numbers: the same fit
    assert [m["loss"] for m in fused.metrics if m["kind"] == "epoch"] == pytest.approx(losses, rel=1e-4)
