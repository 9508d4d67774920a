"""Energy-based model math shared by the RBM, Gaussian-Bernoulli RBM, Boltzmann machine and DBN families.

Two cores hold the parameters and everything that only depends on them:

- :class:`RBMCore`, a restricted Boltzmann machine with Bernoulli hidden units and Bernoulli or Gaussian
  visible units: conditionals, block Gibbs steps, free energies on both sides, exact log Z by enumerating
  the smaller side, annealed importance sampling (AIS) for log Z, pseudo-likelihood, and the closed-form
  contrastive-divergence gradient;
- :class:`BMCore`, a general (small) Boltzmann machine with visible-visible and hidden-hidden couplings:
  sequential single-site Gibbs sweeps, clamped and free phases, exact enumeration and AIS.

Both offer the same small training protocol (``positive_phase``, ``init_chains``, ``negative_phase``,
``set_gradients``, ``monitor``, ``validation_metrics``) that :mod:`ppgen.inference.gibbs` drives, so one
CD/PCD routine trains every energy family.

Conventions: visible vectors are flat, shape ``(batch, D)``; hidden ``(batch, H)``. The energy of a
Bernoulli RBM is ``E(v, h) = -b.v - c.h - v.W.h``; of a Gaussian-Bernoulli RBM (Hinton 2010, §13.2;
Krizhevsky 2009) ``E(v, h) = sum_i (v_i - b_i)^2 / (2 sigma_i^2) - c.h - (v / sigma).W.h``.

References:
    Ackley, Hinton & Sejnowski (1985), A Learning Algorithm for Boltzmann Machines, Cognitive Science 9.
    Hinton (2002), Training Products of Experts by Minimizing Contrastive Divergence, Neural Comp. 14.
    Tieleman (2008), Training Restricted Boltzmann Machines using Approximations to the Likelihood
    Gradient, ICML.
    Salakhutdinov & Murray (2008), On the Quantitative Analysis of Deep Belief Networks, ICML.
    Neal (2001), Annealed Importance Sampling, Statistics and Computing 11.
    Hinton (2010), A Practical Guide to Training Restricted Boltzmann Machines, UTML TR 2010-003.
    Besag (1975), Statistical Analysis of Non-Lattice Data, The Statistician 24 (pseudo-likelihood).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, Literal, TypeVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ppgen.spec import Strict

_F = TypeVar("_F", bound=Callable[..., Any])


def no_grad(fn: _F) -> _F:
    """``torch.no_grad`` for the methods of a training step, entered only when gradients are on: a CD
    update calls several of them per batch, and entering the context costs microseconds each time."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if torch.is_grad_enabled():
            with torch.no_grad():
                return fn(*args, **kwargs)
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


#: Enumerate exactly when the summed-over side has at most this many binary units (2^20 ~ 1e6 states).
MAX_ENUMERATE = 20


# --------------------------------------------------------------------------- spec sections shared by families


class InitSpec(Strict):
    """Initial parameters (Hinton 2010, §8): small random weights, and visible biases either zero or
    ``log p_i / (1 - p_i)`` from the training data's marginals (``data``), set when training starts."""

    weight_std: float = Field(0.01, gt=0, le=10)
    visible_bias: Literal["data", "zero"] = "data"
    hidden_bias: float = Field(0.0, ge=-20, le=20, description="initial hidden biases (e.g. -4 for sparsity)")


class PriorSpec(Strict):
    """The Gaussian prior on the weights that is weight decay (Hinton 2010, §10).

    ``weight_decay`` = lambda declares W_ij ~ N(0, 1/(lambda N)) over a data set of N examples, that is a
    penalty lambda/2 ||W||^2 per example: the gradient step of every weight gains -lr * lambda * W. Zero
    means a flat prior. Biases get no prior."""

    weight_decay: float = Field(0.0, ge=0, le=1)


class AISSpec(Strict):
    """Annealed importance sampling for log Z (Salakhutdinov & Murray 2008): ``runs`` independent
    annealing runs through ``steps`` intermediate distributions (the paper: 100 runs, 14,500 steps).
    Exact enumeration replaces it when one side of an RBM has at most 20 units."""

    runs: int = Field(100, ge=2, le=100_000)
    steps: int = Field(10_000, ge=10, le=1_000_000)


class SamplingSpec(Strict):
    """Gibbs sampling from the model: ``steps`` sweeps per draw of ``sample(n)``; for diagnostics
    ``chains`` independent chains, each ``warmup`` sweeps then ``draws`` recorded sweeps; and, when set, the
    number of samples ``ppgen evaluate`` draws for its sample-quality metrics (each costs ``steps``
    sweeps). Left out, it is the count every family uses (``ppgen.evaluation.quality.DEFAULT_SAMPLES``, or
    ``--quality-samples``), so that the numbers and their real-data floor compare across families."""

    steps: int = Field(1000, ge=1, le=1_000_000)
    chains: int = Field(4, ge=1, le=64)
    warmup: int = Field(500, ge=0, le=1_000_000)
    draws: int = Field(500, ge=4, le=100_000)
    quality_samples: int | None = Field(None, ge=10, le=100_000)


# --------------------------------------------------------------------------- small helpers


