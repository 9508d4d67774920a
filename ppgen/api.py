"""The Python API: ``load_spec``, ``build``, ``fit``, ``open_run``, usable from scripts and notebooks.

>>> import ppgen
>>> spec = ppgen.load_spec("models/vae.yaml", ["latent.dim=2"])
>>> run = ppgen.fit(spec, "inference/svi.yaml", epochs=5, out="runs/vae2d")
>>> run.model, run.metrics, run.samples(16), run.idata
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ppgen import registry
from ppgen.data.core import DataInfo
from ppgen.runs import Run, open_run
from ppgen.spec import ModelSpec, SpecError, load_recipe, load_spec
from ppgen.train import fit

__all__ = ["load_spec", "load_recipe", "build", "fit", "open_run", "Run"]


def build(spec: str | Path | dict | ModelSpec, info: DataInfo | None = None) -> Any:
    """The family module a spec describes, freshly initialised.

    ``info`` (event shape and kind of the data) is read from the spec's data set when not given.
    """
    spec = load_spec(spec)
    if info is None:
        from ppgen import data

        info = data.load(spec.data).info
    cls = registry.family(spec.family)
    try:
        return cls(spec, info)
    except ValueError as exc:
        raise SpecError(f"{spec.name or spec.family}: {exc}") from None
