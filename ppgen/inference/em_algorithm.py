"""Expectation-maximization to the posterior mode (MAP-EM) of the mixture and HMM families, with
restarts fitted together: what a family provides (:class:`EMFamily`), and the iterations over a batch of
restarts (:func:`em_start`, :func:`em_iterate`, :func:`em_fit`). The routine that runs them in the training
loop is :mod:`ppgen.inference.em`.

EM (Dempster, Laird & Rubin 1977) alternates an E-step, which computes the expected sufficient
statistics of the complete data under p(z | x, theta) (responsibilities of the components; state
marginals and expected transition counts by forward-backward), and an M-step, which maximises
Q(theta) = E[log p(x, z | theta)] + log p(theta). With the log prior in the M-step, every iteration
raises the log posterior log p(theta | x) and the fixed points are its stationary points, so EM reaches
the posterior mode of the model ppgen declares, in the coordinates the family declares its sites in --
the same objective as ``enum_svi``'s MAP (its ``map_loss``), not an unregularised maximum likelihood.
``prior: flat`` drops the priors (flat densities on the constrained sites): maximum likelihood, as
scikit-learn and hmmlearn compute it.

**The M-steps** (each maximises Q over one block given the others, so the algorithm is an ECM,
Meng & Rubin 1993: monotone, with the posterior's stationary points as fixed points):

- Dirichlet(c) on a probability vector (mixture weights, initial distribution, each transition row,
  each row of symbol probabilities), expected counts n: p_j = (n_j + c_j - 1) / sum_i (n_i + c_i - 1).
  It needs every c_j >= 1; with a concentration below 1 the posterior density grows without bound as a
  probability goes to 0, so there is no mode, and the routine refuses the spec, naming the key.
- Normal(m, s) on a mean, given the (co)variance Sigma: the precision-weighted mean,
  mu = (n Sigma^-1 + I / s^2)^-1 (Sigma^-1 sum_n r_n x_n + m / s^2).
- LogNormal(log median, tau) on a standard deviation sigma = e^v, given the mean: Q(v) = -(n + 1) v
  - S e^{-2v} / 2 - (v - log median)^2 / (2 tau^2) (the + 1 is the LogNormal density's 1/sigma). Its
  stationarity condition S e^{-2v} = n + 1 + (v - log median) / tau^2 mixes an exponential with a
  linear term and has no closed-form root; the left side decreases and the right side increases in v,
  so the root is unique, and a one-dimensional Newton solve from max(log(S / (n + 1)) / 2,
  log median - (n + 1) tau^2) converges to it monotonically after at most one step (the function is
  convex and decreasing) -- exact to rounding.
- Full covariance, Sigma = diag(sigma) L L^T diag(sigma) with LogNormal scales and an LKJ(eta) prior on
  the correlation's Cholesky factor L: no closed form either (the LKJ density in L and the LogNormal
  in sigma do not combine into a conjugate form). The M-step maximises Q over the Cholesky factor of
  Sigma in unconstrained coordinates by Newton's method (analytic gradient, Hessian by central
  differences of it, eigenvalues made positive, Armijo backtracking) from the better of the previous
  value and the maximum-likelihood one, until the Newton decrement is below 1e-10 (n + 1), then one
  last full step: again the maximiser to rounding, and never worse than the previous value. The LKJ concentration must be >= 1 (below
  1 its density is unbounded as a correlation approaches +-1).

**Restarts** are one computation: the parameters carry a leading axis of R starting points (the
family's data-driven start, seeded differently), the families' densities are vectorised over it, and a
restart that has converged is taken out of the batch, so that the R fits give what R fits one after
another would. The best, by log posterior, becomes the model's point estimate.

**Stopping**: a restart stops when an iteration raised its log posterior by at most ``tol`` nats per
training example. An iteration that lowers it by more than rounding is a bug and raises.

References:
    Dempster, Laird & Rubin (1977), Maximum likelihood from incomplete data via the EM algorithm, JRSS B
    39, 1-38.
    Meng & Rubin (1993), Maximum likelihood estimation via the ECM algorithm: a general framework,
    Biometrika 80, 267-278.
    McLachlan & Krishnan (2008), The EM Algorithm and Extensions, 2nd ed., Wiley (EM for MAP estimation).
    Nocedal & Wright (2006), Numerical Optimization, 2nd ed., Springer (Newton with modified Hessian,
    backtracking line search: chapters 3.1 and 3.4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Literal, Mapping, Protocol

import torch

from ppgen.contracts import ChunkedEStep
from ppgen.inference.capability import family_label, missing
from ppgen.spec import SpecError

Theta = dict[str, torch.Tensor]
Stats = dict[str, torch.Tensor]

#: The dtype EM works in: sufficient statistics and the log posterior of large data sets need it.
DTYPE = torch.float64


# --------------------------------------------------------------------------- what a family provides


class EMFamily(Protocol):
    """A family with closed-form E and M steps over a leading batch of parameter values."""

    #: The global sites (their names and supports): starting values are checked against them.
    sites: Any
    #: The point estimate EM leaves behind (``point.set(theta)``).
    point: Any
    #: A 0-d bool buffer: the point estimate has left its default start (a resumed fit keeps it).
    initialized: torch.Tensor

    def em_check(self, flat: bool) -> None:
        """Raise SpecError if the declared priors have no posterior mode for EM to reach."""
        ...

    def em_statistics(self, x: torch.Tensor, theta: Mapping[str, torch.Tensor], *,
                      method: str = "auto") -> tuple[Stats, torch.Tensor]:
        """E-step: expected sufficient statistics (each with a leading batch S) and log p(x | theta_s),
        summed over the examples: (S,)."""
        ...

    def em_maximize(self, stats: Stats, theta: Mapping[str, torch.Tensor], *,
                    flat: bool) -> tuple[Theta, torch.Tensor]:
        """M-step: the new parameters and, per value, whether the fit degenerated (flat priors only:
        a component with no data or no spread)."""
        ...

    def init_values(self, x: torch.Tensor, generator: torch.Generator) -> Mapping[str, torch.Tensor]:
        """A data-driven starting point."""
        ...

    def log_prior(self, theta: Mapping[str, torch.Tensor], validate: bool = True) -> torch.Tensor:
        """log p(theta_s): (S,); ``validate=False`` skips the support checks."""
        ...


def check_family(model: Any, routine: str = "em") -> None:
    """A SpecError unless ``model`` meets :class:`EMFamily` (what ``routine`` runs EM on)."""
    need = missing(model, EMFamily)
    if need:
        name = family_label(model)
        raise SpecError(
            f"routine {routine}: family {name!r} has no closed-form EM (it lacks {'; '.join(need)}); "
            "EM fits the gmm and hmm families"
        )


# --------------------------------------------------------------------------- the iterations


@dataclass
class EMRun:
    """Where EM stands for each of R restarts (all tensors; the checkpoint carries them).

    ``theta`` the current parameters (R, ...), ``stats`` the E-step statistics at them,
    ``log_post`` and ``log_lik`` (R,) at them, ``iterations`` (R,) M-steps taken, ``converged`` and
    ``failed`` (R,) flags (a failed restart degenerated under flat priors or reached a non-finite value
    and is left out of the choice of the best)."""

    theta: Theta
    stats: Stats
    log_post: torch.Tensor
    log_lik: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor
    failed: torch.Tensor

    @property
    def restarts(self) -> int:
        return int(self.log_post.shape[0])

    @property
    def active(self) -> torch.Tensor:
        return ~(self.converged | self.failed)

    def best(self) -> int:
        """The restart with the highest log posterior among those that did not fail."""
        score = torch.where(self.failed, torch.full_like(self.log_post, -math.inf), self.log_post)
        if bool(self.failed.all()):
            raise RuntimeError("every EM restart failed: each degenerated (a component or state left without data or "
                               "without spread, which maximum likelihood cannot fit) or reached a non-finite value")
        return int(score.argmax())

    def best_theta(self) -> Theta:
        i = self.best()
        return {k: v[i] for k, v in self.theta.items()}

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], device: torch.device | None = None) -> "EMRun":
        def move(v: Any) -> Any:
            if isinstance(v, dict):
                return {k: move(u) for k, u in v.items()}
            return v.to(device) if device is not None else v

        return cls(**{f.name: move(d[f.name]) for f in fields(cls)})


def statistics(model: Any, x: torch.Tensor, theta: Theta, method: str = "auto") -> tuple[Stats, torch.Tensor]:
    """The E-step over all examples, in chunks of ``model.em_chunk(S)`` examples where the family says
    so: the statistics are sums over examples, and temporaries of a few megabytes stay in cache, where
    one pass over a 100,000-point batch of restarts would write hundreds (measured: 5 times faster for
    10 restarts of a 100,000-point mixture)."""
    n = x.shape[0]
    size = model.em_chunk(next(iter(theta.values())).shape[0]) if isinstance(model, ChunkedEStep) else n
    if size >= n:
        return model.em_statistics(x, theta, method=method)
    stats, ll = model.em_statistics(x[:size], theta, method=method)
    for i in range(size, n, size):
        more, more_ll = model.em_statistics(x[i : i + size], theta, method=method)
        stats = {k: v + more[k] for k, v in stats.items()}
        ll = ll + more_ll
    return stats, ll


def _log_post(model: Any, theta: Theta, log_lik: torch.Tensor, flat: bool) -> torch.Tensor:
    # The starts are checked against the sites' supports (em_start); EM's updates lie in them by
    # construction (simplex rows normalised, scales and Cholesky diagonals positive).
    return log_lik if flat else log_lik + model.log_prior(theta, validate=False)


def as_start(values: Mapping[str, torch.Tensor], device: torch.device | None = None) -> Theta:
    """Parameter values in EM's dtype, probability vectors renormalised exactly in it."""
    out = {k: v.detach().to(device=device, dtype=DTYPE).clone() for k, v in values.items()}
    for k in ("weights", "initial", "transition", "emission_probs"):
        if k in out:
            out[k] = out[k] / out[k].sum(-1, keepdim=True)
    return out


