"""The general Boltzmann machine's core (:class:`BMCore`): visible-visible and hidden-hidden couplings,
sequential single-site Gibbs sweeps, clamped and free phases, exact enumeration and AIS for log Z.

References:
    Ackley, Hinton & Sejnowski (1985), A Learning Algorithm for Boltzmann Machines, Cognitive Science 9.
    Geman & Geman (1984), Stochastic Relaxation, Gibbs Distributions, and the Bayesian Restoration of
    Images, IEEE PAMI 6.
    Salakhutdinov & Murray (2008), On the Quantitative Analysis of Deep Belief Networks, ICML.
    Neal (2001), Annealed Importance Sampling, Statistics and Computing 11.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ppgen.models.energy.core import EnergyCore, base_rate_logits, bernoulli, no_grad
from ppgen.models.energy.partition import MAX_ENUMERATE, LogZ, all_binary_states, beta_schedule, generic_ais, log_mean_exp


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

        _, log_w = generic_ais(init, log_f_diff, transition, beta_schedule(steps, K.device))
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

        _, log_w = generic_ais(s, log_f_diff, transition, beta_schedule(steps, K.device))
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
