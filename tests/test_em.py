"""EM against exact answers: with flat priors it reaches scikit-learn's and hmmlearn's maximum-likelihood
fits from the same start; under the declared priors its fixed point is a stationary point of the log
posterior (autograd) and satisfies the closed-form MAP equations (with responsibilities and pair
marginals computed independently, the HMM's by brute force over all paths); the log posterior never
decreases; restarts fitted together equal the same starts fitted one by one; the three forward-backward
methods agree, and the scaled one falls back where it cannot promise an exact result; a run resumes
exactly and stops when converged; bad recipes and specs are refused with a message."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import torch

import ppgen
from ppgen.data.core import DataInfo
from ppgen.inference.base import Plan
from ppgen.inference.em import EMConfig, EMRoutine
from ppgen.inference.em_algorithm import as_start, em_fit, em_iterate, em_start, stack_starts, statistics
from ppgen.models.bayesian.gmm import GMM, GMMSpec
from ppgen.models.bayesian.forward_backward import forward_backward
from ppgen.models.bayesian.hmm import HMM
from ppgen.models.bayesian.hmm_spec import HMMSpec
from ppgen.models.bayesian.mstep import CovariancePrior, covariance_mode, lognormal_scale_mode
from ppgen.spec import SpecError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

F64 = torch.float64


def _gmm(cov: str = "diag", k: int = 3, d: int = 2, **prior) -> GMM:
    return GMM(GMMSpec(components=k, covariance=cov, data={"name": "toymix"}, prior=prior), DataInfo((d,), "continuous"))


def _hmm(kind: str = "gaussian", k: int = 3, t: int = 20, d: int = 1, symbols: int = 4, **prior) -> HMM:
    emission = {"kind": "gaussian"} if kind == "gaussian" else {"kind": "categorical", "symbols": symbols}
    return HMM(HMMSpec(states=k, emission=emission, data={"name": "toyseq"}, prior=prior), DataInfo((t, d), "continuous"))


def _blobs(n: int) -> torch.Tensor:
    return ppgen.data.load(name="toymix", distribution="blobs3", n=n).split("train")[0]


def _toyseq(kind: str, n: int) -> torch.Tensor:
    return ppgen.data.load(name="toyseq", distribution=kind, n=n).split("train")[0]


def _start(model, x: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
    """The family's data-driven start in float64, probability vectors renormalised."""
    values = {k: v[0].double() for k, v in stack_starts(model, x, [seed]).items()}
    for k in ("weights", "initial", "transition", "emission_probs"):
        if k in values:
            values[k] = values[k] / values[k].sum(-1, keepdim=True)
    return values


