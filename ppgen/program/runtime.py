"""Running a compiled program: its passes over the data, the fused objectives, ancestral sampling and
the Pyro model and guide.

Site values are laid out as Pyro lays them out, so that one pass serves both paths: the data plate is
the rightmost batch dimension (size B), vectorized particles the one to its left (when there are more
than one), and each enumerated discrete site takes the next dimension to the left of those, the guide's
first, as ``TraceEnum_ELBO`` allocates them. Global sites have a batch dimension of size 1 where the
data plate is. Because the shapes and the order of random draws are Pyro's, the fused loss draws the
same numbers as Pyro's ELBOs from the same seed, which is how the tests compare them.

**Labels that may be missing.** A site ``observed: y`` reads the labels; a label below 0 is hidden. A
batch whose labels are all given observes y; one whose labels are all hidden treats y as a discrete
latent (summed out under q(y|x) if the guide has a site y, else in the model); a batch with both sums y
out for every example and pins the labelled ones to their label: in the guide by replacing q(y|x) by a
point mass on the label, in the model by a factor that is 0 at the label and -1e30 elsewhere (whose
exponential is exactly 0, so the sum over y is exactly the labelled term).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from torch.distributions import kl_divergence

from ppgen.program import expr, flows
from ppgen.program.compile import WHOLE, Program, Site
from ppgen.program.dists import build
from ppgen.spec import SpecError

BIG = 1e30
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class ProgramError(SpecError):
    """A program that cannot run on the values it was given (shapes that do not fit, labels out of
    range); the message names the site. Bad input, so the command line exits with status 2."""


@dataclass
class Layout:
    batch: int
    particles: int | None = None  # None: no particle dimension

    @property
    def nesting(self) -> int:
        return 1 if self.particles is None else 2

    @property
    def local_shape(self) -> tuple[int, ...]:
        return (self.batch,) if self.particles is None else (self.particles, self.batch)

    @property
    def global_shape(self) -> tuple[int, ...]:
        return () if self.particles is None else (self.particles, 1)


@dataclass
class Labels:
    mode: Literal["none", "all", "hidden", "mixed"]
    y: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    value: torch.Tensor | None = None  # what the y site observes (classes, or one-hot rows)


def labels(prog: Program, y: torch.Tensor | None, batch: int) -> Labels:
    site = prog.y_site
    if site is None:
        return Labels("none")
    if y is None:
        mode = "hidden"
        lab = Labels(mode)
    else:
        if y.shape != (batch,):
            raise ProgramError(f"{site.where}: labels y must have shape ({batch},), got {tuple(y.shape)}")
        k = site.options["classes"]
        if bool((y >= k).any()):
            raise ProgramError(f"{site.where}: a label is {int(y.max())}, but there are {k} classes (0..{k - 1}; "
                               "below 0 means hidden)")
        mask = y >= 0
        n = int(mask.sum())
        mode = "all" if n == batch else "hidden" if n == 0 else "mixed"
        lab = Labels(mode, y.long(), mask)
        if mode == "all":
            lab.value = y.long() if site.entry.name == "Categorical" else F.one_hot(y.long(), k).to(torch.get_default_dtype())
    if mode != "all" and prog.labels_required:
        raise ProgramError(f"{site.where}: some labels are hidden, but the guide reads y without a site y of its own; "
                           "declare y in the guide (q(y | x)) so that hidden labels can be summed out under q")
    return lab


# --------------------------------------------------------------------------- evaluating sites


class Env:
    """The values of one pass and a cache of network outputs and parameter values."""

    __slots__ = ("prog", "nets", "params", "consts", "values", "heads", "cache", "validate")

    def __init__(self, prog: Program, modules: tuple[Any, Any, Any], validate: bool | None = False) -> None:
        self.prog = prog
        self.nets, self.params, self.consts = modules
        self.values: dict[str, torch.Tensor] = {}
        self.heads: dict[str, dict[str, torch.Tensor]] = {}
        self.cache: dict[str, torch.Tensor] = {}
        self.validate = validate

    def lookup(self, ref: expr.Ref) -> expr.Value:
        name = ref.name
        if ref.head is None:
            v = self.values.get(name)
            if v is not None:
                return v, self.prog.rank[name]
        if name in self.prog.networks:
            heads = self.heads.get(name)
            if heads is None:
                net = self.nets[name]
                try:
                    inputs = [self.values[i.site] for i in net.inputs]
                except KeyError as missing:
                    raise expr.EvalError(f"the network {name} reads {missing.args[0]}, which has no value here") from None
                heads = net(inputs)
                self.heads[name] = heads
            head = ref.head or WHOLE
            return heads[head], self.prog.head_rank[(name, head)]
        v = self.cache.get(name)
        if v is None:
            if name.startswith("#"):
                v = self.consts.value(name)
            elif name in self.prog.params:
                v = self.params.value(name)
            else:
                raise expr.EvalError(f"{name} has no value here")
            self.cache[name] = v
        return v, self.prog.rank[name]


def site_args(site: Site, env: Env) -> dict[str, torch.Tensor]:
    """The site's parameters, each with its event part of the shape the distribution needs."""
    out = {}
    for key, node in site.args.items():
        try:
            t, e = expr.evaluate(node, env.lookup)
            r = site.param_ranks[key]
            if not isinstance(t, torch.Tensor):
                t = torch.tensor(t, dtype=torch.get_default_dtype())
            if e > r:
                raise expr.EvalError(f"the value has {e} event dimensions ({list(t.shape[t.dim() - e:])}), but the "
                                     f"parameter takes {r} ({list(site.param_shapes[key])})")
            if e < r:
                t = t.reshape(*t.shape[: t.dim() - e], *([1] * (r - e)), *t.shape[t.dim() - e:])
            if r:
                want = site.param_shapes[key]
                if tuple(t.shape[-r:]) != want:
                    try:
                        t = t.expand(*t.shape[:-r], *want)
                    except RuntimeError:
                        extra = {k: v for k, v in site.options.items() if k in ("classes", "levels", "components")}
                        raise expr.EvalError(
                            f"a value of shape {list(t.shape[t.dim() - e:])} does not fit the parameter's shape "
                            f"{list(want)} (the site's shape is {list(site.shape)}"
                            + (f", {extra}" if extra else "") + ")") from None
        except (expr.EvalError, RuntimeError, IndexError, TypeError) as exc:
            raise ProgramError(f"{site.where}.{key}: {exc}") from None
        out[key] = t
    if flows.is_flow(site):
        out["#flow"] = env.nets[flows.key(site)]  # the site's layers (modules: parameters, networks)
    return out