def em_start(model: Any, x: torch.Tensor, starts: Mapping[str, torch.Tensor], *, flat: bool = False,
             method: str = "auto") -> EMRun:
    """The E-step at R starting values (R, ...): an :class:`EMRun` with no iterations yet."""
    theta = as_start(starts, x.device)
    for site in model.sites:
        inside = site.constraint.check(theta[site.name])
        if not bool(inside.all()):
            raise ValueError(f"EM: a starting value of site {site.name!r} lies outside its support ({site.constraint})")
    stats, ll = statistics(model, x.to(DTYPE), theta, method)
    lp = _log_post(model, theta, ll, flat)
    r = lp.shape[0]
    return EMRun(theta=theta, stats=stats, log_post=lp, log_lik=ll,
                 iterations=torch.zeros(r, dtype=torch.int64, device=lp.device),
                 converged=torch.zeros(r, dtype=torch.bool, device=lp.device), failed=~torch.isfinite(lp))


def em_iterate(model: Any, x: torch.Tensor, run: EMRun, *, iterations: int, tol: float, flat: bool = False,
               method: str = "auto") -> EMRun:
    """Up to ``iterations`` EM iterations (M-step, then E-step at the new values) of the restarts that
    are still running; a restart converges when its log posterior rose by at most ``tol`` per example."""
    x = x.to(DTYPE)
    n = x.shape[0]
    eps = torch.finfo(DTYPE).eps
    for _ in range(iterations):
        active = run.active
        if not bool(active.any()):
            break
        idx = active.nonzero()[:, 0]
        everyone = idx.numel() == run.restarts
        theta = run.theta if everyone else {k: v[idx] for k, v in run.theta.items()}
        stats = run.stats if everyone else {k: v[idx] for k, v in run.stats.items()}
        new, degenerate = model.em_maximize(stats, theta, flat=flat)
        if bool(degenerate.any()):
            # A degenerate fit is dropped; its old values, which are valid, are evaluated in its place.
            new = {k: torch.where(degenerate.reshape(-1, *([1] * (v.dim() - 1))), theta[k], v) for k, v in new.items()}
        new_stats, ll = statistics(model, x, new, method)
        lp = _log_post(model, new, ll, flat)
        ok = torch.isfinite(lp) & ~degenerate
        gain = lp - run.log_post[idx]
        slack = 1e3 * eps * (lp.abs() + n)
        drop = ok & (gain < -slack)
        if bool(drop.any()):
            j = int(idx[drop][0])
            raise RuntimeError(
                f"EM lowered the log posterior of restart {j} at iteration {int(run.iterations[j]) + 1} by "
                f"{float(-gain[drop][0]):.3g} nats; every EM iteration must raise it (this is a bug in the M-step)"
            )
        done = ok & (gain <= tol * n)
        if everyone and bool(ok.all()):
            run.theta, run.stats, run.log_post, run.log_lik = dict(new), new_stats, lp, ll
            run.iterations = run.iterations + 1
            run.converged = done
            continue
        for k in run.theta:
            run.theta[k][idx[ok]] = new[k][ok]
        for k in run.stats:
            run.stats[k][idx[ok]] = new_stats[k][ok]
        run.log_post[idx[ok]] = lp[ok]
        run.log_lik[idx[ok]] = ll[ok]
        run.iterations[idx[ok]] += 1
        run.converged[idx[done]] = True
        run.failed[idx[~ok]] = True
    return run


