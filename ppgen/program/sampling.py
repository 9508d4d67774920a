"""Values of a compiled program's sites outside training: ancestral draws from the model, the
distributions of the observed sites given the latents, posterior draws of every latent given x, and a
point of the guide.
"""

from __future__ import annotations

import math
from typing import Any

import pyro.distributions as dist
import torch
import torch.nn.functional as F

from ppgen.program import flows
from ppgen.program.compiled import Program, Site
from ppgen.program.passes import sum_terms, run
from ppgen.program.sites import Env, Labels, Layout, ProgramError, labels, site_args, site_dist


def ancestral(prog: Program, modules: tuple[Any, Any, Any], n: int, given: dict[str, torch.Tensor] | None = None,
              mean: bool = False, point: bool = False) -> dict[str, torch.Tensor]:
    """Every site's value in ``n`` draws from the model, global sites from their guide (the fitted
    posterior; a point estimate for AutoDelta), sites in ``given`` fixed; with ``mean`` the site bound
    to x is its mean given its parents (pixel probabilities) rather than a draw; with ``point`` every
    latent is too (continuous ones at their mean, discrete ones at their most probable value)."""
    given = given or {}
    env = Env(prog, modules)
    for g in prog.global_guide:
        if g.name in given:
            continue
        d = site_dist(g, site_args(g, env), False)
        if point:
            env.values[g.name] = _point(d, g).expand(n, *g.shape)
            continue
        d = d.expand(torch.broadcast_shapes(d.batch_shape, (n,)))
        env.values[g.name] = d.sample()
    for m in prog.model:
        if m.name in given:
            env.values[m.name] = given[m.name]
            continue
        if m.is_global and m.latent:
            continue  # from the guide
        d = site_dist(m, site_args(m, env), False)
        if m.deterministic:
            env.values[m.name] = d.mean
            continue
        if m.observed == "x" and mean and (flows.is_flow(m) or m.options.get("dequantize") is not None):
            pass  # no closed-form mean: a draw, below
        elif (mean and m.observed == "x") or (point and m.observed != "x"):
            v = _point(d, m)
            env.values[m.name] = v.expand(n, *v.shape) if v.dim() == len(m.shape) else v
            continue
        d = d.expand(torch.broadcast_shapes(d.batch_shape, (n,)))
        env.values[m.name] = d.sample()
    return env.values


def _point(d: dist.Distribution, s: Site) -> torch.Tensor:
    """The mean of a continuous distribution (the median of a transformed Normal: its location pushed
    into the support), the most probable value of a discrete latent."""
    if s.entry.name in ("Categorical", "OneHotCategorical"):
        v = d.probs.argmax(-1)
        return v if s.entry.name == "Categorical" else F.one_hot(v, d.probs.shape[-1]).to(d.probs.dtype)
    if s.entry.name == "Bernoulli" and s.observed != "x":
        return (d.probs > 0.5).to(d.probs.dtype)
    if flows.is_flow(s):
        return flows.point(d)
    if isinstance(d, dist.TransformedDistribution):
        return d.transforms[0](d.base_dist.mean)
    return d.mean


def conditional(prog: Program, modules: tuple[Any, Any, Any], x: torch.Tensor, lab: Labels,
                values: dict[str, torch.Tensor]) -> dict[str, dist.Distribution]:
    """The distributions of the observed sites given every latent's value in ``values`` (laid out with a
    leading draw dimension over the data plate)."""
    env = Env(prog, modules)
    env.values.update(values)
    env.values[prog.x_site.name] = x
    out = {}
    for m in prog.model:
        if m.observed == "y" and lab.mode == "all":
            env.values[m.name] = lab.value
        if m.name in values and m.observed != "x":
            continue
        d = site_dist(m, site_args(m, env), False)
        if m.deterministic:
            env.values[m.name] = d.mean
        elif m.observed:
            out[m.name] = d
        else:
            raise ProgramError(f"{m.where}: no value given for the latent")
    return out


def posterior_draws(prog: Program, modules: tuple[Any, Any, Any], x: torch.Tensor, lab: Labels,
                    draws: int) -> dict[str, torch.Tensor]:
    """Draws of every latent given x: the guide's sites from q (discrete ones sampled from q rather than
    summed), the sites summed out in the model from their exact conditional given x and the guide's
    draws. Local sites have shape (draws, B, *event), global ones (draws, 1, *event)."""
    layout = Layout(x.shape[0], draws)
    gvals: dict[str, torch.Tensor] = {}
    terms, _, _ = run(prog, modules, x, lab, layout, guide_values=gvals, sample_guide_discrete=True)
    out = {k: v for k, v in gvals.items() if k in prog.guide_by_name}
    enum_sites = [m for m in prog.model if (m.enumerate or (m.observed == "y" and lab.mode != "all"))
                  and m.name not in prog.guide_by_name]
    if enum_sites:
        total = sum_terms(terms.model_local)
        total = total.expand(*total.shape[:-2], *layout.local_shape)
        dims = terms.model_enum_dims
        lead = [total.shape[d] for d in dims]
        joint = total.movedim(dims, list(range(len(dims)))).reshape(math.prod(lead), *layout.local_shape)
        idx = torch.distributions.Categorical(logits=joint.movedim(0, -1)).sample()  # (draws, B)
        for i, (m, size) in enumerate(zip(enum_sites, lead)):
            k = (idx // math.prod(lead[i + 1:])) % size
            if m.entry.name == "OneHotCategorical":
                k = F.one_hot(k, size).to(torch.get_default_dtype())
            elif m.entry.name == "Bernoulli":
                k = k.to(torch.get_default_dtype())
            out[m.name] = k
    return out


def guide_point(prog: Program, modules: tuple[Any, Any, Any], x: torch.Tensor, y: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """A point of q(latents | x): the location (in the latent's space) of every continuous guide site and
    the most probable value of every discrete one; labels where given."""
    env = Env(prog, modules)
    env.values[prog.x_site.name] = x
    ysite = prog.y_site
    if ysite is not None and y is not None and bool((y >= 0).all()):
        lab = labels(prog, y, x.shape[0])
        env.values[ysite.name] = lab.value
    for g in prog.guide:
        if g.name in env.values:
            continue
        d = site_dist(g, site_args(g, env), False)
        if g.enumerate:
            probs = d.probs
            v = probs.argmax(-1)
            env.values[g.name] = v if g.entry.name == "Categorical" else F.one_hot(v, probs.shape[-1]).to(probs.dtype)
        elif flows.is_flow(g):
            env.values[g.name] = flows.point(d)  # the base's mode pushed through every layer
        elif isinstance(d, dist.TransformedDistribution):
            env.values[g.name] = d.transforms[0](d.base_dist.mean)  # the median: the location pushed into the support
        else:
            env.values[g.name] = d.mean
    return env.values
