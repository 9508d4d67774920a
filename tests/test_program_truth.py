"""Programs against exact answers: probabilistic PCA's marginal likelihood, a Gaussian with only
observed sites, a Gaussian mixture against the gmm family, and the VAE program against the hand-written
VAE with the same weights."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import ppgen
from ppgen.data.core import DataInfo
from ppgen.models.vae import VAE, VAESpec
from ppgen.registry import load_spec

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parent.parent


def _npz(tmp_path, x: np.ndarray, name: str = "d.npz") -> str:
    path = tmp_path / name
    np.savez(path, x=x.astype(np.float32))
    return str(path)


def _ppca_data(tmp_path, n: int = 600, d: int = 6, q: int = 2) -> str:
    g = np.random.default_rng(0)
    w = g.normal(size=(d, q))
    z = g.normal(size=(n, q))
    return _npz(tmp_path, z @ w.T + 0.5 + 0.3 * g.normal(size=(n, d)))


def test_ppca_program_estimate_is_a_tight_lower_bound_of_the_exact_marginal(tmp_path) -> None:
    """Probabilistic PCA (Tipping & Bishop 1999) written as a program: z ~ N(0, I), x ~ N(Wz + b, s^2 I).
    The k = 1000 estimate is at most the exact log N(x; b, W W^T + s^2 I) (up to Monte Carlo error) and
    within 0.05 nats per example of it."""
    spec = {
        "family": "program",
        "data": {"name": "npz", "path": _ppca_data(tmp_path), "batch_size": 50},
        "networks": {"decoder": {"kind": "linear", "inputs": ["z"]}},
        "model": {"z": {"dist": "Normal", "loc": 0.0, "scale": 1.0, "shape": [2]},
                  "x": {"dist": "Normal", "loc": "decoder", "scale": {"param": 1.0, "constraint": "positive"},
                        "observed": "x"}},
        "guide": "auto",
        "auto_network": {"kind": "linear"},
    }
    recipe = {"routine": "svi", "elbo": "iwae", "num_particles": 8, "optimizer": {"lr": 0.02}}
    run = ppgen.fit(spec, recipe, epochs=15, out=tmp_path / "run", progress=False)
    model, data = run.model, run.data
    x = torch.cat([data.split(part)[0] for part in ("train", "val", "test")])
    torch.manual_seed(0)
    est, se = model.log_likelihood(x, k=1000)
    with torch.no_grad():
        lin = model.nets["decoder"].core[0]
        w, b = lin.weight.double(), lin.bias.double()
        s2 = model.params.value("x__scale").double() ** 2
        cov = w @ w.T + s2 * torch.eye(6, dtype=torch.float64)
        exact = torch.distributions.MultivariateNormal(b, covariance_matrix=cov).log_prob(x.double())
    gap = float((exact - est.double()).mean())
    assert gap >= -3 * float(se.mean()) / math.sqrt(len(x)), gap
    assert gap < 0.05, gap
    elbo = model.evaluate_extra(x, None)["elbo"]
    assert float(exact.mean()) - elbo > gap  # the ELBO is visibly looser: the estimator is not trivially exact


def test_observed_only_program_has_the_exact_likelihood(tmp_path) -> None:
    """A Gaussian with a learnable mean and scale and no latent: log p(x) is exact (standard error 0),
    needs no importance samples, and fitting it finds the maximum-likelihood mean and scale."""
    g = np.random.default_rng(1)
    x_np = 1.5 + 0.7 * g.normal(size=(400, 3))
    spec = {
        "family": "program",
        "data": {"name": "npz", "path": _npz(tmp_path, x_np), "batch_size": 400},
        "model": {"x": {"dist": "Normal", "loc": {"param": 0.0, "shape": [3]},
                        "scale": {"param": 1.0, "constraint": "positive"}, "observed": "x"}},
    }
    run = ppgen.fit(spec, {"routine": "svi", "optimizer": {"lr": 0.05}}, epochs=400, out=tmp_path / "run", progress=False)
    model = run.model
    assert not model.importance_samples and model.program.exact
    x, _ = run.data.split("train")
    ll, se = model.log_likelihood(x, k=10)
    mu, s = model.params.value("x__loc"), model.params.value("x__scale")
    torch.testing.assert_close(ll, torch.distributions.Normal(mu, s).log_prob(x).sum(-1))
    assert torch.all(se == 0)
    torch.testing.assert_close(mu, x.mean(0), atol=0.02, rtol=0)
    torch.testing.assert_close(s, (x - x.mean(0)).pow(2).mean().sqrt(), atol=0.02, rtol=0)
    with pytest.raises(ppgen.SpecError, match="takes no importance samples"):
        from ppgen.evaluation.evaluate import evaluate

        evaluate(run, k=5)


def test_gmm_program_equals_the_gmm_family(tmp_path) -> None:
    """A Gaussian mixture written as a program with an enumerated assignment gives the gmm family's
    log-likelihood for the same parameters."""
    gmm_spec = load_spec(ROOT / "models/gmm.yaml", ["covariance=diag"])
    from ppgen import data as data_mod

    data = data_mod.load(gmm_spec.data)
    family = ppgen.build(gmm_spec, data.info)
    k, d = gmm_spec.components, data.info.event_shape[0]
    g = torch.Generator().manual_seed(0)
    weights = torch.softmax(torch.randn(k, generator=g), 0)
    locs = 3 * torch.randn(k, d, generator=g)
    scales = 0.5 + torch.rand(k, d, generator=g)
    family.point.set({"weights": weights, "locs": locs, "scales": scales})
    program = ppgen.build({
        "family": "program", "data": gmm_spec.data.model_dump(),
        "params": {"w": {"shape": [k], "init": weights.tolist(), "constraint": "simplex"},
                   "locs": {"shape": [k, d], "init": locs.tolist()},
                   "scales": {"shape": [k, d], "init": scales.tolist(), "constraint": "positive"}},
        "model": {"c": {"dist": "Categorical", "probs": "w", "enumerate": "parallel"},
                  "x": {"dist": "Normal", "loc": f"onehot(c, {k}) @ locs", "scale": f"onehot(c, {k}) @ scales",
                        "observed": "x"}},
    }, data.info)
    x, _ = data.split("test")
    ours, se = program.log_likelihood(x)
    theirs, _ = family.log_likelihood(x)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-4)
    assert torch.all(se == 0) and program.program.exact


def _same_vae(**likelihood) -> tuple[VAE, object]:
    vspec = VAESpec(data={"name": "digits"}, latent={"dim": 3}, encoder={"hidden": [16]}, decoder={"hidden": [16]},
                    **({"likelihood": likelihood} if likelihood else {}))
    info = DataInfo((1, 8, 8), "binary")
    torch.manual_seed(0)
    vae = VAE(vspec, info)
    program = ppgen.build(load_spec(ROOT / "models/vae_program.yaml", [
        "data.name=digits", "model.z.shape=[3]", "networks.encoder.hidden=[16]", "networks.decoder.hidden=[16]"]), info)
    with torch.no_grad():
        for src, dst in ((vae.encoder[1], program.nets["encoder"].core), (vae.decoder[0], program.nets["decoder"].core)):
            for a, b in zip(src.parameters(), dst.parameters()):
                b.copy_(a)
    return vae, program


def test_vae_program_equals_the_hand_written_vae() -> None:
    """The zoo's VAE written in the language and the hand-written VAE family, with the same weights, give
    the same ELBO (fused, every bound), the same evaluation ELBO and the same importance-sampled
    log-likelihood from the same draws."""
    vae, program = _same_vae()
    x = torch.bernoulli(torch.full((7, 1, 8, 8), 0.3), generator=torch.Generator().manual_seed(1))
    for elbo, k in (("trace", 1), ("meanfield", 1), ("meanfield", 4), ("iwae", 5)):
        torch.manual_seed(2)
        a = vae.fused_loss(x, elbo, k)
        torch.manual_seed(2)
        b = program.fused_loss(x, elbo, k)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
    torch.manual_seed(3)
    va = vae.evaluate_extra(x, None)
    torch.manual_seed(3)
    pa = program.evaluate_extra(x, None)
    assert math.isclose(va["elbo"], pa["elbo"], rel_tol=1e-5, abs_tol=1e-4)
    assert math.isclose(va["kl"], pa["kl"], rel_tol=1e-5, abs_tol=1e-5)
    torch.manual_seed(4)
    ll_a, se_a = vae.log_likelihood(x, k=300, chunk=250)
    torch.manual_seed(4)
    ll_b, se_b = program.log_likelihood(x, k=300, chunk=250)
    torch.testing.assert_close(ll_a, ll_b, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(se_a, se_b, rtol=1e-3, atol=1e-5)
