"""The objectives of a compiled program from the terms of one pass (:mod:`ppgen.program.passes`): minus
the bound over a batch (:func:`fused_loss`: trace, meanfield, iwae), the importance weights of log p(x),
and each example's ELBO.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ppgen.program.compiled import Program
from ppgen.program.passes import Terms, sum_terms, term_value, run
from ppgen.program.sites import Labels, Layout, ProgramError, labels


def _contract(terms: Terms, layout: Layout, stratified: bool) -> torch.Tensor:
    """The bound per example (shape of the local plate): model-enumerated sites summed out by
    log-sum-exp; guide-enumerated ones by their q-weighted sum (``stratified`` False: the ELBO) or by
    a plain sum of importance weights (True: an unbiased estimate of p(x), for IWAE and log p(x))."""
    total = sum_terms(terms.model_local)
    for d in terms.model_enum_dims:
        total = torch.logsumexp(total, dim=d, keepdim=True)
    inner = total - sum_terms(terms.guide_local) - sum_terms(terms.kl_local)
    if terms.guide_enum_dims:
        logq = sum_terms(terms.guide_enum)
        if stratified:
            for d in terms.guide_enum_dims:
                inner = torch.logsumexp(inner, dim=d, keepdim=True)
        else:
            inner = (inner - logq) * logq.exp()
            inner = inner.sum(dim=tuple(terms.guide_enum_dims), keepdim=True)
    return _to_shape(inner, layout.local_shape)


def _to_shape(t: torch.Tensor | float, shape: tuple[int, ...]) -> torch.Tensor:
    t = torch.as_tensor(t)
    while t.dim() > len(shape):
        if t.shape[0] != 1:
            raise ProgramError(f"internal: a term of shape {list(t.shape)} does not reduce to {list(shape)}")
        t = t.squeeze(0)
    return t.expand(shape)


def global_term(terms: Terms, layout: Layout) -> torch.Tensor:
    g = sum_terms(terms.model_global) - sum_terms(terms.guide_global) - sum_terms(terms.kl_global)
    return _to_shape(g, layout.global_shape)


def fused_loss(prog: Program, modules: tuple[Any, Any, Any], x: torch.Tensor, y: torch.Tensor | None, elbo: str,
               num_particles: int, num_data: int) -> torch.Tensor:
    """Minus the bound summed over the batch (global sites weighted by B / N)."""
    batch = x.shape[0]
    lab = labels(prog, y, batch)
    iwae = elbo == "iwae"
    if iwae and prog.has_global_latents:
        raise ProgramError("elbo iwae: the per-example importance-weighted bound needs a program without global "
                           "latent sites; use elbo trace or meanfield")
    layout = Layout(batch, num_particles if num_particles > 1 else None)
    if not iwae and not _enumerates(prog, lab):
        # nothing to sum out: only the total counts, and the data's term is summed in one kernel
        terms, _, _ = run(prog, modules, x, lab, layout, meanfield=elbo == "meanfield", reduce=True)
        local = sum_terms(terms.model_local) - sum_terms(terms.guide_local) - sum_terms(terms.kl_local)
        if isinstance(local, torch.Tensor) and local.shape == layout.local_shape:
            total = local.sum()
        else:
            total = _to_shape(local, layout.local_shape).sum()
        total = total + sum_terms(terms.model_local_sums)
        if prog.global_model:
            total = total + global_term(terms, layout).sum() * (batch / num_data)
        return -total / (layout.particles or 1)
    terms, _, _ = run(prog, modules, x, lab, layout, meanfield=elbo == "meanfield", enum_kl=True)
    if iwae:
        log_w = _contract(terms, layout, stratified=True)
        log_w = log_w if layout.particles is not None else log_w[None]
        return -(torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])).sum()
    local = _contract(terms, layout, stratified=False)
    glob = global_term(terms, layout)
    if layout.particles is not None:
        local, glob = local.mean(0), glob.mean(0)
    return -(local.sum() + glob.sum() * (batch / num_data))


def _enumerates(prog: Program, lab: Labels) -> bool:
    """Whether a pass with these labels sums any site out."""
    return prog.always_enumerates or lab.mode in ("hidden", "mixed")


def log_weights(prog: Program, modules: tuple[Any, Any, Any], x: torch.Tensor, lab: Labels, particles: int) -> torch.Tensor:
    """log p(x, latents) - log q(latents | x) for ``particles`` draws, shape (particles, B): global
    sites drawn from their guide and left out of the weight (so the mean weight estimates the
    predictive density under q(globals)), enumerated sites summed out."""
    layout = Layout(x.shape[0], particles)
    terms, _, _ = run(prog, modules, x, lab, layout)
    return _contract(terms, layout, stratified=True)


def elbo_per_example(prog: Program, modules: tuple[Any, Any, Any], x: torch.Tensor, lab: Labels) -> dict[str, torch.Tensor]:
    """The ELBO of each example with one draw (analytic KL where torch has it), and its KL part."""
    layout = Layout(x.shape[0], None)
    terms, _, _ = run(prog, modules, x, lab, layout, meanfield=True)
    elbo = _contract(terms, layout, stratified=False)
    # KL(q || p) of the local latents: analytic where it was, log q - log p at the draw otherwise
    kl = sum_terms(terms.kl_local) + sum_terms([term_value(terms.guide_local[n]) - lp for n, lp in terms.latent_local.items()
                                                  if n in terms.guide_local])
    return {"elbo": elbo, "kl": _to_shape(kl, layout.local_shape)}