def all_binary_states(n: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """All 2^n binary vectors of length n, shape (2^n, n), in binary counting order (unit 0 slowest)."""
    if n > 26:
        raise ValueError(f"enumerating 2^{n} states is not feasible; use AIS")
    idx = torch.arange(2**n, device=device)
    bits = (idx.unsqueeze(1) >> torch.arange(n - 1, -1, -1, device=device)) & 1
    return bits.to(dtype)


def bernoulli(p: torch.Tensor) -> torch.Tensor:
    """Draws of Bernoulli(p), elementwise: ``u < p`` for uniform u, three times faster on a CPU than
    ``torch.bernoulli`` for the small batches of CD (it matters: sampling is half of an update)."""
    return torch.rand_like(p).lt_(p)  # in place: 1.0 where u < p, else 0.0


def log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``log mean exp(log_w)`` along ``dim`` and its delta-method standard error
    ``sd(w) / (mean(w) sqrt(n))``, computed stably by scaling with the largest weight."""
    n = log_w.shape[dim]
    est = torch.logsumexp(log_w, dim) - math.log(n)
    w = torch.exp(log_w - log_w.max(dim, keepdim=True).values)
    rel = w.std(dim) / (w.mean(dim) * math.sqrt(n)) if n > 1 else torch.zeros_like(est)
    return est, rel


def beta_schedule(steps: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``steps + 1`` inverse temperatures from 0 to 1, spaced as in Salakhutdinov & Murray (2008): 500 of
    14,500 uniformly in [0, 0.5), 4,000 in [0.5, 0.9) and 10,000 in [0.9, 1], scaled to ``steps``."""
    if steps < 3:
        return torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64, device=device)
    n1 = max(1, round(steps * 500 / 14_500))
    n2 = max(1, round(steps * 4_000 / 14_500))
    n3 = steps - n1 - n2
    parts = [
        torch.linspace(0.0, 0.5, n1 + 1, dtype=torch.float64)[:-1],
        torch.linspace(0.5, 0.9, n2 + 1, dtype=torch.float64)[:-1],
        torch.linspace(0.9, 1.0, n3 + 1, dtype=torch.float64),
    ]
    return torch.cat(parts).to(device)


def base_rate_logits(x: torch.Tensor, smoothing: float = 1.0) -> torch.Tensor:
    """Logits ``log p / (1 - p)`` of the per-unit marginals of binary data (rows of ``x``), with
    ``smoothing`` pseudo-counts of each value (Laplace's rule by default) so that a unit that is always
    off in the data gets a large negative, not an infinite, bias: the base-rate model of S&M 2008 and
    the visible-bias initialisation of Hinton (2010, §8)."""
    p = (x.float().sum(0) + smoothing) / (x.shape[0] + 2 * smoothing)
    return torch.log(p) - torch.log1p(-p)


@dataclass
class LogZ:
    """An estimate of log Z: ``value``, its standard error (0 when exact), how it was obtained, and for
    AIS the log importance weights and the base model's log Z."""

    value: float
    stderr: float
    method: Literal["exact", "ais"]
    runs: int = 0
    steps: int = 0
    log_z_base: float = 0.0
    log_w: torch.Tensor | None = None

    def report(self) -> dict[str, Any]:
        """The numbers for an evaluation report; ``log_z_lo``/``log_z_hi`` are log(Z_hat -/+ 3 sd(Z_hat))
        as in S&M 2008 (the lower end is -inf when 3 sd exceed the estimate)."""
        out: dict[str, Any] = {"log_z": self.value, "log_z_stderr": self.stderr, "log_z_method": self.method}
        if self.method == "ais":
            rel = 3 * self.stderr
            out["log_z_lo"] = self.value + math.log(1 - rel) if rel < 1 else float("-inf")
            out["log_z_hi"] = self.value + math.log1p(rel)
            out["ais_runs"] = self.runs
            out["ais_steps"] = self.steps
        return out


