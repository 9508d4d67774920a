"""The restricted Boltzmann machine's core (:class:`RBMCore`): Bernoulli hidden units and Bernoulli or
Gaussian visible units; conditionals, block Gibbs steps, free energies on both sides, exact log Z by
enumerating the smaller side, AIS for log Z, pseudo-likelihood, and the training protocol that
:mod:`ppgen.inference.gibbs` drives (its contrastive-divergence statistic and fused SGD update are in
:mod:`ppgen.models.energy.cd_update`).

The energy of a Bernoulli RBM is ``E(v, h) = -b.v - c.h - v.W.h``; of a Gaussian-Bernoulli RBM (Hinton 2010,
§13.2; Krizhevsky 2009) ``E(v, h) = sum_i (v_i - b_i)^2 / (2 sigma_i^2) - c.h - (v / sigma).W.h``.

References:
    Hinton (2002), Training Products of Experts by Minimizing Contrastive Divergence, Neural Comp. 14.
    Tieleman (2008), Training Restricted Boltzmann Machines using Approximations to the Likelihood
    Gradient, ICML.
    Salakhutdinov & Murray (2008), On the Quantitative Analysis of Deep Belief Networks, ICML.
    Hinton (2010), A Practical Guide to Training Restricted Boltzmann Machines, UTML TR 2010-003.
    Besag (1975), Statistical Analysis of Non-Lattice Data, The Statistician 24 (pseudo-likelihood).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ppgen.models.energy.cd_update import cd_gradient, sgd_update
from ppgen.models.energy.core import EnergyCore, base_rate_logits, bernoulli, no_grad
from ppgen.models.energy.partition import MAX_ENUMERATE, LogZ, beta_schedule, generic_ais, log_mean_exp


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

        _, log_w = generic_ais(init, log_f_diff, transition, betas)
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
    @no_grad
    def set_gradients(self, pos: dict[str, torch.Tensor], neg: dict[str, torch.Tensor]) -> None:
        """``.grad`` = :func:`~ppgen.models.energy.cd_update.cd_gradient`, for any torch optimizer to apply. A
        learned sigma takes its gradient by autograd through the free energies."""
        if self.learn_sigma:
            self._set_gradients_autograd(pos, neg)
            return
        self.W.grad, self.b.grad, self.c.grad = cd_gradient(self, pos, neg)

    def sgd_update(self, pos: dict[str, torch.Tensor], neg: dict[str, torch.Tensor], opt: torch.optim.Optimizer) -> bool:
        """The fused CD update (:func:`~ppgen.models.energy.cd_update.sgd_update`); False where it does not
        apply."""
        return sgd_update(self, pos, neg, opt)

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
