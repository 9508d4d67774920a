"""A compiled program as Pyro's model and guide: each site a ``pyro.sample`` statement, local sites in the
``data`` plate, discrete latents marked for parallel enumeration, missing labels pinned as
:mod:`ppgen.program.sites` describes.
"""

from __future__ import annotations

from typing import Any

import pyro
import torch
from pyro import poutine

from ppgen.program.compiled import Program, Site
from ppgen.program.sites import Env, Labels, ProgramError, label_factor, pin_labels, labels, site_args, site_dist


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
                pyro.factor(f"{m.name}__labels", label_factor(v, lab, m.entry.name == "OneHotCategorical"))
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
            d = pin_labels(d, lab)
        v = pyro.sample(g.name, d, infer={"enumerate": "parallel"})
    else:
        v = pyro.sample(g.name, d)
    env.values[g.name] = v