def _generic_ais(
    init: torch.Tensor,
    log_f_diff: Any,
    transition: Any,
    betas: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """AIS (Neal 2001): x ~ p_0, then for k = 1..K add log f_k(x) - log f_{k-1}(x) to the log weight and
    move x with a kernel that leaves p_k invariant. Returns the final states and log weights (float64)."""
    x = init
    log_w = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    b = betas.tolist()
    for k in range(1, len(b)):
        log_w += log_f_diff(x, b[k - 1], b[k]).double()
        if k < len(b) - 1:
            x = transition(x, b[k])
    return x, log_w


# --------------------------------------------------------------------------- the core contract


class EnergyCore(nn.Module):
    """What the CD/PCD routines (:mod:`ppgen.inference.gibbs`) drive: an energy model over visible and
    hidden units with ``positive_phase``, ``negative_phase``, ``chains_from_data``, ``init_chains``,
    ``monitor``, ``set_gradients`` and ``validation_metrics``. ``sgd_update`` is a core's fused update,
    used only where it equals the general path (``set_gradients`` then the optimizer's step); the
    default has none."""

    def sgd_update(self, pos: dict[str, torch.Tensor], neg: dict[str, torch.Tensor], opt: torch.optim.Optimizer) -> bool:
        """Apply the update in place and return True, or return False (and do nothing) where the fused
        update does not apply; the routine then takes the general path."""
        return False


# --------------------------------------------------------------------------- RBM


class RBMCore(EnergyCore):
    """A restricted Boltzmann machine: ``W`` (D, H), visible biases ``b`` (D), hidden biases ``c`` (H)
    and, for Gaussian visible units, per-unit standard deviations ``sigma`` (fixed or learned as
    ``log_sigma``). ``weight_decay`` is the precision of the Gaussian prior on ``W`` (see :class:`PriorSpec`).
    """

    def __init__(
        self,
        n_visible: int,
        n_hidden: int,
        *,
        gaussian: bool = False,
        weight_std: float = 0.01,
        hidden_bias: float = 0.0,
        sigma: float = 1.0,
        learn_sigma: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__()
        self.n_visible, self.n_hidden = n_visible, n_hidden
        self.gaussian = gaussian
        self.weight_decay = weight_decay
        self.W = nn.Parameter(torch.randn(n_visible, n_hidden) * weight_std)
        self.b = nn.Parameter(torch.zeros(n_visible))
        self.c = nn.Parameter(torch.full((n_hidden,), float(hidden_bias)))
        self.learn_sigma = gaussian and learn_sigma
        if gaussian:
            log_sigma = torch.full((n_visible,), math.log(sigma))
            if self.learn_sigma:
                self.log_sigma = nn.Parameter(log_sigma)
            else:
                self.register_buffer("log_sigma", log_sigma)

    # -- conditionals -----------------------------------------------------------------------------
    @property
    def sigma(self) -> torch.Tensor:
        # A floor keeps a learned sigma from collapsing onto a training point (Cho et al. 2011).
        return self.log_sigma.exp().clamp_min(1e-3)

    def _scaled(self, v: torch.Tensor) -> torch.Tensor:
        return v / self.sigma if self.gaussian else v

    def hidden_logits(self, v: torch.Tensor) -> torch.Tensor:
        """The input to the hidden units, ``c + (v / sigma) W``: p(h_j = 1 | v) = sigmoid of it."""
        return torch.addmm(self.c, self._scaled(v), self.W)

    def visible_param(self, h: torch.Tensor) -> torch.Tensor:
        """p(v | h): the logits ``b + W h`` (Bernoulli) or the means ``b + sigma W h`` (Gaussian)."""
        if self.gaussian:
            return self.b + self.sigma * (h @ self.W.t())
        return torch.addmm(self.b, h, self.W.t())

    def visible_mean(self, h: torch.Tensor) -> torch.Tensor:
        p = self.visible_param(h)
        return p if self.gaussian else torch.sigmoid(p)

    def sample_h(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A draw h ~ p(h | v) and the probabilities it was drawn from."""
        p = torch.sigmoid(self.hidden_logits(v))
        return bernoulli(p), p

    def sample_v(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A draw v ~ p(v | h) and the mean it was drawn around."""
        mean = self.visible_mean(h)
        if self.gaussian:
            return mean + self.sigma * torch.randn_like(mean), mean
        return bernoulli(mean), mean

    def gibbs(self, v: torch.Tensor, steps: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """``steps`` full block-Gibbs steps v -> h -> v'; returns the last v and the mean of p(v | h)."""
        mean = v
        for _ in range(steps):
            h, _ = self.sample_h(v)
            v, mean = self.sample_v(h)
        return v, mean

    # -- energies -------------------------------------------------------------------------------------
    def energy(self, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """E(v, h) per row."""
        inter = ((self._scaled(v) @ self.W) * h).sum(-1)
        if self.gaussian:
            vis = (((v - self.b) / self.sigma) ** 2).sum(-1) / 2
        else:
            vis = -(v @ self.b)
        return vis - h @ self.c - inter

    def visible_term(self, v: torch.Tensor) -> torch.Tensor:
        """The part of -E that depends on v alone: ``b.v`` or ``-|v - b|^2 / (2 sigma^2)``."""
        if self.gaussian:
            return -(((v - self.b) / self.sigma) ** 2).sum(-1) / 2
        return v @ self.b

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """F(v) = -log sum_h exp(-E(v, h)), so p(v) = exp(-F(v)) / Z."""
        return -self.visible_term(v) - F.softplus(self.hidden_logits(v)).sum(-1)

    def free_energy_hidden(self, h: torch.Tensor) -> torch.Tensor:
        """F(h) = -log sum_v exp(-E(v, h)) (an integral for Gaussian v), so p(h) = exp(-F(h)) / Z."""
        wh = h @ self.W.t()
        if self.gaussian:
            # int exp(-(v-b)^2/(2s^2) + v (Wh)/s) dv = sqrt(2 pi) s exp(b (Wh)/s + (Wh)^2/2)
            const = (self.log_sigma + 0.5 * math.log(2 * math.pi)).sum()
            return -(h @ self.c) - (self.b / self.sigma * wh + wh**2 / 2).sum(-1) - const
        return -(h @ self.c) - F.softplus(wh + self.b).sum(-1)

    # -- partition function ----------------------------------------------------------------------------
    def can_enumerate(self, max_units: int = MAX_ENUMERATE) -> bool:
        return self.n_hidden <= max_units or (not self.gaussian and self.n_visible <= max_units)

    @torch.no_grad()
    def log_z_exact(self, max_units: int = MAX_ENUMERATE, chunk: int = 1 << 14) -> float:
        """log Z by summing over every state of the smaller side (at most ``max_units`` units)."""
        sides = [(self.n_hidden, self.free_energy_hidden)]
        if not self.gaussian:
            sides.append((self.n_visible, self.free_energy))
        sides = [sf for sf in sides if sf[0] <= max_units]
        if not sides:
            raise ValueError(
                f"exact log Z needs one side with at most {max_units} units (visible {self.n_visible}, "
                f"hidden {self.n_hidden}); use ais_log_z"
            )
        side, fe = min(sides, key=lambda sf: sf[0])
        dev = self.W.device
        parts = []
        for start in range(0, 2**side, chunk):
            idx = torch.arange(start, min(start + chunk, 2**side), device=dev)
            states = ((idx.unsqueeze(1) >> torch.arange(side - 1, -1, -1, device=dev)) & 1).to(self.W.dtype)
            parts.append(torch.logsumexp(-fe(states).double(), 0))
        return float(torch.logsumexp(torch.stack(parts), 0))

    @torch.no_grad()
    def ais_log_z(self, runs: int = 100, steps: int = 10_000, base_logits: torch.Tensor | None = None) -> LogZ:
        """log Z by AIS from a base model with W = 0 (Salakhutdinov & Murray 2008).

        Bernoulli: the base is the "base-rate" model with visible logits ``base_logits`` (the training
        data's marginals; zeros if not given); the intermediate distributions are
        p_k(v) ~ exp((1 - beta_k) b_A.v + beta_k b.v) prod_j (1 + exp(beta_k (c_j + v.W_j))).
        Gaussian: the base is N(b, sigma^2) with the model's own b and sigma, so only the coupling is
        annealed. Each transition is one block-Gibbs step at beta_k.
        """
        D, H = self.n_visible, self.n_hidden
        W, b = self.W, self.b
        betas = beta_schedule(steps, device=W.device)
        if self.gaussian:
            sigma = self.sigma
            log_z0 = float((self.log_sigma + 0.5 * math.log(2 * math.pi)).sum()) + H * math.log(2)
            init = b + sigma * torch.randn(runs, D, device=W.device, dtype=W.dtype)

            def log_f_diff(v: torch.Tensor, b0: float, b1: float) -> torch.Tensor:
                pre = self.hidden_logits(v)
                return (F.softplus(b1 * pre) - F.softplus(b0 * pre)).sum(-1)

            def transition(v: torch.Tensor, beta: float) -> torch.Tensor:
                h = bernoulli(torch.sigmoid(beta * self.hidden_logits(v)))
                return b + beta * sigma * (h @ W.t()) + sigma * torch.randn_like(v)

        else:
            b_a = W.new_zeros(D) if base_logits is None else base_logits.to(W.device, W.dtype)
            log_z0 = float(F.softplus(b_a).sum()) + H * math.log(2)
            init = bernoulli(torch.sigmoid(b_a).expand(runs, D).contiguous())
            db = b - b_a

            def log_f_diff(v: torch.Tensor, b0: float, b1: float) -> torch.Tensor:
                pre = self.hidden_logits(v)
                return (b1 - b0) * (v @ db) + (F.softplus(b1 * pre) - F.softplus(b0 * pre)).sum(-1)

            def transition(v: torch.Tensor, beta: float) -> torch.Tensor:
                h = bernoulli(torch.sigmoid(beta * self.hidden_logits(v)))
                logits = (1 - beta) * b_a + beta * torch.addmm(b, h, W.t())
                return bernoulli(torch.sigmoid(logits))

        _, log_w = _generic_ais(init, log_f_diff, transition, betas)
        est, se = log_mean_exp(log_w)
        return LogZ(log_z0 + float(est), float(se), "ais", runs, steps, log_z0, log_w.cpu())

    # -- pseudo-likelihood (Bernoulli visible units) -----------------------------------------------------
    def _flip_delta(self, v: torch.Tensor, pre: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """F(v with unit idx flipped) - F(v) for each row; ``idx`` (B,) or (B, m) unit indices."""
        idx2 = idx if idx.dim() == 2 else idx.unsqueeze(1)
        vi = torch.gather(v, 1, idx2)  # (B, m)
        s = 1 - 2 * vi  # +1 turns a unit on, -1 off
        w_rows = self.W[idx2]  # (B, m, H)
        pre_f = pre.unsqueeze(1) + s.unsqueeze(-1) * w_rows
        delta = -s * self.b[idx2] - (F.softplus(pre_f) - F.softplus(pre).unsqueeze(1)).sum(-1)
        return delta if idx.dim() == 2 else delta.squeeze(1)

    @no_grad
    def pseudo_loglik(self, v: torch.Tensor, exact: bool = True, pre: torch.Tensor | None = None) -> torch.Tensor:
        """Per-example log pseudo-likelihood sum_i log p(v_i | v_-i) (Besag 1975) of binary v.

        ``exact`` sums over every unit; otherwise one unit per example is drawn uniformly and the
        result is D log p(v_i | v_-i), the unbiased estimator scikit-learn's BernoulliRBM reports."""
        if self.gaussian:
            raise ValueError("pseudo-likelihood is defined here for binary visible units only")
        pre = self.hidden_logits(v) if pre is None else pre
        B, D = v.shape
        if not exact:
            idx = torch.randint(0, D, (B, 1), device=v.device)
            s = torch.sub(1, torch.gather(v, 1, idx), alpha=2)  # +1 turns the unit on, -1 off
            flat = idx.view(-1)
            # flipping unit i moves the hidden input by s_i W_i: no matrix product needed
            d = (F.softplus(torch.addcmul(pre, s, self.W.index_select(0, flat))) - F.softplus(pre)).sum(-1)
            return F.softplus(torch.addcmul(d, s.view(-1), self.b.index_select(0, flat))).mul_(-D)
        total = torch.zeros(B, device=v.device, dtype=v.dtype)
        chunk = max(1, (1 << 22) // (B * self.n_hidden))  # keeps the (B, chunk, H) block near 16 MB
        for start in range(0, D, chunk):
            idx = torch.arange(start, min(start + chunk, D), device=v.device).expand(B, -1)
            total -= F.softplus(-self._flip_delta(v, pre, idx)).sum(-1)
        return total

    # -- the training protocol driven by ppgen.inference.gibbs ---------------------------------------------
    def init_from_data(self, x: torch.Tensor) -> None:
        """Visible biases from the data (Hinton 2010, §8): log p/(1-p) for Bernoulli units, the mean
        for Gaussian units."""
        with torch.no_grad():
            if self.gaussian:
                self.b.copy_(x.mean(0))
            else:
                self.b.copy_(base_rate_logits(x))

    @no_grad
    def positive_phase(self, v: torch.Tensor, sweeps: int = 0) -> dict[str, torch.Tensor]:
        """The data side: p(h | v) is exact and factorial, so ``sweeps`` is not needed."""
        pre = self.hidden_logits(v)
        return {"v": v, "pre": pre, "ph": torch.sigmoid(pre)}

    @no_grad
    def init_chains(self, n: int) -> dict[str, torch.Tensor]:
        """Persistent chains start from h = 0, i.e. v ~ p(v | h = 0) on their first step."""
        return {"h": self.W.new_zeros(n, self.n_hidden)}

    @no_grad
    def chains_from_data(self, pos: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """CD starts its chains at the data: h_0 ~ p(h | v_data), reusing the positive phase."""
        return {"h": bernoulli(pos["ph"])}

    @no_grad
    def negative_phase(self, chains: dict[str, torch.Tensor], k: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """k block-Gibbs steps h -> v -> h from the chains' hidden states; returns the negative statistics
        (v_k and p(h | v_k)) and the chains' next state (h drawn from p(h | v_k))."""
        h = chains["h"]
        for i in range(k):
            v, mean = self.sample_v(h)
            ph = torch.sigmoid(self.hidden_logits(v))
            if i < k - 1:
                h = bernoulli(ph)
        return {"v": v, "ph": ph, "mean": mean}, {"h": bernoulli(ph)}

    # -- the CD statistic, then the update -------------------------------------------------------------
    def _cd_work(self, bn: int, bp: int, reuse: bool) -> dict[str, Any]:
        """The tensors :meth:`cd_gradient` writes into, with the row weights a (1/bn for the bn chain rows,
        then -1/bp for the bp data rows) and the views it takes of them. With ``reuse`` they are kept for
        the next call with the same shapes (a plain attribute: never checkpointed); else fresh."""
        W = self.W
        key = (bn, bp, W.dtype, W.device)
        work = self.__dict__.get("_cd_work_set")
        if reuse and work is not None and work["key"] == key:
            return work
        n, D, H = bn + bp, self.n_visible, self.n_hidden
        a = torch.cat([torch.full((bn, 1), 1.0 / bn, dtype=torch.float64), torch.full((bp, 1), -1.0 / bp, dtype=torch.float64)])
        a = a.to(W.device, W.dtype)
        hs = W.new_empty(n, H)
        work = {"key": key, "a": a, "a_n": a[:bn], "a_p": a[bn:], "a_flat": a[:, 0], "hs": hs, "hs_n": hs[:bn],
                "hs_p": hs[bn:], "gw": W.new_empty(D, H)}
        if n <= H:  # one product over the stacked rows: copying them costs less than a second pass over (D, H)
            vs = W.new_empty(n, D)
            work.update(vs=vs, vs_t=vs.t())
        if reuse:
            self.__dict__["_cd_work_set"] = work
        return work

    @no_grad
    def cd_gradient(self, pos: dict[str, torch.Tensor], neg: dict[str, torch.Tensor], reuse: bool = False
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Minus the CD estimate of the log-likelihood gradient per example, plus the prior's weight decay,
        for W, b and c: <v h>_model - <v h>_data + lambda W, (<v>_model - <v>_data) / sigma^2 (sigma = 1
        for Bernoulli units) and <h>_model - <h>_data, with h at its conditional mean (Hinton 2010, §3).

        The chain and data rows carry the weights a = 1/B_model and -1/B_data, put on the hidden factor,
        and the weight statistic [v_model; v_data]^T (a [h_model; h_data]) (then divided by sigma per
        visible unit) goes into a tensor of its own: a fresh one, or with ``reuse`` a work buffer that the
        next call overwrites. For small batches it is one product over the stacked rows (the (D, H) result
        is written once); for large ones two, the second added into the first (no copy of the rows). It
        is never accumulated into the weights. A BLAS may add the terms of a product one at a time into
        its output: into the statistic, whose size is that of the terms' sum, that is ordinary rounding;
        into a weight near 5 a term of size lr / B below half the spacing of float32 numbers there is
        lost whole (for B = 80,000, every term)."""
        vp, hp, vn, hn = pos["v"], pos["ph"], neg["v"], neg["ph"]
        w = self._cd_work(vn.shape[0], vp.shape[0], reuse)
        hs, gw = w["hs"], w["gw"]
        torch.mul(hn, w["a_n"], out=w["hs_n"])
        torch.mul(hp, w["a_p"], out=w["hs_p"])
        if "vs" in w:
            torch.cat((vn, vp), out=w["vs"])
            torch.mm(w["vs_t"], hs, out=gw)
            gb = torch.mv(w["vs_t"], w["a_flat"])
        else:
            torch.mm(vn.t(), w["hs_n"], out=gw).addmm_(vp.t(), w["hs_p"])
            gb = torch.mv(vn.t(), w["a_n"][:, 0]).addmv_(vp.t(), w["a_p"][:, 0])
        if self.gaussian:
            sigma = self.sigma
            gw.div_(sigma.unsqueeze(1))
            gb.div_(sigma**2)
        if self.weight_decay:
            gw.add_(self.W, alpha=self.weight_decay)
        return gw, gb, hs.sum(0)

    @no_grad
    def set_gradients(self, pos: dict[str, torch.Tensor], neg: dict[str, torch.Tensor]) -> None:
        """``.grad`` = :meth:`cd_gradient`, for any torch optimizer to apply. A learned sigma takes its
        gradient by autograd through the free energies."""
        if self.learn_sigma:
            self._set_gradients_autograd(pos, neg)
            return
        self.W.grad, self.b.grad, self.c.grad = self.cd_gradient(pos, neg)

    @no_grad
    def sgd_update(self, pos: dict[str, torch.Tensor], neg: dict[str, torch.Tensor], opt: torch.optim.Optimizer) -> bool:
        """The CD update: :meth:`cd_gradient` applied with the arithmetic of ``torch.optim.SGD.step()``
        (momentum without dampening or Nesterov; lr and momentum read from the optimizer's param group),
        with the statistic in work buffers reused between updates and without ``.grad`` or the
        optimizer's machinery, which for small batches cost as much as the arithmetic. Momentum buffers
        live in ``opt.state`` as torch's SGD keeps them, so checkpoints are interchangeable. Returns False
        (and does nothing) where it does not apply: a learned sigma or another optimizer."""
        if self.learn_sigma or not isinstance(opt, torch.optim.SGD) or len(opt.param_groups) != 1:
            return False
        group = opt.param_groups[0]
        if (group["nesterov"] or group["dampening"] != 0 or group["weight_decay"] != 0 or group.get("maximize")
                or group.get("fused") or group.get("differentiable")):
            return False
        lr, mu = group["lr"], group["momentum"]
        grads = self.cd_gradient(pos, neg, reuse=True)
        for p, g in zip((self.W, self.b, self.c), grads):
            if mu != 0:
                state = opt.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    state["momentum_buffer"] = buf = g.clone()
                else:
                    buf.mul_(mu).add_(g)
                g = buf
            p.add_(g, alpha=-lr)
        return True

    def _set_gradients_autograd(self, pos: dict[str, torch.Tensor], neg: dict[str, torch.Tensor]) -> None:
        with torch.enable_grad():
            for p in self.parameters():
                p.grad = None
            loss = self.free_energy(pos["v"]).mean() - self.free_energy(neg["v"].detach()).mean()
            loss = loss + 0.5 * self.weight_decay * (self.W**2).sum()
            loss.backward()

    def surrogate_loss(self, v_pos: torch.Tensor, v_neg: torch.Tensor) -> torch.Tensor:
        """mean F(v_data) - mean F(v_model) + lambda/2 |W|^2: its gradient (v_model held fixed) is the CD
        update's direction; the value is what training reports as ``free_energy_gap`` plus the penalty."""
        return self.free_energy(v_pos).mean() - self.free_energy(v_neg.detach()).mean() + 0.5 * self.weight_decay * (self.W**2).sum()

    @no_grad
    def monitor(self, pos: dict[str, torch.Tensor], neg: dict[str, torch.Tensor], binary: bool = True,
                detailed: bool = False) -> dict[str, float]:
        """Per-step numbers. Always ``loss``: minus the stochastic pseudo-log-likelihood per example for
        binary data (no extra matrix product: a flipped unit changes the hidden input by one row of W),
        the squared one-step reconstruction error for Gaussian units or probabilities passed up a DBN.
        With ``detailed`` (the steps the loop logs) also ``recon_error``, ``pseudo_loglik``,
        ``free_energy`` (of the batch) and ``free_energy_gap`` (data minus model samples)."""
        v, pre = pos["v"], pos["pre"]
        pl = None if (self.gaussian or not binary) else self.pseudo_loglik(v, exact=False, pre=pre)
        recon = None
        if pl is None or detailed:
            mean = self.visible_mean(bernoulli(pos["ph"]))
            recon = float(((v - mean) ** 2).sum(-1).mean())
        out = {"loss": float(-pl.mean()) if pl is not None else recon}
        if detailed:
            fe_pos = -self.visible_term(v) - F.softplus(pre).sum(-1)
            fe_neg = self.free_energy(neg["v"])
            out.update(recon_error=recon, free_energy=float(fe_pos.mean()), free_energy_gap=float(fe_pos.mean() - fe_neg.mean()))
            if pl is not None:
                out["pseudo_loglik"] = float(pl.mean())
        return out

    @torch.no_grad()
    def validation_metrics(self, v: torch.Tensor, sweeps: int = 0, chunk: int = 1000, binary: bool = True) -> dict[str, float]:
        """Held-out numbers: minus the pseudo-log-likelihood (``loss``; exact for D <= 100, else the
        stochastic estimator; the reconstruction error when the data are not binary), the one-step
        reconstruction error and the mean free energy."""
        pl, rec, fe, n = 0.0, 0.0, 0.0, v.shape[0]
        for start in range(0, n, chunk):
            vb = v[start : start + chunk]
            pre = self.hidden_logits(vb)
            h = bernoulli(torch.sigmoid(pre))
            rec += float(((vb - self.visible_mean(h)) ** 2).sum())
            fe += float((-self.visible_term(vb) - F.softplus(pre).sum(-1)).sum())
            if binary and not self.gaussian:
                pl += float(self.pseudo_loglik(vb, exact=self.n_visible <= 100, pre=pre).sum())
        out = {"recon_error": rec / n, "free_energy": fe / n}
        if self.gaussian or not binary:
            out["loss"] = rec / n
        else:
            out["loss"] = -pl / n
            out["pseudo_loglik"] = pl / n
        return out


# --------------------------------------------------------------------------- general Boltzmann machine


class BMCore(EnergyCore):
    """A Boltzmann machine over N = D + H binary units s = (v, h) with symmetric couplings and no
    self-connections: E(s) = -1/2 s.K.s - theta.s, where K has blocks L (visible-visible), W
    (visible-hidden) and J (hidden-hidden). Either lateral block can be switched off; with both off this
    is an RBM. Only the strict upper triangles of L and J are used (K is built symmetric from them).

    Sampling is sequential single-site Gibbs (Geman & Geman 1984): a sweep visits every free unit in
    order and draws it from p(s_i | s_-i) = sigmoid(theta_i + sum_j K_ij s_j).
    """

    def __init__(
        self,
        n_visible: int,
        n_hidden: int,
        *,
        visible_visible: bool = True,
        hidden_hidden: bool = True,
        weight_std: float = 0.01,
        hidden_bias: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__()
        self.n_visible, self.n_hidden = n_visible, n_hidden
        self.weight_decay = weight_decay
        self.W = nn.Parameter(torch.randn(n_visible, n_hidden) * weight_std)
        self.b = nn.Parameter(torch.zeros(n_visible))
        self.c = nn.Parameter(torch.full((n_hidden,), float(hidden_bias)))
        self.visible_visible, self.hidden_hidden = visible_visible, hidden_hidden
        self.L = nn.Parameter(torch.triu(torch.randn(n_visible, n_visible) * weight_std, 1)) if visible_visible else None
        self.J = nn.Parameter(torch.triu(torch.randn(n_hidden, n_hidden) * weight_std, 1)) if hidden_hidden else None
        # Every unit of a layer without lateral couplings can be drawn at once, as a block.

    @property
    def n_units(self) -> int:
        return self.n_visible + self.n_hidden

    def coupling(self) -> torch.Tensor:
        """The symmetric N x N coupling matrix K with a zero diagonal."""
        D, H = self.n_visible, self.n_hidden
        K = self.W.new_zeros(D + H, D + H)
        if self.L is not None:
            lu = torch.triu(self.L, 1)
            K[:D, :D] = lu + lu.t()
        if self.J is not None:
            ju = torch.triu(self.J, 1)
            K[D:, D:] = ju + ju.t()
        K[:D, D:] = self.W
        K[D:, :D] = self.W.t()
        return K

    def bias(self) -> torch.Tensor:
        return torch.cat([self.b, self.c])

    def energy(self, s: torch.Tensor, K: torch.Tensor | None = None) -> torch.Tensor:
        """E(s) per row of full states s (B, N)."""
        K = self.coupling() if K is None else K
        return -0.5 * ((s @ K) * s).sum(-1) - s @ self.bias()

    @torch.no_grad()
    def log_unnormalized_visible(self, v: torch.Tensor, chunk: int = 1 << 12) -> torch.Tensor:
        """log sum_h exp(-E(v, h)) per row by enumerating the 2^H hidden states (H <= 20)."""
        if self.n_hidden > MAX_ENUMERATE:
            raise ValueError(f"enumerating 2^{self.n_hidden} hidden states is not feasible; use ais_log_z_clamped")
        K = self.coupling()
        D = self.n_visible
        vis = 0.5 * ((v @ K[:D, :D]) * v).sum(-1) + v @ self.b  # (B,)
        field = v @ K[:D, D:] + self.c  # (B, H): each hidden unit's input from v and its bias
        parts = []
        for start in range(0, 2**self.n_hidden, chunk):
            idx = torch.arange(start, min(start + chunk, 2**self.n_hidden), device=v.device)
            hs = ((idx.unsqueeze(1) >> torch.arange(self.n_hidden - 1, -1, -1, device=v.device)) & 1).to(v.dtype)
            lat = 0.5 * ((hs @ K[D:, D:]) * hs).sum(-1)  # (S,)
            parts.append(torch.logsumexp((field @ hs.t() + lat).double(), 1))
        return vis.double() + torch.logsumexp(torch.stack(parts, 1), 1)

    @torch.no_grad()
    def log_z_exact(self, chunk: int = 1 << 14) -> float:
        """log Z by enumerating all 2^N states (N <= 24), or 2^D visible states with the hidden summed
        exactly (D <= 20 and H <= 20)."""
        N = self.n_units
        if N <= 24:
            K, th = self.coupling(), self.bias()
            parts = []
            for start in range(0, 2**N, chunk):
                idx = torch.arange(start, min(start + chunk, 2**N), device=K.device)
                s = ((idx.unsqueeze(1) >> torch.arange(N - 1, -1, -1, device=K.device)) & 1).to(K.dtype)
                parts.append(torch.logsumexp(-self.energy(s, K).double(), 0))
            return float(torch.logsumexp(torch.stack(parts), 0))
        if self.n_visible <= MAX_ENUMERATE and self.n_hidden <= MAX_ENUMERATE:
            vs = all_binary_states(self.n_visible, self.W.device, self.W.dtype)
            return float(torch.logsumexp(torch.cat([self.log_unnormalized_visible(vs[i : i + 256]) for i in range(0, len(vs), 256)]), 0))
        raise ValueError(f"exact log Z of a BM with {self.n_visible} visible and {self.n_hidden} hidden units is not feasible; use ais_log_z")

    # -- Gibbs ----------------------------------------------------------------------------------------
    def sweep(self, s: torch.Tensor, units: range | None = None, K: torch.Tensor | None = None,
              beta: float = 1.0, base: torch.Tensor | None = None) -> torch.Tensor:
        """One Gibbs sweep over ``units`` (all by default) of states s (B, N), in place and returned.

        A layer with no lateral couplings is drawn as one block (its units are conditionally
        independent); otherwise units are visited one at a time. At inverse temperature ``beta`` each
        unit's logit is beta * (theta_i + K_i.s) + (1 - beta) * base_i (AIS)."""
        K = self.coupling() if K is None else K
        th = self.bias()
        D, N = self.n_visible, self.n_units
        units = range(N) if units is None else units
        blocks: list[range] = []
        for lo, hi, lateral in ((0, D, self.L is not None), (D, N, self.J is not None)):
            sel = [u for u in units if lo <= u < hi]
            if not sel:
                continue
            if lateral:
                blocks.extend(range(u, u + 1) for u in sel)
            else:
                blocks.append(range(sel[0], sel[-1] + 1))
        for blk in blocks:
            lo, hi = blk.start, blk.stop
            logit = s @ K[:, lo:hi] + th[lo:hi]
            if beta != 1.0:
                logit = beta * logit
                if base is not None:
                    logit = logit + (1 - beta) * base[lo:hi]
            s[:, lo:hi] = bernoulli(torch.sigmoid(logit))
        return s

    def random_states(self, n: int) -> torch.Tensor:
        return bernoulli(self.W.new_full((n, self.n_units), 0.5))

    def clamped_hidden(self, v: torch.Tensor, sweeps: int, h: torch.Tensor | None = None) -> torch.Tensor:
        """Full states with v clamped and the hidden units after ``sweeps`` Gibbs sweeps (from h, or from
        a draw of p(h | v) without hidden-hidden couplings, the mean-field-free start)."""
        n = v.shape[0]
        K = self.coupling()
        s = torch.empty(n, self.n_units, device=v.device, dtype=v.dtype)
        s[:, : self.n_visible] = v
        if h is None:
            s[:, self.n_visible :] = bernoulli(torch.sigmoid(v @ K[: self.n_visible, self.n_visible :] + self.c))
        else:
            s[:, self.n_visible :] = h
        hidden = range(self.n_visible, self.n_units)
        for _ in range(sweeps):
            self.sweep(s, hidden, K)
        return s

    # -- partition function by AIS ---------------------------------------------------------------------
    @torch.no_grad()
    def ais_log_z(self, runs: int = 100, steps: int = 1000, base_logits: torch.Tensor | None = None) -> LogZ:
        """log Z by AIS from independent visible units with logits ``base_logits`` (the data's base rate)
        and uniform hidden units: p_k(s) ~ exp((1 - beta_k) b_A.v - beta_k E(s)); each transition is
        one Gibbs sweep at beta_k."""
        D, H = self.n_visible, self.n_hidden
        K = self.coupling()
        b_a = K.new_zeros(D) if base_logits is None else base_logits.to(K.device, K.dtype)
        base = torch.cat([b_a, K.new_zeros(H)])
        log_z0 = float(F.softplus(b_a).sum()) + H * math.log(2)
        init = bernoulli(torch.sigmoid(base).expand(runs, D + H).contiguous())

        def log_f_diff(s: torch.Tensor, b0: float, b1: float) -> torch.Tensor:
            return (b1 - b0) * (-self.energy(s, K) - s[:, :D] @ b_a)

        def transition(s: torch.Tensor, beta: float) -> torch.Tensor:
            return self.sweep(s, None, K, beta=beta, base=base)

        _, log_w = _generic_ais(init, log_f_diff, transition, beta_schedule(steps, K.device))
        est, se = log_mean_exp(log_w)
        return LogZ(log_z0 + float(est), float(se), "ais", runs, steps, log_z0, log_w.cpu())

    @torch.no_grad()
    def ais_log_unnormalized_visible(self, v: torch.Tensor, runs: int = 100, steps: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
        """log sum_h exp(-E(v, h)) per row by AIS with v clamped, from uniform hidden units; returns the
        estimates and their delta-method standard errors."""
        B, D, H = v.shape[0], self.n_visible, self.n_hidden
        K = self.coupling()
        s = torch.empty(B * runs, D + H, device=v.device, dtype=v.dtype)
        s[:, :D] = v.repeat_interleave(runs, 0)
        s[:, D:] = bernoulli(v.new_full((B * runs, H), 0.5))
        hidden = range(D, D + H)

        def log_f_diff(x: torch.Tensor, b0: float, b1: float) -> torch.Tensor:
            return (b1 - b0) * -self.energy(x, K)

        def transition(x: torch.Tensor, beta: float) -> torch.Tensor:
            return self.sweep(x, hidden, K, beta=beta)

        _, log_w = _generic_ais(s, log_f_diff, transition, beta_schedule(steps, K.device))
        est, se = log_mean_exp(log_w.view(B, runs), dim=1)
        return est + H * math.log(2), se

    # -- the training protocol driven by ppgen.inference.gibbs ---------------------------------------------
    def init_from_data(self, x: torch.Tensor) -> None:
        with torch.no_grad():
            self.b.copy_(base_rate_logits(x))

    @no_grad
    def positive_phase(self, v: torch.Tensor, sweeps: int = 5) -> dict[str, torch.Tensor]:
        """The clamped phase: the hidden units equilibrate with v held at the data ("given visible states,
        compute the hidden states ... until equilibrium"), for ``sweeps`` Gibbs sweeps."""
        return {"s": self.clamped_hidden(v, sweeps), "v": v}

    @no_grad
    def init_chains(self, n: int) -> dict[str, torch.Tensor]:
        return {"s": self.random_states(n)}

    @no_grad
    def chains_from_data(self, pos: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"s": pos["s"].clone()}

    @no_grad
    def negative_phase(self, chains: dict[str, torch.Tensor], k: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        s = chains["s"].clone()
        K = self.coupling()
        for _ in range(k):
            self.sweep(s, None, K)
        return {"s": s}, {"s": s}

    def surrogate_loss(self, s_pos: torch.Tensor, s_neg: torch.Tensor) -> torch.Tensor:
        """mean E(s_data) - mean E(s_model) + lambda/2 (|W|^2 + |L|^2 + |J|^2): its gradient is minus the
        Boltzmann learning rule <s_i s_j>_clamped - <s_i s_j>_free (Ackley, Hinton & Sejnowski 1985)."""
        K = self.coupling()
        reg = sum((p**2).sum() for p in (self.W, self.L, self.J) if p is not None)
        return self.energy(s_pos, K).mean() - self.energy(s_neg.detach(), K).mean() + 0.5 * self.weight_decay * reg

    def set_gradients(self, pos: dict[str, torch.Tensor], neg: dict[str, torch.Tensor]) -> None:
        with torch.enable_grad():
            for p in self.parameters():
                p.grad = None
            self.surrogate_loss(pos["s"].detach(), neg["s"].detach()).backward()

    @no_grad
    def monitor(self, pos: dict[str, torch.Tensor], neg: dict[str, torch.Tensor], binary: bool = True,
                detailed: bool = False) -> dict[str, float]:
        """``loss``: minus the conditional pseudo-log-likelihood sum_i log p(v_i | v_-i, h) of the data
        with the hidden units from the clamped phase; with ``detailed`` also the reconstruction error
        (of v by those conditionals) and the energy gap between data and model states."""
        K = self.coupling()
        s, D = pos["s"], self.n_visible
        logit = s @ K[:, :D] + self.b
        cpl = -F.binary_cross_entropy_with_logits(logit, s[:, :D], reduction="none").sum(-1)
        out = {"loss": float(-cpl.mean())}
        if detailed:
            out["recon_error"] = float(((s[:, :D] - torch.sigmoid(logit)) ** 2).sum(-1).mean())
            out["energy_gap"] = float(self.energy(s, K).mean() - self.energy(neg["s"], K).mean())
        return out

    @torch.no_grad()
    def validation_metrics(self, v: torch.Tensor, sweeps: int = 5, binary: bool = True) -> dict[str, float]:
        s = self.clamped_hidden(v, sweeps)
        K = self.coupling()
        D = self.n_visible
        p = torch.sigmoid(s @ K[:, :D] + self.b)
        cpl = -F.binary_cross_entropy_with_logits(s @ K[:, :D] + self.b, v, reduction="none").sum(-1)
        return {"loss": float(-cpl.mean()), "recon_error": float(((v - p) ** 2).sum(-1).mean())}
