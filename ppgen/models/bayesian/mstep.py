"""Closed-form (or exactly solved) M-step updates: the posterior modes of the conjugate pieces of the
mixture and hidden Markov families, given expected sufficient statistics. The EM routine
(:mod:`ppgen.inference.em`) drives them; the families (:mod:`ppgen.models.bayesian.gmm`, :mod:`ppgen.models.bayesian.hmm`)
call them in their ``em_maximize``."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def dirichlet_mode(counts: torch.Tensor, concentration: float | torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """argmax over the simplex (last axis) of sum_j (counts_j + c_j - 1) log p_j: p proportional to
    counts + c - 1 (non-negative for c >= 1). Where every weight is 0 (no counts under a flat prior) the
    objective is constant, and ``previous`` is kept."""
    w = counts + (concentration - 1.0)
    total = w.sum(-1, keepdim=True)
    return torch.where(total > 0, w / torch.where(total > 0, total, torch.ones_like(total)), previous)


def lognormal_scale_mode(scatter: torch.Tensor, count: torch.Tensor, log_median: float, log_std: float,
                         max_iter: int = 100) -> torch.Tensor:
    """The sigma that maximises -count log sigma - scatter / (2 sigma^2) + log LogNormal(sigma; log_median,
    log_std): the root of f(v) = scatter e^{-2v} - (count + 1) - (v - log_median) / log_std^2 in v =
    log sigma, by Newton's method. f is convex and decreasing, so Newton from a point left of the root
    climbs to it monotonically, and from a point right of it lands left of it in one step; the start
    max(log(scatter / (count + 1)) / 2, log_median - (count + 1) log_std^2) is at most one step away from
    that regime and keeps e^{-2v} bounded. Elementwise; returns sigma."""
    n = count + 1.0
    t2 = log_std**2
    v = torch.maximum(0.5 * torch.log(scatter / n), log_median - n * t2)
    for _ in range(max_iter):
        # Zero scatter (a constant pixel) starts at the root itself, where e^{-2v} may overflow: 0 * inf is nan.
        ex = torch.where(scatter > 0, scatter * torch.exp(-2.0 * v), torch.zeros_like(v))
        step = (ex - n - (v - log_median) / t2) / (-2.0 * ex - 1.0 / t2)
        v = v - step
        if bool((step.abs() <= 1e-14 * (1.0 + v.abs())).all()):
            return v.exp()
    raise RuntimeError("the LogNormal scale M-step did not converge in "
                       f"{max_iter} Newton steps (largest last step {float(step.abs().max()):.3g})")


def diag_gaussian_step(count: torch.Tensor, first: torch.Tensor, second: torch.Tensor, locs: torch.Tensor,
                       scales: torch.Tensor, loc_prior: tuple[float, float] | None,
                       scale_prior: tuple[float, float] | None, spherical: bool = False,
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The M-step of independent Gaussian coordinates: the mean given the old scales, then the scales
    given the new mean (one ECM cycle). ``count`` (S, K); ``first`` and ``second`` (S, K, D) are the
    weighted sums of x - locs and (x - locs)^2 about the *old* means (the E-step's, so that no large
    numbers cancel); ``scales`` is (S, K, D), or (S, K) when ``spherical``. Priors: ``loc_prior`` =
    (mean, std) of a Normal, ``scale_prior`` = (log median, log std) of a LogNormal, None for flat.
    Returns the new locs, scales and a (S,) flag of degenerate fits (flat priors: a component without
    data or without spread)."""
    n = count[..., None]
    var = (scales[..., None] if spherical else scales) ** 2
    if loc_prior is None:
        delta = first / n
    else:
        m, s = loc_prior
        # (n / var + 1 / s^2) delta = first / var + (m - old) / s^2, multiplied through by var
        delta = (first + var * (m - locs) / s**2) / (n + var / s**2)
    scatter = (second - 2.0 * delta * first + n * delta**2).clamp_min(0.0)
    if spherical:
        scatter = scatter.sum(-1)
        per = count * locs.shape[-1]
    else:
        per = n.expand_as(scatter)
    if scale_prior is None:
        new_scales = torch.sqrt(scatter / per)
        bad = _any_per_row(~torch.isfinite(new_scales) | (new_scales <= 0)) | _any_per_row(~torch.isfinite(delta))
    else:
        new_scales = lognormal_scale_mode(scatter, per, *scale_prior)
        bad = torch.zeros(count.shape[0], dtype=torch.bool, device=count.device)
    return locs + delta, new_scales, bad


def _any_per_row(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).any(-1)


def full_gaussian_mean(count: torch.Tensor, first: torch.Tensor, locs: torch.Tensor, cov: torch.Tensor,
                       loc_prior: tuple[float, float] | None) -> torch.Tensor:
    """The mean's M-step given the covariance (S, K, D, D): the shift delta of the mean, solving
    (n I + Sigma / s^2) delta = first + Sigma (m - old) / s^2 (the precision-weighted mean multiplied
    through by Sigma), or first / n under a flat prior."""
    if loc_prior is None:
        return first / count[..., None]
    m, s = loc_prior
    d = locs.shape[-1]
    eye = torch.eye(d, dtype=cov.dtype, device=cov.device)
    lhs = count[..., None, None] * eye + cov / s**2
    rhs = first + (cov @ (m - locs)[..., None])[..., 0] / s**2
    return torch.linalg.solve(lhs, rhs[..., None])[..., 0]


