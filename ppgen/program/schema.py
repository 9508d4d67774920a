"""The spec of the model language (``family: program``) and its structural checks.

A program declares networks, learnable parameters, the model's sites in order and a guide::

    family: program
    data: {name: mnist, binarize: dynamic}
    networks:
      decoder: {kind: mlp, inputs: [z], hidden: [400]}
      encoder: {kind: mlp, inputs: [x], hidden: [400]}
    model:
      z: {dist: Normal, loc: 0.0, scale: 1.0, shape: [50]}
      x: {dist: Bernoulli, logits: decoder, observed: x}
    guide:
      z: {dist: Normal, loc: encoder.loc, scale: softplus(encoder.scale) + 1e-4}

A site's keys are ``dist``, ``shape`` (its event shape), ``observed`` (``x`` or ``y``: the data field it is
bound to), ``global`` (outside the data plate), ``enumerate: parallel`` (a discrete latent summed out),
the distribution's parameters and its options (``classes``, ``levels``, ``scale``, ``components``,
``component``). A parameter is a number, a list of numbers, an expression (text), or a learnable
parameter written inline as ``{param: 1.0, constraint: positive, shape: []}``.

:func:`structure` checks everything that does not need the data: names, distributions and their
parameters, expressions, the order of sites, networks' inputs, the guide's coverage of the latent sites.
Every error is a :class:`~ppgen.spec.SpecError` naming the site (``model.z.loc: ...``). The sections are
declared in :mod:`ppgen.program.decls`; each site is read by :mod:`ppgen.program.parse` and the sites are
checked against each other by :mod:`ppgen.program.checks`.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from ppgen.program.checks import check_guide, check_model, check_networks
from ppgen.program.decls import AutoNetworkDecl, NetworkDecl, ParamDecl, SiteDecl
from ppgen.program.parse import SiteInfo, Structure, check_name, parse_site
from ppgen.spec import ModelSpec, SpecError


class ProgramSpec(ModelSpec):
    """A model written in the model language (see :mod:`ppgen.program`)."""

    family: Literal["program"] = "program"
    networks: dict[str, NetworkDecl] = Field(default_factory=dict)
    params: dict[str, ParamDecl] = Field(default_factory=dict)
    model: dict[str, SiteDecl]
    guide: Literal["auto", "delta"] | dict[str, SiteDecl] = "auto"
    guide_globals: Literal["normal", "delta"] = Field(
        "normal", description="guide of global latents not in the guide: normal (AutoNormal) or delta (AutoDelta, MAP)")
    auto_network: AutoNetworkDecl = Field(default_factory=AutoNetworkDecl)
    num_data: int | None = Field(None, ge=1, description="N that scales global sites (B/N); default: the training-set size")
    autoguide: str | None = Field(None, description="Pyro's autoguide of the global latents: AutoNormal (guide_globals: "
                                  "normal) or AutoDelta (delta); see ppgen.program.autoguide")

    @model_validator(mode="before")
    @classmethod
    def _autoguide(cls, data: Any) -> Any:
        from ppgen.program.autoguide import program_guide_globals

        return program_guide_globals(data)

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> "ProgramSpec":  # type: ignore[override]
        spec = super().model_validate(obj, **kwargs)
        structure(spec)
        return spec


def structure(spec: ProgramSpec) -> Structure:
    """Check a program's structure and return it parsed; a :class:`SpecError` naming the site."""
    consts: dict[str, tuple[torch.Tensor, int]] = {}
    params: dict[str, ParamDecl] = dict(spec.params)
    if not spec.model:
        raise SpecError("model: a program needs at least one site")
    names: dict[str, str] = {}
    for group, keys in (("networks", spec.networks), ("params", spec.params), ("model", spec.model)):
        for key in keys:
            check_name(key, f"{group}.{key}")
            if key in names:
                raise SpecError(f"{group}.{key}: the name {key!r} is already used in {names[key]}")
            names[key] = group
    model: dict[str, SiteInfo] = {}
    for name, decl in spec.model.items():
        model[name] = parse_site(name, "model", decl, consts, params)
    guide: dict[str, SiteInfo] | None = None
    if isinstance(spec.guide, dict):
        guide = {}
        for name, decl in spec.guide.items():
            where = f"guide.{name}"
            check_name(name, where)
            if name not in model:
                raise SpecError(f"{where}: the model has no site {name!r}; a guide's sites are latent sites of the model")
            guide[name] = parse_site(name, "guide", decl, consts, params)
    kind = "declared" if guide is not None else spec.guide
    st = Structure(model, guide, kind, dict(spec.networks), params, consts)
    check_model(st)
    check_guide(st, spec)
    check_networks(st)
    return st