def site_dist(site: Site, args: dict[str, torch.Tensor], validate: bool | None) -> dist.Distribution:
    try:
        return build(site.entry, args, site.shape, site.options, validate)
    except (ValueError, RuntimeError, TypeError, IndexError) as exc:
        raise ProgramError(f"{site.where}: {site.entry.name}({', '.join(args)}) cannot be built: {exc}") from None


def _enum_value(d: dist.Distribution, target: int) -> torch.Tensor:
    """The support of a discrete distribution laid out at enumeration dimension ``target`` (as Pyro's
    EnumMessenger lays it out)."""
    v = d.enumerate_support(expand=False)
    return v.reshape((v.shape[0],) + (1,) * (-1 - target) + tuple(d.event_shape))


def _pinned(d: dist.Distribution, lab: Labels) -> dist.Distribution:
    """q(y | x) with the labelled examples' rows replaced by a point mass on their label."""
    logits = d.logits
    k = logits.shape[-1]
    onehot = torch.where(torch.arange(k, device=logits.device) == lab.y.clamp_min(0)[:, None], 0.0, -BIG)
    new = torch.where(lab.mask[:, None], onehot.to(logits.dtype), logits)
    cls = dist.Categorical if isinstance(d, dist.Categorical) else dist.OneHotCategorical
    return cls(logits=new, validate_args=False)


def _label_factor(value: torch.Tensor, lab: Labels, onehot: bool) -> torch.Tensor:
    """0 where an example's label is hidden or equals the enumerated value, -1e30 elsewhere."""
    cls = value.argmax(-1) if onehot else value
    same = cls == lab.y
    zero = torch.zeros((), dtype=torch.get_default_dtype(), device=lab.y.device)
    return torch.where(lab.mask & ~same, zero - BIG, zero)


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


# --------------------------------------------------------------------------- the fused passes


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


def _value(t: Any) -> Any:
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
                qd = _pinned(qd, lab)
            value = qd.expand(torch.broadcast_shapes(qd.batch_shape, plate)).sample()
        elif g.enumerate:
            qd = site_dist(g, args, validate)
            if ysite is not None and g.name == ysite.name and lab.mode == "mixed":
                qd = _pinned(qd, lab)
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
                model_terms.append(_label_factor(value, lab, m.entry.name == "OneHotCategorical"))
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


def _sum_terms(items: Any) -> torch.Tensor | float:
    items = [_value(t) for t in (items.values() if isinstance(items, dict) else items)]
    return functools.reduce(torch.add, items) if items else 0.0


