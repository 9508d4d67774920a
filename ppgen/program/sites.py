"""A compiled program's sites evaluated in one pass: the layout of their values, the labels of a batch,
and each site's parameters and distribution from the values before it (:class:`Env`).

Site values are laid out as Pyro lays them out, so that one pass serves both paths: the data plate is
the rightmost batch dimension (size B), vectorized particles the one to its left (when there are more
than one), and each enumerated discrete site takes the next dimension to the left of those, the guide's
first, as ``TraceEnum_ELBO`` allocates them. Global sites have a batch dimension of size 1 where the
data plate is.

**Labels that may be missing.** A site ``observed: y`` reads the labels; a label below 0 is hidden. A
batch whose labels are all given observes y; one whose labels are all hidden treats y as a discrete
latent (summed out under q(y|x) if the guide has a site y, else in the model); a batch with both sums y
out for every example and pins the labelled ones to their label: in the guide by replacing q(y|x) by a
point mass on the label, in the model by a factor that is 0 at the label and -1e30 elsewhere (whose
exponential is exactly 0, so the sum over y is exactly the labelled term).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import pyro.distributions as dist
import torch
import torch.nn.functional as F

from ppgen.program import expr, flows
from ppgen.program.compiled import WHOLE, Program, Site
from ppgen.program.dists import build
from ppgen.spec import SpecError

BIG = 1e30


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


def pin_labels(d: dist.Distribution, lab: Labels) -> dist.Distribution:
    """q(y | x) with the labelled examples' rows replaced by a point mass on their label."""
    logits = d.logits
    k = logits.shape[-1]
    onehot = torch.where(torch.arange(k, device=logits.device) == lab.y.clamp_min(0)[:, None], 0.0, -BIG)
    new = torch.where(lab.mask[:, None], onehot.to(logits.dtype), logits)
    cls = dist.Categorical if isinstance(d, dist.Categorical) else dist.OneHotCategorical
    return cls(logits=new, validate_args=False)


def label_factor(value: torch.Tensor, lab: Labels, onehot: bool) -> torch.Tensor:
    """0 where an example's label is hidden or equals the enumerated value, -1e30 elsewhere."""
    cls = value.argmax(-1) if onehot else value
    same = cls == lab.y
    zero = torch.zeros((), dtype=torch.get_default_dtype(), device=lab.y.device)
    return torch.where(lab.mask & ~same, zero - BIG, zero)