def _grad_log_joint(model, x: torch.Tensor, theta: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """d log p(x, theta) / d u at theta, u each site's unconstrained coordinates (the point estimate's)."""
    us = {s.name: s.transform().inv(theta[s.name].double()).detach().requires_grad_() for s in model.sites}
    values = {s.name: s.transform()(us[s.name])[None] for s in model.sites}
    lj = model.log_joint(x.double(), values)[0]
    return dict(zip(us, torch.autograd.grad(lj, list(us.values()))))


# --------------------------------------------------------------------------- flat priors: the references


@pytest.mark.parametrize("cov", ["diag", "spherical", "full"])
def test_flat_em_reaches_sklearn_from_the_same_start(cov: str) -> None:
    from sklearn.mixture import GaussianMixture

    x = _blobs(800)
    model = _gmm(cov)
    start = _start(model, x)
    if cov == "full":
        tril = start["scales"][..., None] * start["corr_cholesky"]
        precisions = torch.linalg.inv(tril @ tril.mT)
    else:
        precisions = start["scales"] ** -2
    ref = GaussianMixture(3, covariance_type=cov, tol=1e-12, max_iter=5000, reg_covar=0.0,
                          weights_init=start["weights"].numpy(), means_init=start["locs"].numpy(),
                          precisions_init=precisions.numpy())
    ref.fit(x.double().numpy())
    run = em_fit(model, x, starts={k: v[None] for k, v in start.items()}, prior="flat", tol=1e-13, max_iterations=5000)
    ours = float(run.log_lik[0]) / x.shape[0]
    assert abs(ours - ref.score(x.double().numpy())) < 1e-4
    # the same fixed point, not only the same value
    theta = run.best_theta()
    np.testing.assert_allclose(theta["weights"].numpy(), ref.weights_, atol=1e-6)
    np.testing.assert_allclose(theta["locs"].numpy(), ref.means_, atol=1e-5)


@pytest.mark.parametrize("kind", ["gaussian", "casino"])
def test_flat_em_reaches_hmmlearn_from_the_same_start(kind: str) -> None:
    hmm = pytest.importorskip("hmmlearn.hmm")
    x = _toyseq(kind, 60)
    n, t = x.shape[:2]
    model = _hmm("gaussian", k=3, t=t) if kind == "gaussian" else _hmm("categorical", k=2, t=t, symbols=6)
    start = _start(model, x)
    flat = x.reshape(n * t, 1).double().numpy()
    if kind == "gaussian":
        # hmmlearn's defaults put a small prior on the variances; without it, it is maximum likelihood
        ref = hmm.GaussianHMM(3, covariance_type="diag", n_iter=5000, tol=1e-6, init_params="", min_covar=1e-300,
                              covars_prior=0.0, means_weight=0.0)
        ref.means_ = start["locs"].numpy()
        ref.covars_ = (start["scales"] ** 2).numpy()
    else:
        ref = hmm.CategoricalHMM(2, n_iter=5000, tol=1e-6, init_params="")
        ref.emissionprob_ = start["emission_probs"].numpy()
        flat = flat.astype(np.int64)
    ref.startprob_ = start["initial"].numpy()
    ref.transmat_ = start["transition"].numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref.fit(flat, [t] * n)
    run = em_fit(model, x, starts={k: v[None] for k, v in start.items()}, prior="flat", tol=1e-8, max_iterations=5000)
    ours = float(run.log_lik[0]) / (n * t)
    assert abs(ours - ref.score(flat, [t] * n) / (n * t)) < 1e-4
    np.testing.assert_allclose(run.best_theta()["transition"].numpy(), ref.transmat_, atol=2e-3)


# --------------------------------------------------------------------------- MAP: stationarity and the MAP equations


MAP_CASES = {
    "gmm-diag": lambda: _gmm("diag", weights_concentration=3.0, loc={"mean": 0.5, "std": 0.7},
                             scale={"median": 0.4, "log_std": 0.5}),
    "gmm-spherical": lambda: _gmm("spherical", k=4, weights_concentration=2.0, scale={"median": 2.0, "log_std": 0.3}),
    "gmm-full": lambda: _gmm("full", k=4, weights_concentration=1.5, loc={"std": 0.8}, scale={"median": 0.3, "log_std": 0.4},
                             lkj_concentration=4.0),
    "hmm-gaussian": lambda: _hmm("gaussian", k=3, t=50, initial_concentration=2.0, transition_concentration=1.5,
                                 stickiness=4.0, loc={"std": 1.0}, scale={"median": 1.5, "log_std": 0.5}),
    "hmm-categorical": lambda: _hmm("categorical", k=2, t=60, symbols=6, emission_concentration=3.0,
                                    transition_concentration=2.0, stickiness=3.0),
}


def _case_data(name: str) -> torch.Tensor:
    if name.startswith("gmm"):
        return _blobs(250)
    return _toyseq("gaussian" if name == "hmm-gaussian" else "casino", 40)


@pytest.mark.parametrize("name", list(MAP_CASES))
def test_map_em_fixed_point_is_a_stationary_point_of_the_log_posterior(name: str) -> None:
    """At EM's fixed point the gradient of log p(x, theta) with respect to the unconstrained coordinates of
    every site (what the MAP routine optimizes) vanishes, relative to the gradient at the start."""
    model = MAP_CASES[name]()
    x = _case_data(name)
    start = _start(model, x)
    run = em_fit(model, x, starts={k: v[None] for k, v in start.items()}, tol=0.0, max_iterations=5000)
    at_start = _grad_log_joint(model, x, start)
    at_end = _grad_log_joint(model, x, run.best_theta())
    scale = max(float(g.abs().max()) for g in at_start.values())
    assert scale > 1.0  # the start is not already stationary: the check below can fail
    for site, g in at_end.items():
        assert float(g.abs().max()) < 1e-6 * scale, (site, float(g.abs().max()), scale)
    # and the log posterior is the family's log joint there
    lj = model.log_joint(x.double(), {k: v[None] for k, v in run.best_theta().items()})[0]
    assert math.isclose(float(lj), float(run.log_post[0]), rel_tol=1e-12)


def test_map_em_satisfies_the_mixture_map_equations() -> None:
    """Diagonal GMM: at the fixed point, with responsibilities r from the family's own density,
    w_k = (N_k + a - 1) / (N + K (a - 1)); mu_kd = (sum r x / s_kd^2 + m / s0^2) / (N_k / s_kd^2 + 1 / s0^2);
    and v = log s_kd solves S e^{-2v} = N_k + 1 + (v - log median) / tau^2, S = sum r (x - mu)^2."""
    a, m, s0, median, tau = 3.0, 0.5, 0.7, 0.4, 0.5
    model = _gmm("diag", weights_concentration=a, loc={"mean": m, "std": s0}, scale={"median": median, "log_std": tau})
    x = _blobs(250).double()
    run = em_fit(model, x, tol=0.0, max_iterations=5000)
    th = run.best_theta()
    r = model.responsibilities(x, {k: v[None] for k, v in th.items()})[0]  # (N, K), not EM's E-step
    nk = r.sum(0)
    n, k = r.shape
    torch.testing.assert_close(th["weights"], (nk + a - 1) / (n + k * (a - 1)), rtol=1e-8, atol=1e-10)
    var = th["scales"] ** 2
    mu = ((r.T @ x) / var + m / s0**2) / (nk[:, None] / var + 1 / s0**2)
    torch.testing.assert_close(th["locs"], mu, rtol=1e-7, atol=1e-8)
    scatter = (r[:, :, None] * (x[:, None, :] - th["locs"]) ** 2).sum(0)
    v = th["scales"].log()
    lhs = scatter * torch.exp(-2 * v)
    rhs = nk[:, None] + 1 + (v - math.log(median)) / tau**2
    torch.testing.assert_close(lhs, rhs, rtol=1e-7, atol=1e-7)


def test_map_em_satisfies_the_hmm_map_equations() -> None:
    """A small categorical HMM (K = 2, T = 5: 32 paths per sequence): with the posterior over paths
    computed by brute force at the fixed point, pi = (gamma_1 + a0 - 1) / (N + K (a0 - 1)), each transition
    row is (xi_i + a + kappa e_i - 1) / sum, each emission row (counts_k + b - 1) / sum."""
    a0, a, kappa, b = 2.0, 1.5, 3.0, 2.5
    model = _hmm("categorical", k=2, t=5, symbols=3, initial_concentration=a0, transition_concentration=a,
                 stickiness=kappa, emission_concentration=b)
    g = torch.Generator().manual_seed(3)
    z = torch.zeros(30, 5, dtype=torch.long)
    for t in range(1, 5):  # sticky paths, symbols that depend on the state: something to learn
        z[:, t] = torch.where(torch.rand(30, generator=g) < 0.85, z[:, t - 1], 1 - z[:, t - 1])
    z[:15] = 1 - z[:15]
    x = torch.where(torch.rand(30, 5, generator=g) < 0.7, 2 * z, torch.randint(0, 3, (30, 5), generator=g))
    x = x[..., None].double()
    run = em_fit(model, x, tol=0.0, max_iterations=5000)
    th = run.best_theta()
    paths = torch.tensor(list(itertools.product(range(2), repeat=5)))  # (32, 5)
    log_p = (th["initial"].log()[paths[:, 0]][:, None]
             + sum(th["transition"].log()[paths[:, t - 1], paths[:, t]] for t in range(1, 5))[:, None]
             + sum(th["emission_probs"].log()[paths[:, t][:, None], x[None, :, t, 0].long()] for t in range(5)))
    post = torch.softmax(log_p, 0)  # (paths, N)
    g1 = torch.stack([(post * (paths[:, 0] == i)[:, None]).sum() for i in range(2)])
    xi = torch.tensor([[float(sum((post * ((paths[:, t - 1] == i) & (paths[:, t] == j))[:, None]).sum()
                                  for t in range(1, 5))) for j in range(2)] for i in range(2)], dtype=F64)
    counts = torch.tensor([[float(sum((post * ((paths[:, t] == i)[:, None] & (x[None, :, t, 0] == v))).sum()
                                      for t in range(5))) for v in range(3)] for i in range(2)], dtype=F64)
    conc = a + kappa * torch.eye(2, dtype=F64)
    torch.testing.assert_close(th["initial"], (g1 + a0 - 1) / (30 + 2 * (a0 - 1)), rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(th["transition"], (xi + conc - 1) / (xi + conc - 1).sum(-1, keepdim=True), rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(th["emission_probs"], (counts + b - 1) / (counts + b - 1).sum(-1, keepdim=True),
                               rtol=1e-7, atol=1e-9)


def test_scale_newton_solves_the_lognormal_mode_equation() -> None:
    """The scale M-step against a bracketing root solve, from scatters that put the start on either side
    of the root, with an empty component (S = 0, count 0) among them."""
    from scipy.optimize import brentq

    scatter = torch.tensor([0.0, 1e-8, 0.3, 5.0, 4e4, 2.0], dtype=F64)
    count = torch.tensor([0.0, 3.0, 10.0, 1.0, 100.0, 0.5], dtype=F64)
    l0, tau = math.log(0.7), 0.8
    sigma = lognormal_scale_mode(scatter, count, l0, tau)
    for s, n, got in zip(scatter.tolist(), count.tolist(), sigma.tolist()):
        f = lambda v: s * math.exp(-2 * v) - (n + 1) - (v - l0) / tau**2  # noqa: E731
        root = brentq(f, -60.0, 60.0, xtol=1e-15)
        assert abs(math.log(got) - root) < 1e-10


def test_scale_newton_of_a_constant_coordinate_with_many_points() -> None:
    """Zero scatter under many points (a pixel that is 0 in every image): the root is log_median - (n + 1)
    tau^2, far below where e^{-2v} fits in a float; the answer is that root, not nan."""
    for dtype in (torch.float32, F64):
        sigma = lognormal_scale_mode(torch.zeros(2, dtype=dtype), torch.tensor([1000.0, 5.0], dtype=dtype), 0.0, 1.5)
        expected = torch.tensor([-(1001.0) * 2.25, -6.0 * 2.25], dtype=F64).exp().to(dtype)
        torch.testing.assert_close(sigma, expected, rtol=1e-6, atol=0.0)


def test_covariance_newton_reaches_the_m_step_maximum() -> None:
    """Full covariance: the Newton M-step's factor maximises Q (the objective's gradient by autograd
    vanishes there, and random nearby factors are worse), from a bad previous value."""
    g = torch.Generator().manual_seed(0)
    d = 3
    a = torch.randn(6, d, d, generator=g, dtype=F64)
    scatter = a @ a.mT * 5 + torch.eye(d, dtype=F64)
    count = torch.tensor([40.0, 3.0, 0.5, 200.0, 10.0, 1.0], dtype=F64)
    prior = CovariancePrior(math.log(0.5), 0.7, 2.5)
    previous = torch.eye(d, dtype=F64).expand(6, d, d) * 3.0
    chol = covariance_mode(scatter, count, previous, prior)

    def objective(c_low: torch.Tensor) -> torch.Tensor:
        sig = torch.linalg.vector_norm(c_low, dim=-1)
        corr = c_low / sig[..., None]
        cov = c_low @ c_low.mT
        lik = -0.5 * count * torch.logdet(cov) - 0.5 * torch.linalg.solve(cov, scatter).diagonal(dim1=-2, dim2=-1).sum(-1)
        lp = torch.distributions.LogNormal(torch.tensor(prior.log_median, dtype=F64), prior.log_std).log_prob(sig).sum(-1)
        lp = lp + torch.distributions.LKJCholesky(d, torch.tensor(prior.eta, dtype=F64)).log_prob(corr)
        return lik + lp

    coords = torch.cat([chol.diagonal(dim1=-2, dim2=-1).log(), chol[:, 1:, :1].reshape(6, -1), chol[:, 2:, 1:2].reshape(6, -1)], -1)
    coords = coords.detach().requires_grad_()

    def rebuild(c: torch.Tensor) -> torch.Tensor:
        low = torch.diag_embed(c[:, :d].exp())
        rows, cols = torch.tril_indices(d, d, -1)
        low = low.index_put((torch.arange(6)[:, None], rows[None], cols[None]), c[:, d:])
        return low

    grad, = torch.autograd.grad(objective(rebuild(coords)).sum(), coords)
    assert float(grad.abs().max()) < 1e-7 * (float(count.max()) + 1)
    best = objective(chol)
    for _ in range(20):
        jitter = chol + 1e-3 * torch.tril(torch.randn(chol.shape, generator=g, dtype=F64))
        assert bool((objective(jitter) <= best + 1e-9).all())
    assert bool((best > objective(previous)).all())


# --------------------------------------------------------------------------- monotone, batched, methods


def _random_problem(seed: int):
    """A random family, priors, data and starts."""
    g = torch.Generator().manual_seed(seed)
    u = lambda lo, hi: float(lo + (hi - lo) * torch.rand((), generator=g))  # noqa: E731
    which = seed % 5
    if which < 3:
        cov = ["diag", "spherical", "full"][which]
        model = _gmm(cov, k=3, weights_concentration=u(1, 4), loc={"mean": u(-1, 1), "std": u(0.3, 5)},
                     scale={"median": u(0.2, 3), "log_std": u(0.2, 2)}, lkj_concentration=u(1, 5))
        centres = 3 * torch.randn(3, 2, generator=g, dtype=F64)
        x = (centres[torch.randint(3, (200,), generator=g)] + torch.randn(200, 2, generator=g, dtype=F64)).float()
    elif which == 3:
        model = _hmm("gaussian", k=3, t=20, initial_concentration=u(1, 3), transition_concentration=u(1, 3),
                     stickiness=u(0, 5), loc={"std": u(0.5, 5)}, scale={"median": u(0.3, 3), "log_std": u(0.3, 2)})
        x = (torch.randn(30, 20, 1, generator=g) * 2).cumsum(1) / 4
    else:
        model = _hmm("categorical", k=3, t=20, symbols=4, emission_concentration=u(1, 3), transition_concentration=u(1, 3))
        x = torch.randint(0, 4, (30, 20, 1), generator=g).float()
    return model, x


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("prior", ["declared", "flat"])
def test_log_posterior_never_decreases(seed: int, prior: str) -> None:
    model, x = _random_problem(seed)
    run = em_start(model, x, stack_starts(model, x, [seed, seed + 100]), flat=prior == "flat")
    trace = [run.log_post.clone()]
    for _ in range(60):
        run = em_iterate(model, x, run, iterations=1, tol=-math.inf, flat=prior == "flat")
        trace.append(run.log_post.clone())
    lp = torch.stack(trace)  # (iterations + 1, restarts)
    assert bool(torch.isfinite(lp).all())
    steps = lp[1:] - lp[:-1]
    assert bool((steps >= -1e-10 * lp[:-1].abs()).all()), steps.min()
    assert bool((lp[-1] > lp[0]).all())  # it did climb


@pytest.mark.parametrize("name", ["gmm-full", "hmm-gaussian"])
def test_batched_restarts_equal_the_same_starts_one_by_one(name: str) -> None:
    model = MAP_CASES[name]()
    x = _case_data(name)
    starts = stack_starts(model, x, [0, 1, 2, 3])
    together = em_fit(model, x, starts=starts, tol=1e-10, max_iterations=2000)
    assert len(set(together.iterations.tolist())) > 1  # restarts left the batch at different times
    # the model keeps the best
    site = "transition" if name.startswith("hmm") else "locs"
    torch.testing.assert_close(model.point.values()[site].detach().double(), together.best_theta()[site], rtol=0, atol=1e-6)
    assert together.best() == int(together.log_post.argmax())
    for r in range(4):
        alone = em_fit(model, x, starts={k: v[r : r + 1] for k, v in starts.items()}, tol=1e-10, max_iterations=2000)
        assert int(alone.iterations[0]) == int(together.iterations[r])
        for k, v in alone.theta.items():
            torch.testing.assert_close(v[0], together.theta[k][r], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(alone.log_post[0], together.log_post[r], rtol=1e-13, atol=0.0)


def _brute_force_hmm(e: torch.Tensor, log_pi: torch.Tensor, log_a: torch.Tensor):
    """log p(x_n), gamma and summed xi by enumerating all K^T paths, for one parameter value."""
    n, t, k = e.shape
    paths = torch.tensor(list(itertools.product(range(k), repeat=t)))
    scores = torch.stack([log_pi[p[0]] + sum(log_a[p[i - 1], p[i]] for i in range(1, t)) + e[:, torch.arange(t), p].sum(-1)
                          for p in paths])  # (P, N)
    ll = torch.logsumexp(scores, 0)
    w = torch.exp(scores - ll)
    gamma = torch.stack([(w[:, :, None] * (paths[:, None, :] == j)).sum(0) for j in range(k)], -1)
    xi = torch.zeros(k, k, dtype=e.dtype)
    for i in range(1, t):
        for a in range(k):
            for b in range(k):
                xi[a, b] += (w * ((paths[:, i - 1] == a) & (paths[:, i] == b))[:, None]).sum()
    return ll, gamma, xi


@pytest.mark.parametrize("method", ["scaled", "log", "scan", "auto"])
@pytest.mark.parametrize("t", [1, 2, 5])
def test_forward_backward_equals_brute_force(method: str, t: int) -> None:
    g = torch.Generator().manual_seed(t)
    s, n, k = 2, 4, 3
    e = 3 * torch.randn(s, n, t, k, generator=g, dtype=F64)
    log_pi = torch.log_softmax(torch.randn(s, k, generator=g, dtype=F64), -1)
    log_a = torch.log_softmax(torch.randn(s, k, k, generator=g, dtype=F64), -1)
    ll, gamma, xi = forward_backward(e, log_pi, log_a, method)
    for i in range(s):
        ll_b, gamma_b, xi_b = _brute_force_hmm(e[i], log_pi[i], log_a[i])
        torch.testing.assert_close(ll[i], ll_b, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(gamma[i], gamma_b, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(xi[i], xi_b, rtol=1e-10, atol=1e-12)


def test_auto_takes_the_scan_for_a_few_long_sequences_and_the_scaled_recursion_otherwise() -> None:
    from ppgen.models.bayesian.forward_backward import choose_method

    assert choose_method(1, 1, 1000, 3) == "scan"
    assert choose_method(1, 10, 10_000, 3) == "scan"
    assert choose_method(1, 2000, 200, 3) == "scaled"
    assert choose_method(10, 320, 50, 3) == "scaled"
    assert choose_method(1, 21, 8, 2) == "scaled"
    assert choose_method(1, 2000, 200, 3, device=torch.device("cuda")) == "scan"
    assert choose_method(10, 100_000, 1000, 8, device=torch.device("cuda")) == "scaled"  # too big to keep
    g = torch.Generator().manual_seed(0)
    e = torch.randn(1, 2, 300, 3, generator=g, dtype=F64)
    log_pi = torch.log_softmax(torch.randn(1, 3, generator=g, dtype=F64), -1)
    log_a = torch.log_softmax(torch.randn(1, 3, 3, generator=g, dtype=F64), -1)
    for a, b in zip(forward_backward(e, log_pi, log_a, "auto"), forward_backward(e, log_pi, log_a, "scaled")):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_em_leaves_the_callers_starting_values_alone() -> None:
    model = _gmm("diag")
    x = _blobs(100)
    starts = {k: v.double() for k, v in stack_starts(model, x, [0, 1]).items()}
    starts["scales"][1, 0] = math.inf  # a start with no density: failed from the outset, the other runs alone
    kept = {k: v.clone() for k, v in starts.items()}
    run = em_fit(model, x, starts=starts, tol=1e-9)
    assert run.failed.tolist() == [False, True] and int(run.iterations[0]) > 0
    for k in starts:
        assert torch.equal(starts[k], kept[k]), k


def test_scaled_recursion_falls_back_to_log_space_where_it_would_lose_mass() -> None:
    """A transition probability of 1e-250 and an observation 2,000 nats more likely under the state it
    leads to: the normalised recursion would lose that path (its forward probability underflows), so the
    scaled method runs in log space and agrees with it, and with brute force."""
    log_a = torch.tensor([[[0.0, -250 * math.log(10)], [-1e-3, math.log(1e-3)]]], dtype=F64)
    log_a = torch.log_softmax(log_a, -1)
    log_pi = torch.log(torch.tensor([[1 - 1e-300, 1e-300]], dtype=F64))
    e = torch.zeros(1, 1, 4, 2, dtype=F64)
    e[0, 0, 2, 0] = -2000.0  # only state 1 explains step 2
    got = forward_backward(e, log_pi, log_a, "scaled")
    want = forward_backward(e, log_pi, log_a, "log")
    ll_b, gamma_b, xi_b = _brute_force_hmm(e[0], log_pi[0], log_a[0])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got[0][0], ll_b, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(got[1][0], gamma_b, rtol=1e-9, atol=1e-12)


def test_e_steps_use_the_family_densities() -> None:
    """The E-steps' log-likelihoods and responsibilities equal the families' own densities (the
    mixture's component densities, the HMM's forward algorithm and state marginals)."""
    x = _blobs(120)
    for cov in ("diag", "spherical", "full"):
        model = _gmm(cov)
        theta = {k: v.double() for k, v in stack_starts(model, x, [0, 1]).items()}
        stats, ll = model.em_statistics(x, theta)
        torch.testing.assert_close(ll, model.log_lik(x.double(), theta).sum(-1), rtol=1e-12, atol=1e-9)
        torch.testing.assert_close(stats["count"], model.responsibilities(x.double(), theta).sum(1), rtol=1e-10, atol=1e-10)
    xs = _toyseq("gaussian", 20)
    model = _hmm("gaussian", k=3, t=xs.shape[1])
    theta = {k: v.double() for k, v in stack_starts(model, xs, [0, 1]).items()}
    stats, ll = model.em_statistics(xs, theta)
    torch.testing.assert_close(ll, model.log_lik(xs.double(), theta).sum(-1), rtol=1e-12, atol=1e-8)
    marg = model.state_marginals(xs.double(), theta)
    torch.testing.assert_close(stats["count"], marg.sum((1, 2)), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(stats["initial"], marg[:, :, 0].sum(1), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ["gmm-full", "gmm-spherical", "hmm-gaussian", "hmm-categorical"])
def test_e_step_in_chunks_equals_one_pass(name: str, monkeypatch) -> None:
    model = MAP_CASES[name]()
    x = _case_data(name)
    theta = as_start(stack_starts(model, x, [0, 1, 2]))
    whole, ll = model.em_statistics(x.double(), theta)
    monkeypatch.setattr(type(model), "em_chunk", lambda self, s: 7)
    parts, ll_parts = statistics(model, x.double(), theta)
    torch.testing.assert_close(ll_parts, ll, rtol=1e-13, atol=0.0)
    for k in whole:
        torch.testing.assert_close(parts[k], whole[k], rtol=1e-11, atol=1e-11)


def test_log_prior_without_the_support_checks_is_the_same_number() -> None:
    """EM skips the support checks of the priors on its own updates: the same numbers; the checks still
    hold for everyone else, and EM checks its starting values against the sites' supports."""
    for model, x in ((_gmm("full"), _blobs(100)), (_hmm("categorical", k=2, t=20, symbols=6), _toyseq("casino", 10)[:, :20])):
        theta = as_start(stack_starts(model, x, [0, 1]))
        assert torch.equal(model.log_prior(theta), model.log_prior(theta, validate=False))
        bad = dict(theta)
        if "scales" in theta:
            bad["scales"] = -theta["scales"]
        else:
            bad["emission_probs"] = theta["emission_probs"].clone()
            bad["emission_probs"][..., 0] = -0.1
        with pytest.raises(ValueError):
            model.log_prior(bad)
        for flat in (False, True):
            with pytest.raises(ValueError, match="lies outside its support"):
                em_start(model, x, bad, flat=flat)


def test_a_degenerate_restart_is_dropped_under_flat_priors() -> None:
    """A start whose component sits a million standard deviations from the data gets no responsibility:
    maximum likelihood cannot place it, that restart is marked failed and the best is another; under the
    declared priors the same start is a proper fit (the prior places the empty component)."""
    model = _gmm("diag")
    x = _blobs(200)
    starts = {k: v.clone() for k, v in stack_starts(model, x, [0, 1]).items()}
    starts["locs"][0, 2] = 1e6
    run = em_fit(model, x, starts=starts, prior="flat", tol=1e-8)
    assert run.failed.tolist() == [True, False] and run.best() == 1
    run = em_fit(model, x, starts=starts, tol=1e-8)
    assert run.failed.tolist() == [False, False]
    assert abs(float(run.theta["locs"][0, 2].mean()) - model.p.loc.mean) < 1.0  # the prior's mean


# --------------------------------------------------------------------------- the routine in the loop


def test_run_resumes_exactly_and_stops_when_converged(tmp_path) -> None:
    spec = {"family": "hmm", "states": 2, "data": {"name": "toyseq", "distribution": "casino", "n": 60, "batch_size": 60},
            "emission": {"kind": "categorical", "symbols": 6}}
    recipe = {"routine": "em", "restarts": 3, "iterations_per_epoch": 2}
    straight = ppgen.fit(spec, {**recipe, "epochs": 6}, out=tmp_path / "a", seed=4, progress=False)
    ppgen.fit(spec, {**recipe, "epochs": 3}, out=tmp_path / "b", seed=4, progress=False)
    resumed = ppgen.fit(spec, {**recipe, "epochs": 6}, out=tmp_path / "b", seed=4, resume=True, progress=False)
    a, b = straight.checkpoint["routine"]["extra"]["run"], resumed.checkpoint["routine"]["extra"]["run"]
    for key in a:
        for name, v in (a[key].items() if isinstance(a[key], dict) else [(key, a[key])]):
            w = b[key][name] if isinstance(b[key], dict) else b[key]
            assert torch.equal(v, w), (key, name)
    for k, v in straight.checkpoint["model"].items():
        assert torch.equal(v, resumed.checkpoint["model"][k]), k
    assert int(a["iterations"].max()) == 12
    losses = [m["loss"] for m in straight.metrics if m["kind"] == "train"]
    assert all(l1 <= l0 + 1e-12 for l0, l1 in zip(losses, losses[1:]))  # minus the log posterior of the best
    # A run to convergence ends before its epoch budget.
    spec = {"family": "hmm", "states": 3, "data": {"name": "toyseq", "n": 60, "batch_size": 60}}
    done = ppgen.fit(spec, {"routine": "em", "epochs": 500}, out=tmp_path / "c", progress=False)
    epochs = [m for m in done.metrics if m["kind"] == "epoch"]
    assert len(epochs) < 500 and bool(done.checkpoint["routine"]["extra"]["run"]["converged"].all())
    from ppgen.evaluation.evaluate import evaluate

    assert evaluate(done)["likelihood"].startswith("plug-in density at the point estimate")


def test_nuts_can_start_from_the_em_fit() -> None:
    from ppgen.inference.nuts import NUTSConfig, NUTSRoutine, em_start_values

    spec = {"family": "gmm", "components": 2, "prior": {"loc": {"std": 5.0}},
            "data": {"name": "toymix", "distribution": "duo1d", "n": 60, "batch_size": 100}}
    model = ppgen.build(spec)
    x = ppgen.data.load(ppgen.load_spec(spec).data).train_x
    values = model.init_values(x, torch.Generator().manual_seed(0))
    moved = em_start_values(model, x, values)
    run = em_fit(model, x, starts={k: v[None] for k, v in values.items()}, set_point=False)
    for k, v in run.best_theta().items():
        torch.testing.assert_close(moved[k], v.float())
        assert moved[k].dtype == values[k].dtype
    torch.manual_seed(0)
    routine = NUTSRoutine(NUTSConfig(chains=2, warmup=20, draws_per_epoch=10, init="em"))
    state, info = routine.step(routine.init(model, Plan(x, None, x.shape[0], x.shape[0], 1, 1)), (x, None))
    assert info["draws"] == 10 and math.isfinite(info["loss"])


def _init(routine: EMRoutine, spec: dict) -> None:
    """``routine.init`` on the model of ``spec`` with the loop's plan for its data."""
    spec = ppgen.load_spec(spec)
    routine.init(ppgen.build(spec), Plan.of(ppgen.data.load(spec.data), spec.data.batch_size, routine.config.epochs))


def test_refusals_name_the_key() -> None:
    with pytest.raises(SpecError, match="prior.weights_concentration is 0.5"):
        _init(EMRoutine(EMConfig()), {"family": "gmm", "prior": {"weights_concentration": 0.5},
                                      "data": {"name": "toymix", "n": 50, "batch_size": 50}})
    with pytest.raises(SpecError, match="prior.transition_concentration is 0.5"):
        em_fit(_hmm(transition_concentration=0.5), _toyseq("gaussian", 10))
    with pytest.raises(SpecError, match="prior.lkj_concentration is 0.8"):
        em_fit(_gmm("full", lkj_concentration=0.8), _blobs(50))
    # flat priors need no mode of the prior
    em_fit(_gmm("full", lkj_concentration=0.8), _blobs(50), prior="flat", max_iterations=2)
    with pytest.raises(SpecError, match="set data.batch_size to at least 40"):
        _init(EMRoutine(EMConfig()), {"family": "gmm", "data": {"name": "toymix", "n": 50, "batch_size": 10}})
    with pytest.raises(SpecError, match="forward_backward: scan applies to HMMs only"):
        _init(EMRoutine(EMConfig(forward_backward="scan")), {"family": "gmm", "data": {"name": "toymix"}})
    with pytest.raises(SpecError, match="has no closed-form EM"):
        _init(EMRoutine(EMConfig()), {"family": "vae", "data": {"name": "digits"}})
    with pytest.raises(SpecError, match="restarts: Input should be greater than or equal to 1"):
        ppgen.load_recipe({"routine": "em", "restarts": 0})
    with pytest.raises(SpecError, match="prior: Input should be 'declared' or 'flat'"):
        ppgen.load_recipe({"routine": "em", "prior": "none"})


def test_an_optimizer_section_is_refused() -> None:
    from ppgen.registry import load_recipe
    from ppgen.spec import SpecError

    with pytest.raises(SpecError, match="optimizer does not apply to routine 'em'"):
        load_recipe({"routine": "em", "optimizer": {"name": "sgd", "lr": 0.1}})
    assert load_recipe({"routine": "em"}).routine == "em"


def test_the_command_line_says_when_em_ends_a_run_early(tmp_path, capsys) -> None:
    from ppgen.cli import main

    assert main(["fit", "gmm", "--inference", "em", "--set", "data.n=200", "--epochs", "50", "--out",
                 str(tmp_path / "run"), "--no-figures"]) == 0
    out = capsys.readouterr().out
    assert "of the 50 asked: further iterations would change nothing, so the run ends here" in out
