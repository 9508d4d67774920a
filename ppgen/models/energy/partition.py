"""The partition function of an energy model: exact enumeration of binary states, annealed importance
sampling (AIS) with its schedule of inverse temperatures, and :class:`LogZ`, an estimate with its error.

The cores (:mod:`ppgen.models.energy.rbm_core`, :mod:`ppgen.models.energy.bm_core`) give AIS their own
intermediate distributions and transitions; :func:`generic_ais` runs the annealing.

References:
    Neal (2001), Annealed Importance Sampling, Statistics and Computing 11.
    Salakhutdinov & Murray (2008), On the Quantitative Analysis of Deep Belief Networks, ICML.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ppgen.progress import tick

#: Enumerate exactly when the summed-over side has at most this many binary units (2^20 ~ 1e6 states).
MAX_ENUMERATE = 20


def all_binary_states(n: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """All 2^n binary vectors of length n, shape (2^n, n), in binary counting order (unit 0 slowest)."""
    if n > 26:
        raise ValueError(f"enumerating 2^{n} states is not feasible; use AIS")
    idx = torch.arange(2**n, device=device)
    bits = (idx.unsqueeze(1) >> torch.arange(n - 1, -1, -1, device=device)) & 1
    return bits.to(dtype)


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


def generic_ais(
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
        tick(k, len(b) - 1)  # to the enclosing ppgen.progress phase, if any (an evaluation)
    return x, log_w
