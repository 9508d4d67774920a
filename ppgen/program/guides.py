"""The automatic guides, written out in the model language itself: for the local continuous latents
(``guide: auto`` / ``guide: delta``) an amortized Normal or Delta read from x by one encoder, and for each
global latent (``guide_globals``) a Normal or Delta with free parameters: what Pyro's ``AutoNormal`` and
``AutoDelta`` are, so that the fused loss and the Pyro model see one and the same guide.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.distributions import biject_to, constraints

from ppgen.program import expr
from ppgen.program.compiled import Site
from ppgen.program.decls import NetworkDecl
from ppgen.program.dists import TABLE, Entry
from ppgen.program.schema import ProgramSpec

#: The support of a latent of each distribution (the space its guide must live in).
_SUPPORT = {
    "Normal": constraints.real, "Laplace": constraints.real, "Cauchy": constraints.real, "StudentT": constraints.real,
    "LogNormal": constraints.positive, "HalfNormal": constraints.positive, "HalfCauchy": constraints.positive,
    "Exponential": constraints.positive, "Gamma": constraints.positive, "Beta": constraints.unit_interval,
    "ContinuousBernoulli": constraints.unit_interval, "Dirichlet": constraints.simplex,
    "ConstrainedNormal": None, "Delta": None,
}


def _support(s: Site) -> Any:
    if s.entry.name == "MixtureSameFamily":
        return _SUPPORT.get(s.options["component_entry"].name, constraints.real)
    return _SUPPORT.get(s.entry.name, constraints.real)


def auto_local_guide(spec: ProgramSpec, model: list[Site], sites: list[Site], kind: str,
                networks: dict[str, NetworkDecl]) -> list[Site]:
    """An amortized guide for the local continuous latents: one encoder reads x and gives, for each
    latent, a location and a scale (``normal``: q(z|x) = Normal(loc, softplus(scale) + 1e-4), pushed
    into the latent's support) or a value (``delta``: a deterministic code)."""
    x = next(s for s in model if s.observed == "x")
    a = spec.auto_network
    net = "auto__encoder"
    networks[net] = NetworkDecl(kind=a.kind, inputs=[x.name], hidden=list(a.hidden), activation=a.activation)
    out = []
    for s in sites:
        support = _support(s)
        if kind == "delta":
            args = {"v": expr.Ref(net, f"{s.name}__value")}
            g = Site(s.name, "guide", _constrained_delta(), args, {"support": support}, s.shape, False, None, False)
        else:
            loc = expr.Ref(net, f"{s.name}__loc")
            scale = expr.Binary("+", expr.Call("softplus", (expr.Ref(net, f"{s.name}__scale"),)), expr.Num(1e-4))
            if support is constraints.real:
                g = Site(s.name, "guide", TABLE["Normal"], {"loc": loc, "scale": scale}, {}, s.shape, False, None, False,
                         fast="normal")
            else:
                g = Site(s.name, "guide", TABLE["ConstrainedNormal"], {"loc": loc, "scale": scale},
                         {"support": support}, s.shape, False, None, False)
        out.append(g)
    # head shapes: the unconstrained shape of each latent
    for g in out:
        u = tuple(biject_to(g.options.get("support", constraints.real)).inverse_shape(torch.Size(g.shape)))
        heads = networks[net].outputs or {}
        for key in g.args:
            for ref in expr.references(g.args[key]):
                heads[ref.head] = list(u)
        networks[net] = networks[net].model_copy(update={"outputs": heads})
    return out


def auto_global_guide(s: Site, kind: str, params: dict) -> Site:
    """A guide for a global latent with free parameters: Normal (in the unconstrained space, pushed into
    the support: Pyro's AutoNormal) or Delta (a point estimate: AutoDelta). The locations start at the
    prior's median (set by the family once its modules exist)."""
    support = _support(s)
    u = tuple(biject_to(support).inverse_shape(torch.Size(s.shape)))
    if kind == "delta":
        params[f"auto__{s.name}__value"] = (torch.zeros(u), constraints.real, 0.0)
        return Site(s.name, "guide", _constrained_delta(), {"v": expr.Ref(f"auto__{s.name}__value")},
                    {"support": support}, s.shape, True, None, False)
    params[f"auto__{s.name}__loc"] = (torch.zeros(u), constraints.real, 0.0)
    params[f"auto__{s.name}__scale"] = (torch.full(u, 0.1), constraints.positive, 0.0)
    args = {"loc": expr.Ref(f"auto__{s.name}__loc"), "scale": expr.Ref(f"auto__{s.name}__scale")}
    if support is constraints.real:
        return Site(s.name, "guide", TABLE["Normal"], args, {}, s.shape, True, None, False, fast="normal")
    return Site(s.name, "guide", TABLE["ConstrainedNormal"], args, {"support": support}, s.shape, True, None, False)


def _constrained_delta() -> Entry:
    return TABLE["ConstrainedDelta"]
