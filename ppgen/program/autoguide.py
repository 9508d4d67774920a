"""Pyro's automatic guides, named in a spec: one table for programs, Python models and ``ppgen.fit``.

A spec names an autoguide with the key ``autoguide`` (``ppgen fit SPEC --set autoguide=AutoDelta`` on
the command line; ``ppgen.fit(model_fn, "AutoLowRankMultivariateNormal", data=...)`` from Python). It is
a key of the model spec rather than of the inference recipe because the guide's parameters are part of
the fitted model: the checkpoint holds them and ``ppgen.open_run``, ``ppgen evaluate`` and ``ppgen
diagnose`` rebuild the model, guide included, from the run's ``spec.yaml`` alone.

An autoguide covers the **global** latent sites (outside the data plate): it has one set of parameters
for each site, which is what a parameter shared by all examples needs and what an example of a
minibatch cannot have (a local latent would get parameters for the examples of one batch only). The
local latent sites keep the model's own guide: a program's declared or automatic amortized guide, a
Python class's ``guide``.

- For a **program** (``family: program``), ``AutoNormal`` and ``AutoDelta`` are compiled into the program
  itself, site by site, as Pyro defines them (a Normal in the unconstrained space pushed into the
  site's support; a point mass), so that the program keeps its fused objective: ``autoguide: AutoNormal``
  is ``guide_globals: normal`` and ``autoguide: AutoDelta`` is ``guide_globals: delta``. The joint
  autoguides (a multivariate Normal over all global sites together) are not compiled in the language;
  they are refused for programs with the message naming the alternatives.
- For a **Python model** (``family: python``, or callables given to ``ppgen.fit``), the autoguide is
  Pyro's own object, built on the model with its local latent sites hidden (``poutine.block``), and run
  before the class's guide, which covers the local latents; a model with local latents and no guide of
  its own is refused, as is a class's guide that samples a site the autoguide covers.

References:
    Kucukelbir, Tran, Ranganath, Gelman & Blei (2017), Automatic Differentiation Variational Inference,
    JMLR 18 (the Normal in the unconstrained space).
    Bingham et al. (2019), Pyro: Deep Universal Probabilistic Programming, JMLR 20 (pyro.infer.autoguide).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from pyro import poutine

from ppgen.spec import SpecError

#: Pyro's autoguides a spec may name.
AUTOGUIDES = ("AutoNormal", "AutoDelta", "AutoDiagonalNormal", "AutoMultivariateNormal",
              "AutoLowRankMultivariateNormal", "AutoLaplaceApproximation", "AutoIAFNormal")

#: The autoguides a program compiles, and the ``guide_globals`` each one is.
PROGRAM_AUTOGUIDES = {"AutoNormal": "normal", "AutoDelta": "delta"}


def check(name: Any, where: str = "autoguide") -> str:
    """``name`` if it is one of :data:`AUTOGUIDES`, else a :class:`SpecError` listing them."""
    if not isinstance(name, str) or name not in AUTOGUIDES:
        raise SpecError(f"{where}: {name!r} is not one of Pyro's autoguides that ppgen builds; choose one of "
                        f"{', '.join(AUTOGUIDES)}")
    return name


def program_guide_globals(data: Any) -> Any:
    """A program spec's raw data with ``autoguide`` checked and turned into its ``guide_globals``."""
    if not isinstance(data, dict) or data.get("autoguide") is None:
        return data
    name = data["autoguide"]
    if not isinstance(name, str) or name not in AUTOGUIDES:
        raise ValueError(f"autoguide: {name!r} is not one of Pyro's autoguides; choose one of {', '.join(AUTOGUIDES)}")
    if name not in PROGRAM_AUTOGUIDES:
        raise ValueError(
            f"autoguide: {name} is a joint guide over all global sites, which a program does not compile; a program "
            f"takes {' or '.join(PROGRAM_AUTOGUIDES)} (compiled site by site, with the fused objective), or write the "
            "model as a Python model (family: python), where every Pyro autoguide is built")
    kind = PROGRAM_AUTOGUIDES[name]
    given = data.get("guide_globals")
    if given is not None and given != kind:
        raise ValueError(f"autoguide: {name} is guide_globals: {kind}, but guide_globals is {given!r}; set one of them")
    return {**data, "guide_globals": kind}


# --------------------------------------------------------------------------- Python models


def latent_sites(model: Callable[..., Any], x: torch.Tensor, y: torch.Tensor | None) -> tuple[list[str], list[str]]:
    """The model's latent sample sites as (global, local): local ones are inside the data plate (a plate
    at dimension -1 of the batch's size), run once on ``x`` with the RNG and the param store untouched."""
    with torch.random.fork_rng(devices=[]), poutine.block():
        tr = poutine.trace(model).get_trace(x, y)
    batch = x.shape[0]
    glob, local = [], []
    for name, site in tr.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or name.startswith("_"):
            continue
        if type(site["fn"]).__name__ == "_Subsample":
            continue
        inside = any(f.dim == -1 and f.size == batch for f in site["cond_indep_stack"])
        (local if inside else glob).append(name)
    return glob, local


def for_globals(name: str, model: Callable[..., Any], x: torch.Tensor, y: torch.Tensor | None,
                guide: Callable[..., Any] | None, owner: str) -> Any:
    """Pyro's autoguide ``name`` for the global latent sites of ``model``, its local latent sites hidden;
    ``guide`` (the class's own, or None) must cover the local ones and none of the global ones."""
    import pyro.infer.autoguide as ag

    check(name)
    glob, local = latent_sites(model, x, y)
    if local and guide is None:
        raise SpecError(
            f"autoguide: {name} covers the global latent sites, but {owner} has latent sites inside the data plate "
            f"({', '.join(local)}), which an autoguide would give parameters for one batch of examples only; give "
            f"{owner} a guide(x) for them (an encoder of x), which runs after the autoguide")
    if not glob:
        raise SpecError(f"autoguide: {name} covers the global latent sites (outside the data plate), and {owner} has "
                        "none" + (f" (its latents {', '.join(local)} are inside the data plate, covered by its guide)"
                                  if local else "") + "; remove autoguide")
    if guide is not None:
        with torch.random.fork_rng(devices=[]), poutine.block():
            gtr = poutine.trace(guide).get_trace(x, y)
        both = [n for n in glob if n in gtr.nodes and gtr.nodes[n]["type"] == "sample"]
        if both:
            raise SpecError(f"autoguide: {name} covers the global latent sites, but the guide of {owner} samples "
                            f"{', '.join(both)} too; leave them out of the guide, or remove autoguide")
    hidden = set(local)
    return getattr(ag, name)(poutine.block(model, hide_fn=lambda msg: msg.get("name") in hidden))
