"""EM for programs of the model language that are finite Gaussian mixtures (ppgen.program.conjugate):
the same fit as the gmm family from the same start, the mode of the program's own objective, a log
posterior that never decreases, and every other program refused with the reason."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import ppgen
from ppgen import data as data_mod
from ppgen.inference.em_algorithm import em_fit, stack_starts
from ppgen.registry import load_spec
from ppgen.spec import SpecError

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parent.parent


def _gmm_program(data: dict, priors: bool = True, k: int = 3, d: int = 2, spherical: bool = False) -> dict:
    """The gmm family's model (models/gmm.yaml with covariance: diag or spherical) written as a program,
    its sites named differently and declared in another order."""
    sshape = [k] if spherical else [k, d]
    if priors:
        blocks = {
            "mu": {"dist": "Normal", "loc": 0.0, "scale": 5.0, "shape": [k, d], "global": True},
            "w": {"dist": "Dirichlet", "concentration": [1.0] * k, "global": True},
            "sd": {"dist": "LogNormal", "loc": "log(1.0)", "scale": 1.5, "shape": sshape, "global": True},
        }
        extra = {"params": {}, "guide_globals": "delta"}
    else:
        blocks = {}
        extra = {"params": {"mu": {"shape": [k, d], "init": 0.0}, "w": {"shape": [k], "init": 1.0 / k, "constraint": "simplex"},
                            "sd": {"shape": sshape, "init": 1.0, "constraint": "positive"}}}
    return {"family": "program", "data": data, **extra, "model": {
        **blocks,
        "z": {"dist": "Categorical", "probs": "w", "enumerate": "parallel"},
        "obs": {"dist": "Normal", "loc": f"onehot(z, {k}) @ mu", "scale": f"onehot(z, {k}) @ sd", "observed": "x"},
    }}


def _pair(covariance: str = "diag", priors: bool = True):
    gmm_spec = load_spec(ROOT / "models/gmm.yaml", [f"covariance={covariance}"])
    data = data_mod.load(gmm_spec.data)
    gmm = ppgen.build(gmm_spec, data.info)
    program = ppgen.build(_gmm_program(gmm_spec.data.model_dump(), priors, spherical=covariance == "spherical"),
                          data.info)
    return gmm, program, data


@pytest.mark.parametrize("covariance", ["diag", "spherical"])
def test_em_on_the_gmm_program_equals_em_on_the_gmm_family(covariance: str) -> None:
    """From the same three starts, EM on the program reaches the gmm family's EM fit: the same log
    posterior and log-likelihood at every restart, the same parameters; the program's own enumerated
    likelihood and its own objective (the svi routine's bound with the point-mass guide, full batch)
    agree with it at the result, and that objective is stationary there."""
    gmm, program, data = _pair(covariance)
    x, _ = data.split("train")
    starts = stack_starts(gmm, x, [0, 1, 2])
    theirs = em_fit(gmm, x, starts=starts, tol=1e-12)
    torch.manual_seed(0)
    before = _objective_grad(program, x)
    ours = em_fit(program, x, starts=starts, tol=1e-12)
    torch.testing.assert_close(ours.log_post, theirs.log_post, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(ours.log_lik, theirs.log_lik, rtol=1e-12, atol=1e-9)
    assert torch.equal(ours.iterations, theirs.iterations)
    for key in ("weights", "locs", "scales"):
        torch.testing.assert_close(ours.theta[key], theirs.theta[key], rtol=1e-10, atol=1e-10)
    best = {k: v.float() for k, v in ours.best_theta().items()}
    for key, value in program.point.values().items():
        torch.testing.assert_close(value, best[key], rtol=1e-5, atol=1e-6)
    # the program's own densities at the result
    xt, _ = data.split("test")
    ll, se = program.log_likelihood(xt)
    ref, _ = gmm.log_likelihood(xt)
    torch.testing.assert_close(ll, ref, rtol=1e-5, atol=1e-4)
    assert torch.all(se == 0)
    with torch.no_grad():
        objective = -float(program.fused_loss(x, "trace"))
    best_lp = float(ours.log_post[ours.best()])
    assert abs(objective - best_lp) < 1e-5 * abs(best_lp), (objective, best_lp)
    after = _objective_grad(program, x)
    assert after < 1e-3 * before, (after, before)


def _objective_grad(program, x) -> float:
    """The norm of the gradient of the program's full-batch objective in the point-mass values."""
    program.zero_grad()
    program.fused_loss(x, "trace").backward()
    grads = [p.grad.reshape(-1) for n, p in program.named_parameters() if p.grad is not None]
    assert grads
    return float(torch.cat(grads).norm())


def test_parameters_without_priors_give_maximum_likelihood_em() -> None:
    """Written with learnable parameters (no priors), the program's EM is maximum likelihood: the gmm
    family's EM with prior: flat from the same starts."""
    gmm, program, data = _pair(priors=False)
    x, _ = data.split("train")
    starts = stack_starts(gmm, x, [3, 4])
    theirs = em_fit(gmm, x, starts=starts, prior="flat", tol=1e-10)
    ours = em_fit(program, x, starts=starts, tol=1e-10)
    torch.testing.assert_close(ours.log_post, theirs.log_post, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(ours.log_post, ours.log_lik, rtol=0, atol=0)
    values = program.point.values()
    torch.testing.assert_close(values["locs"], theirs.best_theta()["locs"].float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(program.params.value("mu"), values["locs"])


def test_the_program_fitted_by_the_em_recipe_never_lowers_its_log_posterior(tmp_path) -> None:
    """ppgen.fit with inference/em.yaml: one EM iteration per epoch, the loss (minus the log posterior
    per point) never rises, the run ends when EM has converged, and the fit matches the gmm family's run
    from the same seed; it resumes exactly."""
    gmm_spec = load_spec(ROOT / "models/gmm.yaml", ["covariance=diag"])
    spec = _gmm_program(gmm_spec.data.model_dump())
    recipe = {"routine": "em", "tol": 1e-9, "restarts": 2, "epochs": 30}
    run = ppgen.fit(spec, recipe, out=tmp_path / "prog", progress=False)
    losses = [m["loss"] for m in run.metrics if m["kind"] == "epoch"]
    assert len(losses) >= 3
    for a, b in zip(losses, losses[1:]):
        assert b <= a + 1e-12 * abs(a), (a, b)
    ref = ppgen.fit(ROOT / "models/gmm.yaml", recipe, overrides=["covariance=diag"], out=tmp_path / "gmm", progress=False)
    ref_losses = [m["loss"] for m in ref.metrics if m["kind"] == "epoch"]
    assert abs(losses[-1] - ref_losses[-1]) < 1e-7
    x, _ = run.data.split("test")
    torch.testing.assert_close(run.model.log_likelihood(x)[0], ref.model.log_likelihood(x)[0], rtol=1e-5, atol=1e-4)
    # every service of the program on the EM fit: the exact held-out likelihood, InferenceData
    from ppgen.diagnostics.diagnose import diagnose
    from ppgen.evaluation.evaluate import evaluate

    result = evaluate(run)
    assert abs(result["test_nll_nats"] + float(run.model.log_likelihood(x)[0].double().mean())) < 1e-4
    assert result["test_nll_stderr"] > 0 and result.get("test_nll_mc_stderr", 0.0) == 0.0
    assert diagnose(run)["idata"].exists()
    torch.testing.assert_close(torch.as_tensor(run.idata.posterior["mu"].values[0, 0]), run.model.point.values()["locs"])
    half = ppgen.fit(spec, {**recipe, "epochs": 2}, out=tmp_path / "half", progress=False)
    assert half.path.exists()
    resumed = ppgen.fit(tmp_path / "half", None, epochs=30, resume=True, progress=False)
    again = [m["loss"] for m in resumed.metrics if m["kind"] == "epoch"]
    assert again == losses


def _variant(change) -> dict:
    spec = copy.deepcopy(_gmm_program({"name": "toymix", "distribution": "blobs3", "n": 300, "batch_size": 300}))
    change(spec)
    return spec


def _local_normal(s: dict) -> None:
    obs = s["model"].pop("obs")
    s["model"]["h"] = {"dist": "Normal", "loc": 0.0, "scale": 1.0, "shape": [2]}
    s["model"]["obs"] = {**obs, "loc": "onehot(z, 3) @ mu + h"}


def _logits(s: dict) -> None:
    s["model"]["z"].pop("probs")
    s["model"]["z"]["logits"] = "log(w)"


BAD = {
    "a continuous local latent": (_local_normal, "local latent sites are z, h"),
    "a Student-t emission": (lambda s: s["model"]["obs"].update({"dist": "StudentT", "df": 3.0}), "obs is StudentT"),
    "logits for the assignment": (_logits, "takes logits or an expression"),
    "a Normal guide on the globals": (lambda s: s.update({"guide_globals": "normal"}), "not a point mass"),
    "a Laplace prior on the means": (lambda s: s["model"]["mu"].update({"dist": "Laplace"}), "has a Laplace prior"),
    "priors that differ between entries": (lambda s: s["model"]["mu"].update({"loc": [[0.0, 1.0]] * 3}),
                                           "differs between entries"),
    "a mean not indexed by the assignment": (lambda s: s["model"]["obs"].update({"loc": "mu.T @ onehot(z, 3)"}),
                                             "EM needs onehot(z, 3) @ NAME"),
    "a Beta prior on a Normal mixture's scales": (lambda s: s["model"]["sd"].update(
        {"dist": "Beta", "concentration1": 2.0, "concentration0": 2.0, "loc": None, "scale": None}) or
        [s["model"]["sd"].pop(key) for key in ("loc", "scale")], "has a Beta prior"),
    "priors on some blocks only": (lambda s: (s["model"].pop("sd"), s["params"].update(
        {"sd": {"shape": [3, 2], "init": 1.0, "constraint": "positive"}})), "some of the weights"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_em_refuses_a_program_that_is_not_a_conjugate_mixture(case: str, tmp_path) -> None:
    change, reason = BAD[case]
    spec = _variant(change)
    with pytest.raises(SpecError) as err:
        ppgen.fit(spec, ROOT / "inference/em.yaml", out=tmp_path / "r", progress=False)
    msg = str(err.value)
    assert "EM does not apply to this program" in msg and reason in msg, msg
    assert "one of the zoo recipes iwae, mle, ssvae, svi (--inference NAME)" in msg and "inference/" not in msg


def test_em_on_the_factor_analysis_program_exits_2_from_the_command_line(tmp_path) -> None:
    out = subprocess.run([sys.executable, "-m", "ppgen.cli", "fit", "models/factor_analysis.yaml", "--inference",
                          "inference/em.yaml", "--set", "data.limit=100", "--out", str(tmp_path / "r")],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    assert "EM does not apply to this program" in out.stderr and "model.z is Normal" in out.stderr


@pytest.mark.parametrize("which", ["program", "gmm"])
def test_em_runs_to_a_tolerance_of_zero(which: str, tmp_path) -> None:
    """Near convergence an EM iteration moves the float32 copy of the fit by less than its resolution;
    that is not a fit that learns nothing: with tol 0 the run continues to its last epoch (or to an
    iteration that gains nothing at all) and its loss never rises."""
    gmm_spec = load_spec(ROOT / "models/gmm.yaml", ["covariance=diag"])
    spec = _gmm_program(gmm_spec.data.model_dump()) if which == "program" else gmm_spec
    run = ppgen.fit(spec, {"routine": "em", "tol": 0.0, "restarts": 2, "epochs": 25}, out=tmp_path / "r", progress=False)
    losses = [m["loss"] for m in run.metrics if m["kind"] == "epoch"]
    assert len(losses) >= 6
    for a, b in zip(losses, losses[1:]):
        assert b <= a + 1e-12 * abs(a), (a, b)


def _bernoulli_program(k: int = 5, priors: bool = True) -> dict:
    """A mixture of Bernoulli vectors (Bishop 2006, 9.3.3) on binarized 8x8 digits."""
    if priors:
        blocks = {"w": {"dist": "Dirichlet", "concentration": 2.0, "shape": [k], "global": True},
                  "P": {"dist": "Beta", "concentration1": 1.5, "concentration0": 3.0, "shape": [k, 64], "global": True}}
        extra: dict = {"guide_globals": "delta"}
    else:
        blocks = {}
        extra = {"params": {"w": {"shape": [k], "init": 1.0 / k, "constraint": "simplex"},
                            "P": {"shape": [k, 64], "init": 0.5, "constraint": "unit_interval"}}}
    return {"family": "program", "data": {"name": "digits", "binarize": "static", "limit": 600, "batch_size": 600},
            **extra, "model": {**blocks, "c": {"dist": "Categorical", "probs": "w", "enumerate": "parallel"},
                               "x": {"dist": "Bernoulli", "probs": f"onehot(c, {k}) @ P", "shape": [64], "observed": "x"}}}


def test_a_bernoulli_mixture_program_reaches_the_closed_form_map_point(tmp_path) -> None:
    """MAP-EM on a mixture of Bernoullis written as a program: the loss never rises, the fixed point
    satisfies the closed-form MAP equations w_k = (n_k + c - 1) / (N + K (c - 1)) and p_kd = (s_kd + a - 1)
    / (n_k + a + b - 2) with responsibilities computed here from torch's densities, and the program's own
    enumerated likelihood equals EM's."""
    recipe = {"routine": "em", "tol": 1e-12, "restarts": 2, "iterations_per_epoch": 25, "epochs": 100}
    run = ppgen.fit(_bernoulli_program(), recipe, out=tmp_path / "r", progress=False)
    losses = [m["loss"] for m in run.metrics if m["kind"] == "epoch"]
    assert len(losses) >= 2
    for a, b in zip(losses, losses[1:]):
        assert b <= a + 1e-12 * abs(a), (a, b)
    x, _ = run.data.split("train")
    x = x.reshape(x.shape[0], -1).double()
    values = {k: v.double() for k, v in run.model.point.values().items()}
    w, p = values["weights"], values["probs"]
    joint = torch.log(w) + torch.distributions.Bernoulli(probs=p).log_prob(x[:, None, :]).sum(-1)
    r = torch.softmax(joint, -1)
    n, s = r.sum(0), r.T @ x
    k, big_n = w.shape[0], x.shape[0]
    torch.testing.assert_close(w, (n + 1.0) / (big_n + k * 1.0), rtol=2e-5, atol=1e-6)
    torch.testing.assert_close(p, (s + 0.5) / (n[:, None] + 2.5), rtol=2e-5, atol=1e-6)
    ll, se = run.model.log_likelihood(run.data.split("train")[0])
    assert torch.all(se == 0)
    em_ll = -losses[-1] * big_n - float(run.model.log_prior({k: v[None] for k, v in values.items()})[0])
    assert abs(float(ll.double().sum()) - em_ll) < 1e-5 * abs(em_ll), (float(ll.sum()), em_ll)


def test_a_bernoulli_mixture_of_parameters_is_maximum_likelihood() -> None:
    """Written with parameters, the same mixture is fitted by maximum likelihood: at EM's fixed point
    w_k = n_k / N and p_kd = s_kd / n_k."""
    program = ppgen.build(_bernoulli_program(k=3, priors=False))
    x, _ = data_mod.load(program.spec.data).split("train")
    run = em_fit(program, x, restarts=1, seed=0, tol=1e-12, set_point=False)
    assert torch.equal(run.log_post, run.log_lik)
    values = run.best_theta()
    # pixels never on in a cluster get probability 0, which the program's parameter (a logit) holds
    assert bool((values["probs"] == 0).any())
    program.point.set(values)
    torch.testing.assert_close(program.point.values()["probs"], values["probs"].float(), rtol=1e-5, atol=1e-7)
    ll, _ = program.log_likelihood(x)
    assert abs(float(ll.double().sum()) - float(run.log_lik[0])) < 1e-5 * abs(float(run.log_lik[0]))
    w, p = values["weights"], values["probs"]
    xf = x.reshape(x.shape[0], -1).double()
    r = torch.softmax(torch.log(w) + torch.distributions.Bernoulli(probs=p).log_prob(xf[:, None, :]).sum(-1), -1)
    torch.testing.assert_close(w, r.mean(0), rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(p, (r.T @ xf) / r.sum(0)[:, None], rtol=1e-6, atol=1e-8)


def test_a_gaussian_mixture_of_images_read_as_vectors() -> None:
    """A program may read each 8x8 image as a vector of 64 grey levels (x: shape [64]); EM fits the
    mixture of those vectors and the program's own likelihood agrees with EM's."""
    spec = _gmm_program({"name": "digits", "binarize": "none", "limit": 300, "batch_size": 300}, k=2, d=64,
                        spherical=True)
    spec["model"]["obs"]["shape"] = [64]
    program = ppgen.build(spec)
    x, _ = data_mod.load(program.spec.data).split("train")
    run = em_fit(program, x, restarts=1, seed=0, tol=1e-8)
    ll, _ = program.log_likelihood(x)
    assert abs(float(ll.double().sum()) - float(run.log_lik[0])) < 1e-5 * abs(float(run.log_lik[0]))
