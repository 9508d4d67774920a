"""Normalizing flows as distributions of the model language: a base distribution pushed through a declared
stack of Pyro transforms (``pyro.distributions.transforms``).

A site's distribution may be ``TransformedDistribution``::

    x:
      dist: TransformedDistribution
      base: {dist: Normal, loc: 0.0, scale: 1.0}
      transforms:
        - {kind: affine_coupling, hidden: [64, 64]}
        - {kind: reverse}
        - {kind: spline_coupling, hidden: [64], bins: 8}
      observed: x

The value is y = T_n(... T_1(u)) with u from the base, and log p(y) = log p_base(u) - sum_i log|det dT_i/du|
(the change of variables). As a likelihood (``observed: x``) this is an exact log p(x); as a model's
latent it is a learned prior; in the guide it is a richer posterior, e.g. the inverse autoregressive flow
of Kingma et al. (2016) whose conditioners also read a ``context`` (a network head of x) of size
``context_dim``. The site is a vector (``shape: [D]``; an image is viewed as ``shape: [H*W]``).

The kinds and their keys (``hidden`` and ``activation`` declare the conditioner network, as the language's
other networks do; its default width is Pyro's helpers', ``[10 * D]``):

- ``affine_coupling`` (Dinh et al. 2017, RealNVP): the last D - ``split`` coordinates move by an affine map
  whose shift and log-scale a network computes from the first ``split`` (default D // 2);
- ``spline_coupling`` (Durkan et al. 2019): the same with monotone rational-quadratic splines of ``bins``
  segments on [-``bound``, ``bound``];
- ``affine_autoregressive``: y_i = mu_i(u_<i) + sigma_i(u_<i) u_i, a MADE network (Germain et al. 2015): one
  pass to draw, D passes to score a value it did not draw; the inverse autoregressive flow (IAF,
  Kingma et al. 2016), for guides;
- ``masked_autoregressive``: its inverse, u_i = (y_i - mu_i(y_<i)) / sigma_i(y_<i): one pass to score, D to
  draw; the masked autoregressive flow (MAF, Papamakarios et al. 2017), for densities of data;
- ``spline_autoregressive``: autoregressive rational-quadratic splines (``bins``, ``bound``);
- ``permute`` (``permutation``, a list of 0..D-1) and ``reverse``: reorder the coordinates, so that the next
  coupling or autoregressive layer conditions on others;
- ``householder`` (Tomczak & Welling 2016): ``count`` Householder reflections, volume-preserving;
- ``planar``, ``radial`` (Rezende & Mohamed 2015): have no inverse, so they score only values they drew
  themselves: allowed in the guide only;
- ``sigmoid`` (Dinh et al. 2017, sec. 4.1): y = (sigmoid(u) - alpha) / (1 - 2 alpha), onto an interval around
  [0, 1]: the last layer of a density of pixel intensities (the observed site only).

With a ``context`` every layer with a network reads it too (Pyro's conditional transforms); Pyro has no
conditional spline coupling, so that kind refuses a context. BatchNorm is not offered: in training Pyro's
uses the batch's statistics, so an example's density would depend on the other examples of its batch.

Everything is declared: the kinds are a fixed table, the keys are checked, nothing runs code.

References:
    Rezende & Mohamed (2015), Variational Inference with Normalizing Flows, ICML.
    Dinh, Sohl-Dickstein & Bengio (2017), Density estimation using Real NVP, ICLR.
    Kingma et al. (2016), Improved Variational Inference with Inverse Autoregressive Flow, NeurIPS.
    Papamakarios, Pavlakou & Murray (2017), Masked Autoregressive Flow for Density Estimation, NeurIPS.
    Durkan et al. (2019), Neural Spline Flows, NeurIPS.
    Tomczak & Welling (2016), Improving Variational Auto-Encoders using Householder Flow, arXiv:1611.09630.
    Germain et al. (2015), MADE: Masked Autoencoder for Distribution Estimation, ICML.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Literal

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from pydantic import Field
from pyro.nn import AutoRegressiveNN, ConditionalAutoRegressiveNN, ConditionalDenseNN, DenseNN
from torch import nn

from ppgen.nets.blocks import Activation, activation
from ppgen.spec import SpecError, Strict

FLOW = "TransformedDistribution"

Kind = Literal["affine_coupling", "spline_coupling", "affine_autoregressive", "masked_autoregressive",
               "spline_autoregressive", "permute", "reverse", "householder", "planar", "radial", "sigmoid"]

#: the keys each kind takes besides ``kind``
KEYS: dict[str, set[str]] = {
    "affine_coupling": {"hidden", "activation", "split"},
    "spline_coupling": {"hidden", "activation", "split", "bins", "bound"},
    "affine_autoregressive": {"hidden", "activation"},
    "masked_autoregressive": {"hidden", "activation"},
    "spline_autoregressive": {"hidden", "activation", "bins", "bound"},
    "permute": {"permutation"},
    "reverse": set(),
    "householder": {"count", "hidden", "activation"},
    "planar": {"hidden", "activation"},
    "radial": {"hidden", "activation"},
    "sigmoid": {"alpha"},
}
#: kinds with a conditioner network (the ones that read a context)
NETWORKED = {"affine_coupling", "spline_coupling", "affine_autoregressive", "masked_autoregressive",
             "spline_autoregressive", "householder", "planar", "radial"}
#: kinds without an inverse: they score only values they drew (cached), so only in the guide
NOT_INVERTIBLE = {"planar", "radial"}
#: the distributions a flow's base may be: densities on the whole real line
BASES = ("Normal", "Laplace", "StudentT", "Cauchy")


class TransformDecl(Strict):
    """One layer of a flow: its kind and the keys that kind takes (see :mod:`ppgen.program.flows`)."""

    kind: Kind
    hidden: list[int] | None = Field(None, description="conditioner network's hidden sizes (default [10 * D])")
    activation: Activation = "relu"
    split: int | None = Field(None, description="coupling: coordinates that condition the others (default D // 2)")
    bins: int = Field(8, ge=2, le=256, description="spline segments")
    bound: float = Field(3.0, gt=0, description="splines act on [-bound, bound]; identity outside")
    permutation: list[int] | None = None
    count: int = Field(1, ge=1, le=64, description="householder reflections")
    alpha: float = Field(0.05, ge=0, lt=0.5, description="sigmoid: the interval's margin")


# --------------------------------------------------------------------------- structure (schema time)


def parse_key(name: str, part: str, at: str, key: str, value: Any, options: dict[str, Any], consts: dict,
              params: dict, site: Callable[[Any], Any]) -> None:
    """One of a flow site's own keys: ``base``, ``transforms`` or ``context_dim``. ``site`` reads a
    declaration (a dict) as a site of the program (the schema's own reader, for the base)."""
    if key == "base":
        options["base"] = _base(name, part, at, value, site)
    elif key == "transforms":
        options["transforms"] = _transforms(at, value)
    elif key == "context_dim":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SpecError(f"{at}: must be a positive whole number (the size of the context), got {value!r}")
        options["context_dim"] = int(value)
    else:  # pragma: no cover - the entry lists exactly these options
        raise SpecError(f"{at}: unknown option")


def _base(name: str, part: str, at: str, value: Any, site: Callable[[Any], Any]) -> Any:
    if not isinstance(value, dict):
        raise SpecError(f"{at}: expected a distribution, e.g. {{dist: Normal, loc: 0.0, scale: 1.0}}, got {value!r}")
    bad = sorted(set(value) & {"shape", "observed", "global", "enumerate", "base", "transforms", "dequantize"})
    if bad:
        raise SpecError(f"{at}.{bad[0]}: a base takes its distribution and parameters only (the shape is the site's)")
    if "dist" not in value:
        raise SpecError(f"{at}: needs dist (one of {', '.join(BASES)})")
    if value["dist"] not in BASES:
        raise SpecError(f"{at}.dist: {value['dist']!r} cannot be a flow's base; use a density on the real line: "
                        f"{', '.join(BASES)}")
    try:
        return site(value)
    except SpecError as exc:  # name the base's key, not the site's (model.x.base.loc)
        msg, where = str(exc), f"{part}.{name}"
        if msg.startswith(where + ".") or msg.startswith(where + ":"):
            msg = f"{where}.base{msg[len(where):]}"
        raise SpecError(msg) from None


def _transforms(at: str, value: Any) -> tuple[TransformDecl, ...]:
    if not isinstance(value, list) or not value:
        raise SpecError(f"{at}: expected a non-empty list of layers, e.g. [{{kind: affine_coupling}}, {{kind: reverse}}], "
                        f"got {value!r}")
    out = []
    for i, item in enumerate(value):
        where = f"{at}[{i}]"
        if not isinstance(item, dict):
            raise SpecError(f"{where}: expected a layer {{kind: ..., ...}}, got {item!r}")
        kind = item.get("kind")
        if kind == "batch_norm" or kind == "batchnorm":
            raise SpecError(f"{where}.kind: batch_norm is not offered: in training Pyro's BatchNorm uses the batch's "
                            "statistics, so an example's density would depend on the other examples of its batch")
        if kind not in KEYS:
            raise SpecError(f"{where}.kind: unknown transform {kind!r}; accepted: {', '.join(KEYS)}")
        extra = sorted(set(item) - {"kind"} - KEYS[kind])
        if extra:
            takes = ", ".join(sorted(KEYS[kind])) or "no other key"
            raise SpecError(f"{where}.{extra[0]}: {kind} takes no key {extra[0]!r}; it takes {takes}")
        try:
            decl = TransformDecl.model_validate(item)
        except Exception as exc:
            raise SpecError(f"{where}: {exc}") from None
        if decl.hidden is not None and (not decl.hidden or any(h < 1 for h in decl.hidden)):
            raise SpecError(f"{where}.hidden: sizes must be at least 1 and the list non-empty, got {decl.hidden}")
        out.append(decl)
    return tuple(out)


def finish(where: str, decl: Any, options: dict[str, Any], args: dict[str, Any], part: str) -> None:
    """After a flow site's keys are read: its base's parameters become the site's (``base.loc``), and what
    can be checked without the data is."""
    if "base" not in options:
        raise SpecError(f"{where}: a TransformedDistribution needs a base, e.g. base: {{dist: Normal, loc: 0.0, scale: 1.0}}")
    if "transforms" not in options:
        raise SpecError(f"{where}: a TransformedDistribution needs transforms, e.g. transforms: [{{kind: affine_coupling}}]")
    base = options.pop("base")
    for k, v in base.args.items():
        args[f"base.{k}"] = v
    options["base_entry"] = base.entry
    options["base_options"] = dict(base.options)
    has_context = "context" in args
    if has_context and "context_dim" not in options:
        raise SpecError(f"{where}.context_dim: a context needs its size, e.g. context_dim: 32 (the conditioner "
                        "networks read that many values)")
    if "context_dim" in options and not has_context:
        raise SpecError(f"{where}.context_dim: given without a context; add context: EXPR or drop context_dim")
    options.setdefault("context_dim", None)
    for i, t in enumerate(options["transforms"]):
        at = f"{where}.transforms[{i}]"
        if has_context and t.kind == "spline_coupling":
            raise SpecError(f"{at}.kind: spline_coupling cannot read a context (Pyro has no conditional spline "
                            "coupling); use affine_coupling or spline_autoregressive")
        if t.kind in NOT_INVERTIBLE and part != "guide":
            raise SpecError(f"{at}.kind: {t.kind} has no inverse, so it can score only values it drew itself: use it "
                            "in the guide, or use an invertible kind here (affine_coupling, masked_autoregressive, ...)")
        if t.kind == "sigmoid" and (decl.observed != "x" or i != len(options["transforms"]) - 1):
            raise SpecError(f"{at}.kind: sigmoid maps onto an interval around [0, 1] for data there: it is the last "
                            "layer of the observed site x only")
    if part == "model" and decl.shape is None and decl.observed is None:
        raise SpecError(f"{where}.shape: a flow's site needs its shape, e.g. shape: [2]")


# --------------------------------------------------------------------------- compiled (shapes known)


def check_site(site: Any) -> None:
    """The checks that need the site's shape: a vector of D values; each layer fits D."""
    where = site.where
    if len(site.shape) != 1:
        raise SpecError(f"{where}.shape: a flow acts on a vector, got shape {list(site.shape)}; view an image as one "
                        f"vector (shape: [{math.prod(site.shape)}])")
    d = site.shape[0]
    for i, t in enumerate(site.options["transforms"]):
        at = f"{where}.transforms[{i}]"
        if t.kind in ("affine_coupling", "spline_coupling"):
            if d < 2:
                raise SpecError(f"{at}: a coupling layer splits the site's {d} coordinate(s) into two parts; it needs "
                                "at least 2")
            split = d // 2 if t.split is None else t.split
            if not 1 <= split <= d - 1:
                raise SpecError(f"{at}.split: {t.split}, but a split of {d} coordinates is 1..{d - 1}")
        if t.kind in ("affine_autoregressive", "masked_autoregressive", "spline_autoregressive") and d < 2:
            raise SpecError(f"{at}: an autoregressive layer needs at least 2 coordinates, the site has {d}")
        if t.kind == "permute" and t.permutation is not None and sorted(t.permutation) != list(range(d)):
            raise SpecError(f"{at}.permutation: {t.permutation} is not a permutation of 0..{d - 1}")


def key(site: Any) -> str:
    """The name of a flow site's layers among the program's modules."""
    return f"flow__{site.part}__{site.name}"


def is_flow(site: Any) -> bool:
    return site.entry.name == FLOW


def build_stack(site: Any) -> "FlowStack":
    return FlowStack(site.options["transforms"], site.shape[0], site.options.get("context_dim"))


class FlowStack(nn.Module):
    """A flow site's layers: their networks and parameters as modules; :meth:`transforms` gives the Pyro
    transforms of one pass (conditioned on a context where the site has one)."""

    def __init__(self, decls: tuple[TransformDecl, ...], dim: int, context_dim: int | None) -> None:
        super().__init__()
        self.decls = decls
        self.dim = dim
        self.context_dim = context_dim
        self.layers = nn.ModuleList()
        self.slot: list[int | None] = []
        for i, t in enumerate(decls):
            layer = self._layer(t, dim, context_dim)
            if layer is None:
                self.slot.append(None)
            else:
                self.slot.append(len(self.layers))
                self.layers.append(layer)
            if t.kind in ("permute", "reverse"):
                perm = torch.tensor(t.permutation if t.permutation is not None else list(range(dim - 1, -1, -1)))
                self.register_buffer(f"perm{i}", perm)

    @staticmethod
    def _layer(t: TransformDecl, d: int, c: int | None) -> nn.Module | None:
        hidden = list(t.hidden) if t.hidden is not None else [10 * d]
        act = activation(t.activation)
        order = torch.arange(d)  # the coordinates' order is declared (permute/reverse), never drawn at random
        if t.kind in ("affine_coupling", "spline_coupling"):
            s = d // 2 if t.split is None else t.split
            rest = d - s
            if t.kind == "affine_coupling":
                dims = [rest, rest]
                if c is None:
                    return T.AffineCoupling(s, DenseNN(s, hidden, dims, nonlinearity=act))
                return T.ConditionalAffineCoupling(s, ConditionalDenseNN(s, c, hidden, dims, nonlinearity=act))
            k = t.bins
            dims = [rest * k, rest * k, rest * (k - 1), rest * k]
            return T.SplineCoupling(d, s, DenseNN(s, hidden, dims, nonlinearity=act), count_bins=k, bound=t.bound)
        if t.kind in ("affine_autoregressive", "masked_autoregressive"):
            if c is None:
                return T.AffineAutoregressive(AutoRegressiveNN(d, hidden, permutation=order, nonlinearity=act))
            return T.ConditionalAffineAutoregressive(
                ConditionalAutoRegressiveNN(d, c, hidden, permutation=order, nonlinearity=act))
        if t.kind == "spline_autoregressive":
            k = t.bins
            dims = [k, k, k - 1, k]
            if c is None:
                return T.SplineAutoregressive(d, AutoRegressiveNN(d, hidden, dims, permutation=order, nonlinearity=act),
                                              count_bins=k, bound=t.bound)
            return T.ConditionalSplineAutoregressive(
                d, ConditionalAutoRegressiveNN(d, c, hidden, dims, permutation=order, nonlinearity=act),
                count_bins=k, bound=t.bound)
        if t.kind == "householder":
            if c is None:
                return T.Householder(d, count_transforms=t.count)
            return T.ConditionalHouseholder(d, DenseNN(c, hidden, [d] * t.count, nonlinearity=act), count_transforms=t.count)
        if t.kind == "planar":
            if c is None:
                return T.Planar(d)
            return T.ConditionalPlanar(DenseNN(c, hidden, [1, d, d], nonlinearity=act))
        if t.kind == "radial":
            if c is None:
                return T.Radial(d)
            return T.ConditionalRadial(DenseNN(c, hidden, [d, 1, 1], nonlinearity=act))
        return None  # permute, reverse, sigmoid: no parameters

    def transforms(self, context: torch.Tensor | None = None) -> list[Any]:
        out: list[Any] = []
        for i, (t, slot) in enumerate(zip(self.decls, self.slot)):
            if t.kind in ("permute", "reverse"):
                out.append(T.Permute(getattr(self, f"perm{i}")))
                continue
            if t.kind == "sigmoid":
                a = t.alpha
                out.append(T.SigmoidTransform())
                out.append(T.AffineTransform(-a / (1 - 2 * a), 1 / (1 - 2 * a)))
                continue
            layer = self.layers[slot]
            if context is not None:
                layer = layer.condition(context)  # a new transform, with an empty cache
            else:
                # A layer remembers its last (input, output) pair, to score a value it drew without inverting;
                # a pair from an earlier pass was computed with parameters since changed (and a graph since
                # freed), and the same data tensor scored again would find it: each pass starts empty.
                layer._cached_x_y = (None, None)
            out.append(layer.inv if t.kind == "masked_autoregressive" else layer)
        return out


def point(d: dist.Distribution) -> torch.Tensor:
    """A representative point of a flow: the base's mean (its mode, for the bases offered) pushed through
    every layer."""
    v = d.base_dist.mean
    for t in d.transforms:
        v = t(v)
    return v


def log_det(d: dist.TransformedDistribution, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """y = T(u) and log|det dT/du| of the whole stack at ``u`` (summed over the event), as the
    distribution computes it: log p_base(u) - log p(y)."""
    y = u
    total = torch.zeros(u.shape[:-1], dtype=u.dtype, device=u.device)
    for t in d.transforms:
        x, y = y, t(y)
        ladj = t.log_abs_det_jacobian(x, y)
        if t.codomain.event_dim == 0:
            ladj = ladj.sum(-1)
        total = total + ladj
    return y, total