@torch.no_grad()
def em_fit(model: Any, x: torch.Tensor, *, restarts: int = 1, seed: int = 0,
           starts: Mapping[str, torch.Tensor] | None = None, prior: Literal["declared", "flat"] = "declared",
           tol: float = 1e-6, max_iterations: int = 1000, forward_backward: str = "auto",
           set_point: bool = True) -> EMRun:
    """EM to convergence from ``starts`` (values with a leading axis of restarts) or from the family's
    data-driven start with seeds ``seed``, ``seed + 1``, ... (``restarts`` of them); with ``set_point``
    the best restart becomes the model's point estimate. Returns the :class:`EMRun`."""
    check_family(model)
    flat = prior == "flat"
    model.em_check(flat)
    if starts is None:
        starts = stack_starts(model, x, [seed + r for r in range(restarts)])
    run = em_start(model, x, starts, flat=flat, method=forward_backward)
    run = em_iterate(model, x, run, iterations=max_iterations, tol=tol, flat=flat, method=forward_backward)
    if set_point:
        set_point_estimate(model, run)
    return run


def stack_starts(model: Any, x: torch.Tensor, seeds: list[int]) -> Theta:
    """The family's data-driven start for each seed (computed on the CPU, where the seeded generators
    live), stacked along a leading axis, on ``x``'s device."""
    values = [model.init_values(x.cpu(), torch.Generator().manual_seed(int(s))) for s in seeds]
    return {k: torch.stack([v[k] for v in values]).to(x.device) for k in values[0]}


def set_point_estimate(model: Any, run: EMRun) -> None:
    best = run.best_theta()
    model.point.set({k: v for k, v in best.items()})
    model.initialized.fill_(True)