@dataclass(frozen=True)
class CovariancePrior:
    """LogNormal(log_median, log_std) on each standard deviation and LKJ(eta) on the correlation
    matrix, whose Cholesky factor L has density proportional to prod_{i>=1} L_ii^{c_i},
    c_i = 2 eta - 2 + D - 1 - i (0-based i), as ``torch.distributions.LKJCholesky`` writes it."""

    log_median: float
    log_std: float
    eta: float


def _lkj_orders(d: int, eta: float, like: torch.Tensor) -> torch.Tensor:
    i = torch.arange(d, dtype=like.dtype, device=like.device)
    c = 2.0 * eta - 2.0 + d - 1.0 - i
    c[0] = 0.0  # L_00 = 1 always
    return c


def _cov_objective(c_low: torch.Tensor, scatter: torch.Tensor, count: torch.Tensor, prior: CovariancePrior,
                   orders: torch.Tensor, grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """F(C) = -n sum log C_ii - tr(C^-1 S C^-T) / 2 + sum_i [c_i log C_ii - (1 + c_i) log sigma_i
    - (log sigma_i - log_median)^2 / (2 tau^2)], sigma_i = |row i of C|, c_i the LKJ ``orders`` (Q of
    one component over its covariance, up to constants), and its gradient with respect to the lower
    triangle of C: -n / C_ii on the diagonal, tril(C^-T C^-1 S C^-T), and the prior's terms."""
    diag = c_low.diagonal(dim1=-2, dim2=-1)
    sig2 = (c_low * c_low).sum(-1)
    log_sig = 0.5 * torch.log(sig2)
    w = torch.linalg.solve_triangular(c_low, scatter, upper=False)  # C^-1 S
    z = torch.linalg.solve_triangular(c_low, w.mT, upper=False)  # C^-1 S C^-T
    t2 = prior.log_std**2
    value = ((orders - count[..., None]) * torch.log(diag) - 0.5 * z.diagonal(dim1=-2, dim2=-1)
             - (1.0 + orders) * log_sig - (log_sig - prior.log_median) ** 2 / (2.0 * t2)).sum(-1)
    if not grad:
        return value, None
    g = torch.linalg.solve_triangular(c_low.mT, z, upper=True)  # C^-T C^-1 S C^-T
    coef = (1.0 + orders + (log_sig - prior.log_median) / t2) / sig2
    g = g - coef[..., :, None] * c_low + torch.diag_embed((orders - count[..., None]) / diag)
    return value, torch.tril(g)


def _to_coords(c_low: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """(log C_ii for each i, then C_ij for i > j in ``tril_indices`` order)."""
    return torch.cat([torch.log(c_low.diagonal(dim1=-2, dim2=-1)), c_low[..., rows, cols]], -1)


def _from_coords(theta: torch.Tensor, d: int, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    c = torch.diag_embed(torch.exp(theta[..., :d]))
    c[..., rows, cols] = theta[..., d:]
    return c


class _CovProblem:
    """The M-step objective of a batch of components in the coordinates theta = (log C_ii, C_ij for
    i > j): its value, gradient and Hessian."""

    def __init__(self, scatter: torch.Tensor, count: torch.Tensor, prior: CovariancePrior) -> None:
        self.d = scatter.shape[-1]
        self.scatter, self.count, self.prior = scatter, count, prior
        self.rows, self.cols = torch.tril_indices(self.d, self.d, -1, device=scatter.device)
        self.orders = _lkj_orders(self.d, prior.eta, scatter)
        self.p = self.d * (self.d + 1) // 2
        self.eye = torch.eye(self.p, dtype=scatter.dtype, device=scatter.device)

    def value(self, theta: torch.Tensor, scatter: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        return _cov_objective(_from_coords(theta, self.d, self.rows, self.cols), scatter, count, self.prior,
                              self.orders, grad=False)[0]

    def terms(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Value, gradient and Hessian at (B, P) points (central differences of the analytic gradient,
        step 1e-5 on the scale of each coordinate), from one batched evaluation at the points and their
        2P displacements."""
        b, d, p_dim = theta.shape[0], self.d, self.p
        scale = torch.ones_like(theta)
        scale[:, d:] = torch.exp(theta[:, self.rows])  # an off-diagonal entry moves on the scale of C_ii
        h = 1e-5 * scale
        disp = h[:, None, :] * self.eye
        pts = torch.cat([theta[:, None], theta[:, None] + disp, theta[:, None] - disp], 1).reshape(-1, p_dim)
        rep = 1 + 2 * p_dim
        c_low = _from_coords(pts, d, self.rows, self.cols)
        value, g = _cov_objective(c_low, self.scatter.repeat_interleave(rep, 0), self.count.repeat_interleave(rep, 0),
                                  self.prior, self.orders, grad=True)
        gd = g.diagonal(dim1=-2, dim2=-1) * c_low.diagonal(dim1=-2, dim2=-1)  # d / d log C_ii
        grad = torch.cat([gd, g[..., self.rows, self.cols]], -1).reshape(b, rep, p_dim)
        hess = ((grad[:, 1 : 1 + p_dim] - grad[:, 1 + p_dim :]) / (2.0 * h[:, :, None])).mT  # column j: dg/dtheta_j
        return value.reshape(b, rep)[:, 0], grad[:, 0], 0.5 * (hess + hess.mT)


def covariance_mode(scatter: torch.Tensor, count: torch.Tensor, previous: torch.Tensor, prior: CovariancePrior,
                    max_iter: int = 100) -> torch.Tensor:
    """The Cholesky factor C of Sigma that maximises the full-covariance M-step objective (see
    :func:`_cov_objective`) for a batch of components: ``scatter`` (B, D, D) about the new means,
    ``count`` (B,), ``previous`` (B, D, D) the old factor. Newton's method in the coordinates
    (log C_ii, C_ij for i > j): the Hessian by central differences of the analytic gradient, its
    eigenvalues replaced by their absolute values (so that each step goes uphill), a step taken only
    if it gains (Armijo; else halved until it does), until the Newton decrement is below
    1e-10 (n + 1), and then one last full step. It starts from the better of ``previous`` and the maximum-likelihood factor
    chol(S / n), so the result is never worse than ``previous``."""
    prob = _CovProblem(scatter, count, prior)
    d = prob.d
    b = len(count)
    ml, info = torch.linalg.cholesky_ex(scatter / count.clamp_min(1e-300)[:, None, None])
    ml_ok = (info == 0) & (count > 0) & torch.isfinite(ml).flatten(1).all(-1)
    both = _to_coords(torch.cat([previous, torch.where(ml_ok[:, None, None], ml, previous)]), prob.rows, prob.cols)
    value, grad, hess = _CovProblem(scatter.repeat(2, 1, 1), count.repeat(2), prior).terms(both)
    use_ml = ml_ok & (value[b:] > value[:b])
    pick = lambda t: torch.where(use_ml.reshape(-1, *([1] * (t.dim() - 1))), t[b:], t[:b])  # noqa: E731
    theta, value, grad, hess = pick(both), pick(value), pick(grad), pick(hess)
    active = torch.ones(b, dtype=torch.bool, device=theta.device)
    for _ in range(max_iter):
        lam, vec = torch.linalg.eigh(-hess)
        lam = lam.abs().clamp_min(1e-12 * lam.abs().amax(-1, keepdim=True) + 1e-300)
        step = (vec @ ((vec.mT @ grad[..., None])[..., 0] / lam)[..., None])[..., 0]
        step = torch.where(active[:, None], step, torch.zeros_like(step))
        decrement = (grad * step).sum(-1)  # g^T (-H)^-1 g >= 0: about twice the gain still to come
        # Below 1e-10 (n + 1) the gain still to come is too small for Armijo's test to resolve against the
        # rounding of F (about 1e-15 n), and deep in Newton's quadratic region: the full step is the right
        # one, and the last (it leaves a decrement of order 1e-20 (n + 1)).
        tiny = active & (decrement <= 1e-10 * (count + 1.0))
        if bool((tiny == active).all()):
            theta = theta + step
            break
        v1, g1, h1 = prob.terms(theta + step)
        take = active & (tiny | (torch.isfinite(v1) & (v1 >= value + 1e-4 * decrement)))
        theta = torch.where(take[:, None], theta + step, theta)
        value = torch.where(take, v1, value)
        grad = torch.where(take[:, None], g1, grad)
        hess = torch.where(take[:, None, None], h1, hess)
        back = active & ~take
        active = active & ~tiny
        if bool(back.any()):
            # Backtracking: the largest of 1/2, 1/4, ... that gains; where none does, the maximum is
            # reached to rounding.
            bi = back.nonzero()[:, 0]
            halves = 0.5 ** torch.arange(1, 41, dtype=theta.dtype, device=theta.device)
            m = len(halves)
            cand = theta[bi, None] + halves[None, :, None] * step[bi, None]
            fc = prob.value(cand.reshape(-1, prob.p), scatter[bi].repeat_interleave(m, 0),
                            count[bi].repeat_interleave(m, 0)).reshape(-1, m)
            ok = torch.isfinite(fc) & (fc >= value[bi, None] + 1e-4 * halves[None] * decrement[bi, None])
            found = ok.any(-1)
            active[bi[~found]] = False
            moved = bi[found]
            if moved.numel():
                theta[moved] = cand[found, ok[found].to(torch.int8).argmax(-1)]
                sub = _CovProblem(scatter[moved], count[moved], prior)
                value[moved], grad[moved], hess[moved] = sub.terms(theta[moved])
        if not bool(active.any()):
            break
    return _from_coords(theta, d, prob.rows, prob.cols)