def _contract(terms: Terms, layout: Layout, stratified: bool) -> torch.Tensor:
    """The bound per example (shape of the local plate): model-enumerated sites summed out by
    log-sum-exp; guide-enumerated ones by their q-weighted sum (``stratified`` False: the ELBO) or by
    a plain sum of importance weights (True: an unbiased estimate of p(x), for IWAE and log p(x))."""
    total = _sum_terms(terms.model_local)
    for d in terms.model_enum_dims:
        total = torch.logsumexp(total, dim=d, keepdim=True)
    inner = total - _sum_terms(terms.guide_local) - _sum_terms(terms.kl_local)
    if terms.guide_enum_dims:
        logq = _sum_terms(terms.guide_enum)
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
    g = _sum_terms(terms.model_global) - _sum_terms(terms.guide_global) - _sum_terms(terms.kl_global)
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
        local = _sum_terms(terms.model_local) - _sum_terms(terms.guide_local) - _sum_terms(terms.kl_local)
        if isinstance(local, torch.Tensor) and local.shape == layout.local_shape:
            total = local.sum()
        else:
            total = _to_shape(local, layout.local_shape).sum()
        total = total + _sum_terms(terms.model_local_sums)
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
    kl = _sum_terms(terms.kl_local) + _sum_terms([_value(terms.guide_local[n]) - lp for n, lp in terms.latent_local.items()
                                                  if n in terms.guide_local])
    return {"elbo": elbo, "kl": _to_shape(kl, layout.local_shape)}


# --------------------------------------------------------------------------- ancestral sampling


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
        total = _sum_terms(terms.model_local)
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


# --------------------------------------------------------------------------- Pyro's model and guide


def _enumeration_allowed() -> bool:
    """Whether a site marked for enumeration may run here: under Pyro's enumeration (TraceEnum_ELBO,
    infer_discrete) or a blocked trial run (TraceEnum's guess of the plate nesting). Anywhere else, for
    example under Trace_ELBO, it would be sampled from its prior and the bound would be a different,
    noisier objective with no gradient for the choice: refused."""
    from pyro.poutine.block_messenger import BlockMessenger
    from pyro.poutine.enum_messenger import EnumMessenger
    from pyro.poutine.runtime import _PYRO_STACK

    return any(isinstance(h, (EnumMessenger, BlockMessenger)) for h in _PYRO_STACK)


def pyro_model(prog: Program, modules: tuple[Any, Any, Any], x: torch.Tensor, y: torch.Tensor | None,
               num_data: int, allow_prior_enumeration: bool = False) -> torch.Tensor:
    batch = x.shape[0]
    lab = labels(prog, y, batch)
    env = Env(prog, modules, None)
    with poutine.scale(scale=batch / num_data if prog.has_global_latents else 1.0):
        for m in prog.global_model:
            _pyro_model_site(prog, m, env, x, lab, allow_prior_enumeration)
    with pyro.plate("data", batch):
        for m in prog.local_model:
            _pyro_model_site(prog, m, env, x, lab, allow_prior_enumeration)
    return env.values[prog.x_site.name]


def _pyro_model_site(prog: Program, m: Site, env: Env, x: torch.Tensor, lab: Labels, allow: bool) -> None:
    args = site_args(m, env)
    d = site_dist(m, args, None)
    enum = {"enumerate": "parallel"}
    if m.observed == "x":
        v = pyro.sample(m.name, d, obs=x)
    elif m.deterministic:
        v = pyro.deterministic(m.name, d.mean, event_dim=m.event_dim)
    elif m.observed == "y" and lab.mode == "all":
        v = pyro.sample(m.name, d, obs=lab.value)
    else:
        y_latent = m.observed == "y"
        if (m.enumerate or y_latent) and m.name not in prog.guide_by_name:
            if not (allow or _enumeration_allowed()):
                raise ProgramError(
                    f"{m.where} is summed out by enumeration: run the model under TraceEnum_ELBO (the svi routine's "
                    "fused path computes it), or wrap it with pyro.infer.infer_discrete; under Trace_ELBO it would be "
                    "sampled from its prior instead")
            v = pyro.sample(m.name, d, infer=enum)
            if y_latent and lab.mode == "mixed":
                pyro.factor(f"{m.name}__labels", _label_factor(v, lab, m.entry.name == "OneHotCategorical"))
        else:
            v = pyro.sample(m.name, d)
    env.values[m.name] = v


def pyro_guide(prog: Program, modules: tuple[Any, Any, Any], x: torch.Tensor, y: torch.Tensor | None,
               num_data: int) -> None:
    batch = x.shape[0]
    lab = labels(prog, y, batch)
    env = Env(prog, modules, None)
    env.values[prog.x_site.name] = x
    ysite = prog.y_site
    if lab.mode == "all":
        env.values[ysite.name] = lab.value
    with poutine.scale(scale=batch / num_data if prog.has_global_latents else 1.0):
        for g in prog.global_guide:
            _pyro_guide_site(prog, g, env, lab)
    with pyro.plate("data", batch):
        for g in prog.local_guide:
            if ysite is not None and g.name == ysite.name and lab.mode == "all":
                continue
            _pyro_guide_site(prog, g, env, lab)


def _pyro_guide_site(prog: Program, g: Site, env: Env, lab: Labels) -> None:
    d = site_dist(g, site_args(g, env), None)
    if g.enumerate:
        if prog.y_site is not None and g.name == prog.y_site.name and lab.mode == "mixed":
            d = _pinned(d, lab)
        v = pyro.sample(g.name, d, infer={"enumerate": "parallel"})
    else:
        v = pyro.sample(g.name, d)
    env.values[g.name] = v
