"""The E and M steps of a mixture of independent Bernoulli vectors with conjugate priors, for the
programs of that form that EM fits (:mod:`ppgen.program.conjugate`).

References:
    Bishop (2006), Pattern Recognition and Machine Learning, Springer, section 9.3.3 (Bernoulli mixtures).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from ppgen.program.mixture_form import MixtureForm
from ppgen.spec import SpecError

Theta = dict[str, torch.Tensor]


class BernoulliMixtureEM:
    """E and M steps of a mixture of independent Bernoulli vectors (Bishop 2006, section 9.3.3) with a
    Dirichlet(c) prior on the weights and Beta(a, b) on every probability, over a leading batch of S
    parameter values. The M-steps are the Dirichlet modes of :func:`ppgen.models.bayesian.mstep.dirichlet_mode`
    (a Beta is the Dirichlet of two categories): w_k = (n_k + c - 1) / (N + K (c - 1)) and
    p_kd = (s_kd + a - 1) / (n_k + a + b - 2), with n_k = sum_n r_nk and s_kd = sum_n r_nk x_nd."""

    #: No site supports to check starts against (see :attr:`~ppgen.program.conjugate.ConjugateEM.sites`).
    sites: tuple[Any, ...] = ()

    def __init__(self, form: MixtureForm) -> None:
        self.k, self.d = form.components, form.dim
        self.flat_form = form.flat
        self.c = form.blocks["weights"].prior[0] if not form.flat else 1.0
        self.ab = form.blocks["probs"].prior if not form.flat else (1.0, 1.0)

    def em_check(self, flat: bool) -> None:
        if flat or self.flat_form:
            return
        for value, what in ((self.c, "the weights' Dirichlet concentration"), (self.ab[0], "the Beta's concentration1"),
                            (self.ab[1], "the Beta's concentration0")):
            if value < 1:
                raise SpecError(f"routine em: {what} is {value:g}; below 1 the posterior density grows without bound "
                                "at the edge of the simplex, so there is no posterior mode for EM to reach; set it to 1 "
                                "or more, or fit the program with --inference svi (the zoo's svi recipe)")

    def em_chunk(self, s: int) -> int:
        return max(1, 2**17 // (s * self.k * max(1, self.d)))

    def em_statistics(self, x: torch.Tensor, theta: Mapping[str, torch.Tensor], *,
                      method: str = "auto") -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        p = theta["probs"]  # (S, K, D)
        x = x.to(p.dtype)
        # log p(x_n | k) = sum_d x log p + (1 - x) log (1 - p), 0 log 0 = 0 (a maximum-likelihood p of 0 or 1)
        xs, ps = x[None, :, None, :], p[:, None]
        lp = (torch.xlogy(xs, ps) + torch.xlogy(1 - xs, 1 - ps)).sum(-1)
        joint = lp + torch.log(theta["weights"])[:, None, :]  # (S, N, K)
        ll = torch.logsumexp(joint, -1)
        r = torch.exp(joint - ll[..., None])
        ones = (r[..., None] * x[None, :, None, :]).sum(1)  # (S, K, D)
        return {"count": r.sum(1), "ones": ones}, ll.sum(-1)

    def em_maximize(self, stats: dict[str, torch.Tensor], theta: Mapping[str, torch.Tensor], *,
                    flat: bool) -> tuple[Theta, torch.Tensor]:
        from ppgen.models.bayesian.mstep import dirichlet_mode

        flat = flat or self.flat_form
        count, ones = stats["count"], stats["ones"]
        weights = dirichlet_mode(count, 1.0 if flat else self.c, theta["weights"])
        a, b = (1.0, 1.0) if flat else self.ab
        pair = torch.stack([ones, count[..., None] - ones], -1).clamp_min(0.0)
        conc = torch.tensor([a, b], dtype=pair.dtype, device=pair.device)
        previous = torch.stack([theta["probs"], 1 - theta["probs"]], -1)
        probs = dirichlet_mode(pair, conc, previous)[..., 0]
        bad = torch.zeros(count.shape[0], dtype=torch.bool, device=count.device)
        return {"weights": weights, "probs": probs}, bad

    @torch.no_grad()
    def init_values(self, x: torch.Tensor, generator: torch.Generator) -> Theta:
        """k-means++ clusters of the data; each component's probabilities their smoothed frequencies
        (count + 1) / (n + 2), strictly inside (0, 1)."""
        from ppgen.models.bayesian.kmeans import kmeans

        x = x.double()
        _, label = kmeans(x, self.k, generator)
        counts = torch.bincount(label, minlength=self.k).double()
        sums = torch.zeros(self.k, self.d, dtype=x.dtype).index_add_(0, label, x)
        return {"weights": ((counts + 1) / (counts + 1).sum()), "probs": (sums + 1) / (counts[:, None] + 2)}

    def log_prior(self, theta: Mapping[str, torch.Tensor], validate: bool = True) -> torch.Tensor:
        w, p = theta["weights"], theta["probs"]
        if self.flat_form:
            return torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
        from torch.distributions import Beta, Dirichlet

        conc = torch.full((self.k,), self.c, dtype=w.dtype, device=w.device)
        a = torch.tensor(self.ab[0], dtype=p.dtype, device=p.device)
        b = torch.tensor(self.ab[1], dtype=p.dtype, device=p.device)
        return (Dirichlet(conc, validate_args=validate).log_prob(w)
                + Beta(a, b, validate_args=validate).log_prob(p).sum((-1, -2)))
