"""The programs EM fits in closed form, and their recognition: finite mixtures of Gaussian or Bernoulli
vectors with the priors EM's M-steps maximise exactly::

    weights ~ Dirichlet(c, ..., c)                     global, shape [K]    (or a simplex param)
    locs    ~ Normal(m, s)                             global, shape [K, D] (or a real param)
    scales  ~ LogNormal(log median, tau)               global, shape [K, D] or [K] (or a positive param)
    c       ~ Categorical(probs: weights), enumerate: parallel     local
    x       ~ Normal(loc: onehot(c, K) @ locs, scale: onehot(c, K) @ scales), observed: x

or, for binary data, a mixture of Bernoulli vectors (Bishop 2006, section 9.3.3)::

    weights ~ Dirichlet(c, ..., c)                     global, shape [K]    (or a simplex param)
    probs   ~ Beta(a, b)                               global, shape [K, D] (or a unit_interval param)
    c       ~ Categorical(probs: weights), enumerate: parallel     local
    x       ~ Bernoulli(probs: onehot(c, K) @ probs), observed: x

each with a point-mass guide on the global sites (``guide_globals: delta`` or ``guide: delta``): EM finds one
point, the posterior mode, not a distribution. The sites may have any names and be declared in any
order; the constants may be written as expressions of numbers (``loc: log(0.5)``). Declared with priors,
EM reaches the mode of log p(weights, locs, scales) + log p(x | ...) in the coordinates the sites are
declared in (the objective of the svi routine with a point-mass guide, computed there by enumeration);
written as learnable parameters (no priors), the maximum-likelihood fit. Either all three blocks have
priors or none has.

:func:`mixture_form` recognises the form when the ``em`` routine starts
(:meth:`ppgen.program.conjugate.ConjugateEM.em_check`); any other program is refused
(:class:`NotConjugate`) with the reason and the recipes that do fit it.

References:
    McLachlan & Peel (2000), Finite Mixture Models, Wiley.
    Bishop (2006), Pattern Recognition and Machine Learning, Springer, section 9.3.3 (Bernoulli mixtures).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from ppgen.program import expr
from ppgen.spec import SpecError


@dataclass(frozen=True)
class Block:
    """One global block of the mixture: a site with a prior, or a learnable parameter."""

    role: str
    name: str
    kind: Literal["site", "param"]
    prior: tuple[float, ...] = ()  # Dirichlet (c,), Normal (m, s), LogNormal (log median, tau)


@dataclass(frozen=True)
class MixtureForm:
    """A program recognised as a finite mixture; its blocks by role, named as the gmm family names them
    (``weights``, ``locs``, ``scales``; ``probs`` for Bernoulli emissions)."""

    components: int
    dim: int
    covariance: Literal["diag", "spherical"] | None  # None: Bernoulli emissions
    blocks: dict[str, Block]
    assignment: str
    observed: str
    emission: Literal["normal", "bernoulli"] = "normal"

    @property
    def flat(self) -> bool:
        """No priors declared: EM is maximum likelihood."""
        return all(b.kind == "param" for b in self.blocks.values())


class NotConjugate(SpecError):
    """The program is not of the form EM fits; the message says why."""


def _other_recipes() -> str:
    """The zoo recipes that fit every program (the svi routine's), by the names ``--inference`` takes, or
    the routine's name without a zoo."""
    from ppgen import zoo
    from ppgen.spec_yaml import read_yaml

    folder = zoo.folder("inference")
    fits = []
    for name in zoo.names("inference"):
        try:
            if read_yaml(folder / f"{name}.yaml").get("routine") == "svi":
                fits.append(name)
        except SpecError:
            continue
    return f"one of the zoo recipes {', '.join(fits)} (--inference NAME)" if fits else "a recipe of routine: svi"


def refuse(why: str) -> NotConjugate:
    return NotConjugate(
        f"routine em: EM does not apply to this program: {why}. EM fits a program whose structure is a finite "
        "mixture: global weights ~ Dirichlet and, per component, locs ~ Normal and scales ~ LogNormal (or probs ~ "
        "Beta), or learnable parameters; a local Categorical assignment c with enumerate: parallel and probs: "
        "weights; x ~ Normal(onehot(c, K) @ locs, onehot(c, K) @ scales) or Bernoulli(probs: onehot(c, K) @ probs), "
        "observed: x; a point-mass guide on the globals (guide_globals: delta). Fit this program with "
        f"{_other_recipes()}")


# --------------------------------------------------------------------------- recognising the form


def _constant(prog: Any, node: expr.Node) -> torch.Tensor | None:
    """The value of an expression of numbers and constants only; None if it reads anything else."""
    for ref in expr.references(node):
        if not (ref.name.startswith("#") or (ref.head is None and ref.name in expr.CONSTANTS)):
            return None

    def lookup(ref: expr.Ref) -> expr.Value:
        if ref.name.startswith("#"):
            value, rank = prog.constants[ref.name]
            return value, rank
        return torch.tensor(expr.CONSTANTS[ref.name], dtype=torch.get_default_dtype()), 0

    try:
        value, _ = expr.evaluate(node, lookup)
    except (expr.EvalError, RuntimeError, TypeError, ValueError):
        return None
    return torch.as_tensor(value, dtype=torch.float64)


def _single(prog: Any, site: Any, key: str) -> float:
    """A prior's parameter that must be one number (or a tensor of equal numbers)."""
    value = _constant(prog, site.args[key])
    if value is None:
        raise refuse(f"{site.where}.{key} is not a constant; EM's M-steps need fixed prior parameters")
    flat = value.reshape(-1)
    if flat.numel() == 0 or not bool((flat == flat[0]).all()):
        raise refuse(f"{site.where}.{key} differs between entries; EM's M-steps take one value for every entry")
    return float(flat[0])


def _indexed(node: expr.Node, assignment: str, k: int) -> str | None:
    """NAME where ``node`` is ``onehot(assignment, k) @ NAME``, else None."""
    if not (isinstance(node, expr.Binary) and node.op == "@" and isinstance(node.right, expr.Ref)
            and node.right.head is None):
        return None
    left = node.left
    if not (isinstance(left, expr.Call) and left.fn == "onehot" and len(left.args) == 2):
        return None
    lab, size = left.args
    if not (isinstance(lab, expr.Ref) and lab.name == assignment and lab.head is None):
        return None
    if not (isinstance(size, expr.Num) and int(size.value) == k):
        return None
    return node.right.name


def mixture_form(prog: Any) -> MixtureForm:
    """The mixture a compiled program is, or :class:`NotConjugate` saying why it is not one."""
    if prog.y_site is not None:
        raise refuse(f"{prog.y_site.where} observes labels; EM here fits the unlabelled mixture")
    local_latents = [s for s in prog.local_model if s.latent]
    if len(local_latents) != 1:
        names = ", ".join(s.name for s in local_latents) or "none"
        raise refuse(f"its local latent sites are {names}; EM needs exactly one, the Categorical assignment")
    c = local_latents[0]
    if c.entry.name != "Categorical" or not c.enumerate:
        raise refuse(f"{c.where} is {c.entry.name}{'' if c.enumerate else ' without enumerate: parallel'}; the "
                     "assignment must be a Categorical summed out by enumeration")
    if prog.networks:
        raise refuse(f"it has networks ({', '.join(prog.networks)}); EM needs closed-form updates of every parameter")
    x = prog.x_site
    if x.entry.name not in ("Normal", "Bernoulli") or len(x.shape) != 1:
        raise refuse(f"{x.where} is {x.entry.name} of shape {list(x.shape)}; EM fits a Normal or Bernoulli emission of "
                     "vectors (shape [D])")
    if "probs" not in c.args or not isinstance(c.args["probs"], expr.Ref) or c.args["probs"].head is not None:
        raise refuse(f"{c.where} takes logits or an expression; write probs: WEIGHTS with WEIGHTS a Dirichlet site "
                     "or a simplex parameter")
    k = int(c.options["classes"])
    names = {"weights": c.args["probs"].name}
    if x.entry.name == "Bernoulli":
        return _bernoulli_form(prog, c, x, k, names)
    for key, role in (("loc", "locs"), ("scale", "scales")):
        name = _indexed(x.args[key], c.name, k)
        if name is None:
            raise refuse(f"{x.where}.{key} is {expr.to_text(x.args[key])}; EM needs onehot({c.name}, {k}) @ NAME")
        names[role] = name
    if len(set(names.values())) != 3:
        raise refuse("the weights, locations and scales must be three different sites or parameters")
    d = int(x.shape[0])
    blocks = {role: _block(prog, role, name, k, d) for role, name in names.items()}
    kinds = {b.kind for b in blocks.values()}
    if len(kinds) != 1:
        raise refuse("some of the weights, locations and scales have priors and some are parameters; declare all "
                     "three as global sites with priors (MAP-EM) or all three as parameters (maximum likelihood)")
    used = {c.name, x.name} | set(names.values())
    extra = [s.name for s in prog.model if s.name not in used and not s.deterministic]
    if extra:
        raise refuse(f"it has sites EM would not update ({', '.join(extra)})")
    extra = [s.name for s in prog.model if s.deterministic]
    if extra:
        raise refuse(f"it has deterministic sites ({', '.join(extra)})")
    spherical = tuple(_shape(prog, names["scales"])) == (k,)
    return MixtureForm(k, d, "spherical" if spherical else "diag", blocks, c.name, x.name)


def _bernoulli_form(prog: Any, c: Any, x: Any, k: int, names: dict[str, str]) -> MixtureForm:
    if "probs" not in x.args:
        raise refuse(f"{x.where} takes logits; EM needs probs: onehot({c.name}, {k}) @ NAME")
    name = _indexed(x.args["probs"], c.name, k)
    if name is None:
        raise refuse(f"{x.where}.probs is {expr.to_text(x.args['probs'])}; EM needs onehot({c.name}, {k}) @ NAME")
    names["probs"] = name
    if len(set(names.values())) != 2:
        raise refuse("the weights and the emission probabilities must be two different sites or parameters")
    d = int(x.shape[0])
    blocks = {role: _block(prog, role, n, k, d) for role, n in names.items()}
    if len({b.kind for b in blocks.values()}) != 1:
        raise refuse("the weights have a prior and the emission probabilities not, or the other way round; declare "
                     "both as global sites with priors (MAP-EM) or both as parameters (maximum likelihood)")
    used = {c.name, x.name} | set(names.values())
    extra = [s.name for s in prog.model if s.name not in used]
    if extra:
        raise refuse(f"it has sites EM would not update ({', '.join(extra)})")
    return MixtureForm(k, d, None, blocks, c.name, x.name, emission="bernoulli")


def _shape(prog: Any, name: str) -> tuple[int, ...]:
    if name in prog.params:
        return tuple(prog.params[name][0].shape)
    return tuple(prog.model_by_name[name].shape)


_WANT = {"weights": ("Dirichlet", "simplex"), "locs": ("Normal", "real"), "scales": ("LogNormal", "positive"),
         "probs": ("Beta", "unit_interval")}


def _block(prog: Any, role: str, name: str, k: int, d: int) -> Block:
    dist_name, constraint = _WANT[role]
    shapes = {"weights": [(k,)], "locs": [(k, d)], "scales": [(k, d), (k,)], "probs": [(k, d)]}[role]
    shape = _shape(prog, name) if (name in prog.params or name in prog.model_by_name) else None
    if shape is None:
        raise refuse(f"{name!r} is neither a parameter nor a site")
    if shape not in shapes:
        raise refuse(f"the {role} {name!r} have shape {list(shape)}; EM needs " + " or ".join(str(list(s)) for s in shapes))
    if name in prog.params:
        got = prog.params[name][1]
        from ppgen.program.compile import CONSTRAINTS

        if got is not CONSTRAINTS[constraint]:
            raise refuse(f"the parameter {name!r} is not constrained {constraint}")
        return Block(role, name, "param")
    site = prog.model_by_name[name]
    if not site.is_global or not site.latent:
        raise refuse(f"{site.where} must be a global latent site (or a parameter)")
    if site.entry.name != dist_name:
        raise refuse(f"{site.where} has a {site.entry.name} prior; EM's closed-form M-step for the {role} needs "
                     f"{dist_name}")
    if prog.auto_globals.get(name) != "delta":
        raise refuse(f"the guide of {site.where} is not a point mass; EM finds the posterior mode, one point: set "
                     "guide_globals: delta")
    if role == "weights":
        prior: tuple[float, ...] = (_single(prog, site, "concentration"),)
    elif role == "probs":
        prior = (_single(prog, site, "concentration1"), _single(prog, site, "concentration0"))
    else:
        prior = (_single(prog, site, "loc"), _single(prog, site, "scale"))
    return Block(role, name, "site", prior)
