"""The contrastive-divergence statistic of an RBM (:class:`~ppgen.models.energy.rbm_core.RBMCore`) and the fused
SGD update that applies it: :func:`cd_gradient` is minus the CD estimate of the log-likelihood gradient
(what :meth:`~ppgen.models.energy.rbm_core.RBMCore.set_gradients` puts in ``.grad`` for any optimizer),
written into a tensor of its own (:func:`cd_work`), never accumulated into the weights, so that no BLAS's
order of summation can lose the update; :func:`sgd_update` applies it with the arithmetic of
``torch.optim.SGD.step()``, the path training takes where it applies
(:meth:`~ppgen.models.energy.rbm_core.RBMCore.sgd_update`).

References:
    Hinton (2002), Training Products of Experts by Minimizing Contrastive Divergence, Neural Comp. 14.
    Hinton (2010), A Practical Guide to Training Restricted Boltzmann Machines, UTML TR 2010-003.
    Higham (2002), Accuracy and Stability of Numerical Algorithms, 2nd ed., SIAM, §3.1 (rounding of sums).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from ppgen.models.energy.core import no_grad


class RBMParameters(Protocol):
    """What the CD statistic and its update read of an RBM (:class:`~ppgen.models.energy.rbm_core.RBMCore`)."""

    W: torch.Tensor
    b: torch.Tensor
    c: torch.Tensor
    n_visible: int
    n_hidden: int
    gaussian: bool
    learn_sigma: bool
    weight_decay: float

    @property
    def sigma(self) -> torch.Tensor: ...


def cd_work(core: RBMParameters, bn: int, bp: int, reuse: bool) -> dict[str, Any]:
    """The tensors :func:`cd_gradient` writes into, with the row weights a (1/bn for the bn chain rows,
    then -1/bp for the bp data rows) and the views it takes of them. With ``reuse`` they are kept for
    the next call with the same shapes (a plain attribute: never checkpointed); else fresh."""
    W = core.W
    key = (bn, bp, W.dtype, W.device)
    work = core.__dict__.get("_cd_work_set")
    if reuse and work is not None and work["key"] == key:
        return work
    n, D, H = bn + bp, core.n_visible, core.n_hidden
    a = torch.cat([torch.full((bn, 1), 1.0 / bn, dtype=torch.float64), torch.full((bp, 1), -1.0 / bp, dtype=torch.float64)])
    a = a.to(W.device, W.dtype)
    hs = W.new_empty(n, H)
    work = {"key": key, "a": a, "a_n": a[:bn], "a_p": a[bn:], "a_flat": a[:, 0], "hs": hs, "hs_n": hs[:bn],
            "hs_p": hs[bn:], "gw": W.new_empty(D, H)}
    if n <= H:  # one product over the stacked rows: copying them costs less than a second pass over (D, H)
        vs = W.new_empty(n, D)
        work.update(vs=vs, vs_t=vs.t())
    if reuse:
        core.__dict__["_cd_work_set"] = work
    return work


@no_grad
def cd_gradient(core: RBMParameters, pos: dict[str, torch.Tensor], neg: dict[str, torch.Tensor], reuse: bool = False
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
    w = cd_work(core, vn.shape[0], vp.shape[0], reuse)
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
    if core.gaussian:
        sigma = core.sigma
        gw.div_(sigma.unsqueeze(1))
        gb.div_(sigma**2)
    if core.weight_decay:
        gw.add_(core.W, alpha=core.weight_decay)
    return gw, gb, hs.sum(0)


@no_grad
def sgd_update(core: RBMParameters, pos: dict[str, torch.Tensor], neg: dict[str, torch.Tensor], opt: torch.optim.Optimizer) -> bool:
    """The CD update: :func:`cd_gradient` applied with the arithmetic of ``torch.optim.SGD.step()``
    (momentum without dampening or Nesterov; lr and momentum read from the optimizer's param group),
    with the statistic in work buffers reused between updates and without ``.grad`` or the
    optimizer's machinery, which for small batches cost as much as the arithmetic. Momentum buffers
    live in ``opt.state`` as torch's SGD keeps them, so checkpoints are interchangeable. Returns False
    (and does nothing) where it does not apply: a learned sigma or another optimizer."""
    if core.learn_sigma or not isinstance(opt, torch.optim.SGD) or len(opt.param_groups) != 1:
        return False
    group = opt.param_groups[0]
    if (group["nesterov"] or group["dampening"] != 0 or group["weight_decay"] != 0 or group.get("maximize")
            or group.get("fused") or group.get("differentiable")):
        return False
    lr, mu = group["lr"], group["momentum"]
    grads = cd_gradient(core, pos, neg, reuse=True)
    for p, g in zip((core.W, core.b, core.c), grads):
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
