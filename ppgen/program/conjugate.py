"""EM for programs whose sites are conjugate in the way EM needs: finite mixtures of Gaussian or
Bernoulli vectors.

The ``em`` routine (:mod:`ppgen.inference.em`) fits a program in closed form when, and only when, its
structure is a finite mixture of Gaussians with the priors EM's M-steps maximise exactly::

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

The recognition happens when the routine starts (:meth:`ConjugateEM.em_check`); any other program is
refused with the reason and the recipes that do fit it. The Gaussian E and M steps are not written
again here: the program is recognised as the model of the ``gmm`` family with ``covariance: diag`` or
``spherical`` and the matching priors, whose statistics and updates
(:meth:`ppgen.models.bayesian.gmm.GMM.em_statistics`, :meth:`~ppgen.models.bayesian.gmm.GMM.em_maximize`, built on
:mod:`ppgen.inference.em`) are then applied to the program's parameters; the Bernoulli mixture's
M-steps are :func:`ppgen.models.bayesian.mstep.dirichlet_mode` (:class:`BernoulliMixtureEM`). The result is
written into the program's parameters (the point-mass guide's values, or the
parameters themselves), so that every service of the program (its own enumerated likelihood,
sampling, diagnostics) uses it.

References:
    Dempster, Laird & Rubin (1977), Maximum likelihood from incomplete data via the EM algorithm, JRSS B 39.
    McLachlan & Peel (2000), Finite Mixture Models, Wiley.
    Bishop (2006), Pattern Recognition and Machine Learning, Springer, section 9.3.3 (Bernoulli mixtures).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping

import torch
from torch.distributions import biject_to

from ppgen.data.core import DataInfo
from ppgen.program import expr
from ppgen.spec import SpecError

Theta = dict[str, torch.Tensor]

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
    """The zoo recipes that fit every program (the svi routine's), or the routine's name without a zoo."""
    from ppgen import zoo
    from ppgen.spec_yaml import read_yaml

    folder = zoo.folder("inference")
    fits = []
    for name in zoo.names("inference"):
        try:
            if read_yaml(folder / f"{name}.yaml").get("routine") == "svi":
                fits.append(f"inference/{name}.yaml")
        except SpecError:
            continue
    return ", ".join(fits) if fits else "routine: svi"


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
        from ppgen.program.compile import _CONSTRAINTS

        if got is not _CONSTRAINTS[constraint]:
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


# --------------------------------------------------------------------------- Bernoulli emissions


class BernoulliMixtureEM:
    """E and M steps of a mixture of independent Bernoulli vectors (Bishop 2006, section 9.3.3) with a
    Dirichlet(c) prior on the weights and Beta(a, b) on every probability, over a leading batch of S
    parameter values. The M-steps are the Dirichlet modes of :func:`ppgen.models.bayesian.mstep.dirichlet_mode`
    (a Beta is the Dirichlet of two categories): w_k = (n_k + c - 1) / (N + K (c - 1)) and
    p_kd = (s_kd + a - 1) / (n_k + a + b - 2), with n_k = sum_n r_nk and s_kd = sum_n r_nk x_nd."""

    #: No site supports to check starts against (see :attr:`ConjugateEM.sites`).
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
                                "or more, or fit the program with inference/svi.yaml")

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


# --------------------------------------------------------------------------- the family's EM


class _Point:
    """``model.point`` as the em routine sets it: writes a mixture's values into the program."""

    def __init__(self, family: Any) -> None:
        self.family = family

    @torch.no_grad()
    def set(self, values: Mapping[str, torch.Tensor]) -> None:
        fam = self.family
        form = fam._em_form()
        params = fam._modules["params"]
        for role, value in values.items():
            block = form.blocks[role]
            if block.kind == "param":
                key, t = block.name, params.transforms[block.name]
            else:
                key = f"auto__{block.name}__value"
                site = fam.program.guide_by_name[block.name]
                t = biject_to(site.options["support"])
            target = getattr(params, key)
            target.copy_(t.inv(value.to(torch.float64)).to(target))

    def values(self) -> Theta:
        """The program's current values of the three blocks."""
        fam = self.family
        form = fam._em_form()
        params = fam._modules["params"]
        out = {}
        for role, block in form.blocks.items():
            if block.kind == "param":
                out[role] = params.value(block.name).detach()
            else:
                site = fam.program.guide_by_name[block.name]
                out[role] = biject_to(site.options["support"])(getattr(params, f"auto__{block.name}__value")).detach()
        return out


class ConjugateEM:
    """The closed-form EM of the ``em`` routine, for a program that :func:`mixture_form` recognises."""

    def _em_form(self) -> MixtureForm:
        form = self.__dict__.get("_em_mixture")
        if form is None:
            form = mixture_form(self.program)
            self.__dict__["_em_mixture"] = form
        return form

    def _em_gmm(self) -> Any:
        """The E and M steps: the gmm family's model of the same mixture and priors for Normal emissions,
        :class:`BernoulliMixtureEM` for Bernoulli ones (kept out of the module tree: they hold nothing of
        the program's state)."""
        gmm = self.__dict__.get("_em_gmm_model")
        if gmm is None and self._em_form().emission == "bernoulli":
            gmm = BernoulliMixtureEM(self._em_form())
            self.__dict__["_em_gmm_model"] = gmm
        if gmm is None:
            from ppgen.models.bayesian.base import NormalPrior, ScalePrior
            from ppgen.models.bayesian.gmm import GMM, GMMPrior, GMMSpec

            form = self._em_form()
            prior = GMMPrior()
            if not form.flat:
                (conc,) = form.blocks["weights"].prior
                m, s = form.blocks["locs"].prior
                log_median, tau = form.blocks["scales"].prior
                if s <= 0 or tau <= 0 or conc <= 0:
                    raise refuse("a prior's scale or concentration is not positive")
                prior = GMMPrior(weights_concentration=conc, loc=NormalPrior(mean=m, std=s),
                                 scale=ScalePrior(median=math.exp(log_median), log_std=tau))
            # the mixture of the program's x site: vectors of D values, whatever the data's own layout
            spec = GMMSpec(data={"name": "toy2d"}, components=form.components, covariance=form.covariance, prior=prior)
            info = DataInfo((form.dim,), "continuous")
            with torch.random.fork_rng(devices=[]):
                gmm = GMM(spec, info)
            self.__dict__["_em_gmm_model"] = gmm
        return gmm

    @property
    def point(self) -> _Point:
        return _Point(self)

    @property
    def sites(self) -> tuple[Any, ...]:
        """The mixture's global sites as the gmm family declares them (their supports check EM's starts);
        none for a Bernoulli mixture, whose starts EM builds inside the supports itself."""
        return tuple(self._em_gmm().sites)

    @property
    def initialized(self) -> torch.Tensor:
        """A program keeps no start flag: EM starts from its own starts, and a resumed EM fit continues
        from the routine's saved state, not from the program's parameters."""
        return torch.zeros((), dtype=torch.bool)

    def em_check(self, flat: bool) -> None:
        """Recognise the mixture (or refuse, saying why) and check that its priors have a mode."""
        self._em_gmm().em_check(flat or self._em_form().flat)

    def _flat(self, flat: bool) -> bool:
        return flat or self._em_form().flat

    def em_chunk(self, s: int) -> int:
        return self._em_gmm().em_chunk(s)

    def em_statistics(self, x: torch.Tensor, theta: Mapping[str, torch.Tensor], *,
                      method: str = "auto") -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return self._em_gmm().em_statistics(x.reshape(x.shape[0], -1), theta, method=method)

    def em_maximize(self, stats: dict[str, torch.Tensor], theta: Mapping[str, torch.Tensor], *,
                    flat: bool) -> tuple[Theta, torch.Tensor]:
        return self._em_gmm().em_maximize(stats, theta, flat=self._flat(flat))

    def init_values(self, x: torch.Tensor, generator: torch.Generator) -> Theta:
        return self._em_gmm().init_values(x.reshape(x.shape[0], -1), generator)

    def log_prior(self, theta: Mapping[str, torch.Tensor], validate: bool = True) -> torch.Tensor:
        """log p(theta_s) under the program's declared priors; 0 where it declares none."""
        if self._em_form().flat:
            return torch.zeros(next(iter(theta.values())).shape[0], dtype=next(iter(theta.values())).dtype)
        return self._em_gmm().log_prior(dict(theta), validate)
