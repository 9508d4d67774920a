"""One pass of a compiled program over a batch: the guide, then the model on the guide's values, giving
every term of the bound per site (:func:`run`), with the checks of the trial run (``validate``).

The values are laid out as :mod:`ppgen.program.sites` describes. Because the shapes and the order of
random draws are Pyro's, the fused loss draws the same numbers as Pyro's ELBOs from the same seed, which is
how the tests compare them.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch.distributions import kl_divergence

from ppgen.program import flows
from ppgen.program.compiled import Program, Site
from ppgen.program.dists import build
from ppgen.program.sites import Env, Labels, Layout, ProgramError, label_factor, pin_labels, site_args, site_dist

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _enum_value(d: dist.Distribution, target: int) -> torch.Tensor:
    """The support of a discrete distribution laid out at enumeration dimension ``target`` (as Pyro's
    EnumMessenger lays it out)."""
    v = d.enumerate_support(expand=False)
    return v.reshape((v.shape[0],) + (1,) * (-1 - target) + tuple(d.event_shape))


def _bshape(*shapes: Any) -> torch.Size:
    """torch.broadcast_shapes, without its cost when the shapes are already equal (every step)."""
    first = shapes[0]
    if all(s == first for s in shapes[1:]):
        return torch.Size(first)
    return torch.broadcast_shapes(*shapes)


def _normal_log_prob(v: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, event: int) -> torch.Tensor:
    # as torch.distributions.Normal.log_prob writes it
    lp = -((v - loc) ** 2) / (2 * scale.pow(2)) - scale.log() - _HALF_LOG_2PI
    return lp.sum(tuple(range(-event, 0))) if event else lp


def _kl_normal(gl: torch.Tensor, gs: torch.Tensor, ml: torch.Tensor, ms: torch.Tensor, event: int) -> torch.Tensor:
    # KL(N(gl, gs) || N(ml, ms)) as torch.distributions.kl._kl_normal_normal writes it
    var_ratio = (gs / ms).pow(2)
    t1 = ((gl - ml) / ms).pow(2)
    kl = 0.5 * (var_ratio + t1 - 1 - var_ratio.log())
    return kl.sum(tuple(range(-event, 0))) if event else kl


def _bernoulli_log_prob(v: torch.Tensor, logits: torch.Tensor, event: int, reduce: bool = False) -> torch.Tensor:
    shape = _bshape(v.shape, logits.shape)
    if logits.shape != shape:
        logits = logits.expand(shape)
    if v.shape != shape:
        v = v.expand(shape)
    if reduce:  # one fused kernel for the sum over everything
        return -F.binary_cross_entropy_with_logits(logits, v, reduction="sum")
    lp = -F.binary_cross_entropy_with_logits(logits, v, reduction="none")
    return lp.sum(tuple(range(-event, 0))) if event else lp


@dataclass
class Terms:
    """The pieces of the bound, per site, laid out as the site values are."""

    model_local: list[torch.Tensor] = field(default_factory=list)  # log p of local sites (incl. enumerated)
    model_global: list[torch.Tensor] = field(default_factory=list)
    guide_local: dict[str, torch.Tensor] = field(default_factory=dict)  # log q of sampled local sites
    guide_global: dict[str, torch.Tensor] = field(default_factory=dict)
    guide_enum: list[torch.Tensor] = field(default_factory=list)  # log q of enumerated guide sites
    kl_local: list[torch.Tensor] = field(default_factory=list)
    latent_local: dict[str, torch.Tensor] = field(default_factory=dict)  # log p of local latents drawn by the guide
    kl_global: list[torch.Tensor] = field(default_factory=list)
    model_enum_dims: list[int] = field(default_factory=list)
    guide_enum_dims: list[int] = field(default_factory=list)
    model_local_sums: list[torch.Tensor] = field(default_factory=list)  # log p summed over the whole local plate


def term_value(t: Any) -> Any:
    """A term, computed if it was left for later (a guide's log q that -KL may replace)."""
    return t() if callable(t) else t


def run(prog: Program, modules: tuple[Any, Any, Any], x: torch.Tensor, lab: Labels, layout: Layout,
        meanfield: bool = False, validate: bool | None = False, guide_values: dict | None = None,
        sample_guide_discrete: bool = False, reduce: bool = False, enum_kl: bool = False) -> tuple[Terms, Env, Env]:
    """The guide pass, then the model pass on the guide's values: every term of the bound.

    With ``meanfield`` a latent's log p - log q is replaced by -KL(q || p) where torch has it and neither
    distribution depends on an enumerated site (TraceMeanField_ELBO's rule); with ``enum_kl`` also where
    they depend on sites the guide enumerates (M2's q(z | x, y) for every class y): the bound is then
    sum_y q(y | x) [E_q(z|x,y) log p(x | y, z) - KL(q(z | x, y) || p(z)) + log p(y) - log q(y | x)], the
    KL per class in closed form (Kingma et al. 2014 compute it so), which takes the KL's Monte Carlo noise
    out of the differences between classes that train q(y | x). Sites the model enumerates are summed
    by log-sum-exp, inside which no KL can stand: a KL that depends on one stays Monte Carlo. With
    ``sample_guide_discrete`` the guide's discrete sites are drawn rather than summed (for posterior
    draws; the terms are then not a bound). With ``reduce`` (no enumeration: only the total is needed)
    the data's Bernoulli log-likelihood is summed over everything in one kernel."""
    terms = Terms()
    nxt = [-1 - layout.nesting]
    fast = not validate
    genv = Env(prog, modules, validate)
    genv.values[prog.x_site.name] = x
    ysite = prog.y_site
    if lab.mode == "all":
        genv.values[ysite.name] = lab.value
    gparams: dict[str, tuple[dict[str, torch.Tensor], dist.Distribution | None]] = {}
    for g in prog.guide:
        if ysite is not None and g.name == ysite.name and lab.mode == "all":
            continue
        plate = layout.global_shape if g.is_global else layout.local_shape
        args = site_args(g, genv)
        qd = None
        if g.enumerate and sample_guide_discrete:
            qd = site_dist(g, args, validate)
            if ysite is not None and g.name == ysite.name and lab.mode == "mixed":
                qd = pin_labels(qd, lab)
            value = qd.expand(torch.broadcast_shapes(qd.batch_shape, plate)).sample()
        elif g.enumerate:
            qd = site_dist(g, args, validate)
            if ysite is not None and g.name == ysite.name and lab.mode == "mixed":
                qd = pin_labels(qd, lab)
            value = _enum_value(qd, nxt[0])
            terms.guide_enum_dims.append(nxt[0])
            nxt[0] -= 1
            terms.guide_enum.append(qd.log_prob(value))
        elif fast and g.fast == "normal":
            loc, scale = args["loc"], args["scale"]
            k = g.event_dim
            batch = _bshape(loc.shape[: loc.dim() - k], scale.shape[: scale.dim() - k], plate)
            eps = torch.empty((*batch, *g.shape), dtype=loc.dtype, device=loc.device).normal_()
            value = loc + eps * scale
            (terms.guide_global if g.is_global else terms.guide_local)[g.name] = functools.partial(
                _normal_log_prob, value, loc, scale, k)
        else:
            qd = site_dist(g, args, validate)
            qd = qd.expand(_bshape(qd.batch_shape, plate))
            if validate:
                _check_shapes(g, qd, plate)
            value = qd.rsample() if qd.has_rsample else qd.sample()
            if g.entry.name not in ("Delta", "ConstrainedDelta"):
                (terms.guide_global if g.is_global else terms.guide_local)[g.name] = qd.log_prob(value)
        gparams[g.name] = (args, qd)
        genv.values[g.name] = value
    if guide_values is not None:
        guide_values.update(genv.values)

    menv = Env(prog, modules, validate)
    for name, v in genv.values.items():
        menv.values[name] = v
    for m in prog.model:
        plate = layout.global_shape if m.is_global else layout.local_shape
        args = site_args(m, menv)
        model_terms = terms.model_global if m.is_global else terms.model_local
        if m.observed == "x":
            if fast and m.fast == "bernoulli":
                logits = args["logits"]
                if reduce and not m.is_global and tuple(logits.shape[: logits.dim() - m.event_dim]) == layout.local_shape:
                    terms.model_local_sums.append(_bernoulli_log_prob(x, logits, m.event_dim, reduce=True))
                else:
                    model_terms.append(_bernoulli_log_prob(x, logits, m.event_dim))
            elif fast and m.fast == "normal":
                model_terms.append(_normal_log_prob(x, args["loc"], args["scale"], m.event_dim))
            else:
                d = site_dist(m, args, validate)
                if validate:
                    _check_shapes(m, d, plate)
                if m.options.get("dequantize") is not None:
                    d = d.expand(_bshape(d.batch_shape, plate))  # fresh noise for each particle, as Pyro's plates
                model_terms.append(d.log_prob(x))
            continue
        if m.deterministic:
            d = site_dist(m, args, validate)
            menv.values[m.name] = d.mean if not validate else _checked_delta(m, d, plate)
            continue
        y_latent = m.observed == "y" and lab.mode != "all"
        if m.observed == "y" and not y_latent:
            d = site_dist(m, args, validate)
            model_terms.append(d.log_prob(lab.value))
            continue
        in_guide = m.name in prog.guide_by_name
        if (m.enumerate or y_latent) and not in_guide:
            d = site_dist(m, args, validate)
            if validate:
                _check_shapes(m, d, plate)
            value = _enum_value(d, nxt[0])
            terms.model_enum_dims.append(nxt[0])
            nxt[0] -= 1
            menv.values[m.name] = value
            model_terms.append(d.log_prob(value))
            if y_latent and lab.mode == "mixed":
                model_terms.append(label_factor(value, lab, m.entry.name == "OneHotCategorical"))
            continue
        value = menv.values[m.name]
        gargs, qd = gparams[m.name]
        if meanfield and not m.enumerate and not y_latent and m.name in prog.kl_ok:
            g = prog.guide_by_name[m.name]
            if fast and g.fast == "normal" and m.standard_normal:
                gl, gs = gargs["loc"], gargs["scale"]
                # KL(N(m, s) || N(0, 1)) = (m^2 + s^2 - 1) / 2 - log s
                kl = 0.5 * (gl.pow(2) + gs.pow(2) - 1) - gs.log()
                kl = kl.sum(tuple(range(-m.event_dim, 0))) if m.event_dim else kl
            elif fast and g.fast == "normal" and m.fast == "normal":
                kl = _kl_normal(gargs["loc"], gargs["scale"], args["loc"], args["scale"], m.event_dim)
            else:
                d = site_dist(m, args, validate)
                kl = _try_kl(qd if qd is not None else site_dist(g, gargs, validate), d, plate)
            if kl is not None and kl.dim() <= layout.nesting + (len(terms.guide_enum_dims) if enum_kl else 0):
                # -KL replaces log p - log q: drop the guide's log q of this site
                (terms.guide_global if m.is_global else terms.guide_local).pop(m.name, None)
                (terms.kl_global if m.is_global else terms.kl_local).append(kl)
                continue
        if fast and m.fast == "normal":
            lp = _normal_log_prob(value, args["loc"], args["scale"], m.event_dim)
        else:
            d = site_dist(m, args, validate)
            if validate:
                _check_shapes(m, d, plate)
                _check_support(m, prog.guide_by_name.get(m.name), d, value)
            lp = d.log_prob(value)
        model_terms.append(lp)
        if not m.is_global:
            terms.latent_local[m.name] = lp
    return terms, genv, menv


def _try_kl(q: dist.Distribution, p: dist.Distribution, plate: tuple[int, ...]) -> torch.Tensor | None:
    try:
        q = q.expand(torch.broadcast_shapes(q.batch_shape, plate))
        p = p.expand(torch.broadcast_shapes(p.batch_shape, plate))
        return kl_divergence(q, p)
    except (NotImplementedError, RuntimeError, ValueError):
        return None


def _checked_delta(m: Site, d: dist.Distribution, plate: tuple[int, ...]) -> torch.Tensor:
    if tuple(d.event_shape) != m.shape:
        raise ProgramError(f"{m.where}: its value has shape {list(d.event_shape)}, but the site's shape is {list(m.shape)}")
    return d.mean


def _check_shapes(s: Site, d: dist.Distribution, plate: tuple[int, ...]) -> None:
    if tuple(d.event_shape) != s.shape:
        raise ProgramError(f"{s.where}: the distribution has event shape {list(d.event_shape)}, but the site's shape is "
                           f"{list(s.shape)}; its parameters do not fit that shape")
    try:
        torch.broadcast_shapes(d.batch_shape, plate)
    except RuntimeError:
        raise ProgramError(f"{s.where}: the distribution's batch shape {list(d.batch_shape)} does not fit the "
                           f"{'global' if s.is_global else 'data'} plate {list(plate)}") from None


def _canon(c: Any) -> str:
    while hasattr(c, "base_constraint"):
        c = c.base_constraint
    name = type(c).__name__
    lb = getattr(c, "lower_bound", None)
    ub = getattr(c, "upper_bound", None)
    if name in ("_Real",):
        return "real"
    if name in ("_GreaterThan", "_GreaterThanEq") and float(lb) == 0.0:
        return "positive"
    if name in ("_Interval", "_HalfOpenInterval") and float(lb) == 0.0 and float(ub) == 1.0:
        return "unit_interval"
    if name == "_Simplex":
        return "simplex"
    return repr(c)


def _check_support(m: Site, g: Site | None, d: dist.Distribution, value: torch.Tensor) -> None:
    if g is None:
        return
    if g.entry.name in ("ConstrainedNormal", "ConstrainedDelta"):
        gs = _canon(g.options["support"])
    elif flows.is_flow(g):
        gs = "real"  # every layer a guide may have maps the real vectors onto themselves
    elif g.entry.name == "Delta":
        if not bool(d.support.check(value).all()):
            raise ProgramError(f"guide.{m.name}: its values fall outside the support of the model's {m.entry.name}")
        return
    else:
        gs = _canon(build(g.entry, {k: torch.ones(v) for k, v in g.param_shapes.items()}, g.shape, g.options).support) \
            if g.entry.name not in ("Categorical", "OneHotCategorical", "Bernoulli") else "discrete"
    ms = _canon(d.support) if not m.entry.discrete else "discrete"
    if gs != ms:
        raise ProgramError(f"guide.{m.name}: the guide's {g.entry.name} lives on {gs} but the model's {m.entry.name} on "
                           f"{ms}; choose a guide distribution with the same support")


def sum_terms(items: Any) -> torch.Tensor | float:
    items = [term_value(t) for t in (items.values() if isinstance(items, dict) else items)]
    return functools.reduce(torch.add, items) if items else 0.0
