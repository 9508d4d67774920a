"""The Python API: ``load_spec``, ``build``, ``fit``, ``open_run``, usable from scripts and notebooks.

>>> import ppgen
>>> spec = ppgen.load_spec("models/vae.yaml", ["latent.dim=2"])
>>> run = ppgen.fit(spec, "inference/svi.yaml", epochs=5, out="runs/vae2d")
>>> run.model, run.metrics, run.samples(16), run.idata

or, for a Pyro user, ``ppgen.fit(model_fn, guide_fn, data=x)`` with plain Pyro callables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from ppgen.program.python import AUTOGUIDES, register_callables
from ppgen.registry import build, load_recipe, load_spec
from ppgen.store.folder import Run, open_run
from ppgen.spec import ModelSpec, SpecError, cut
from ppgen.training.loop import fit as fit_spec

__all__ = ["load_spec", "load_recipe", "build", "fit", "open_run", "Run"]


def fit(spec: Any, recipe: Any = None, *, data: Any = None, inference: Any = None, **kwargs: Any) -> Run:
    """Fit a model spec with an inference recipe (see :func:`ppgen.training.loop.fit`) and return the run.

    A Pyro user's way in: ``fit(model_fn, guide_fn, data=...)`` takes plain Pyro callables (or a module
    with ``model``/``guide`` methods as ``model_fn``; a Pyro autoguide's name such as ``"AutoNormal"`` or
    ``None`` as ``guide_fn``), ``data`` as a data spec (``{"name": "digits"}``), an array of examples or
    an ``(x, y)`` pair, and the recipe as ``inference=``. The run works in this process like any other
    (``run.model.model`` is still the Pyro model); the callables are not saved with it.
    """
    if _is_pyro_model(spec):
        if int(kwargs.get("devices", 1) or 1) > 1:
            raise SpecError(f"devices: {kwargs['devices']} processes would each have to rebuild the model, but a model "
                            "passed to ppgen.fit as Python objects lives in this process only; write it in a file "
                            "(family: python, file: ..., class: ...) to fit it with several processes, or use devices=1")
        guide = recipe
        autoguide = None
        if isinstance(guide, str):
            if guide not in AUTOGUIDES:
                raise SpecError(f"guide: {guide!r} is not one of Pyro's autoguides {', '.join(AUTOGUIDES)}")
            autoguide, guide = guide, None
        out = kwargs.get("out")
        if out is None:
            import time

            out = kwargs["out"] = Path("runs") / f"python-{time.strftime('%Y%m%d-%H%M%S')}"
        py_spec: dict[str, Any] = {"family": "python", "object": register_callables(spec, guide),
                                   "data": _data_spec(data, Path(out))}
        if autoguide is not None or (guide is None and not hasattr(spec, "guide")):
            py_spec["autoguide"] = autoguide or "AutoNormal"
        return fit_spec(py_spec, inference, **kwargs)
    if data is not None:
        raise SpecError("data: give the data in the spec (its data section); data= is for ppgen.fit(model_fn, guide_fn, data=...)")
    return fit_spec(spec, recipe if inference is None else inference, **kwargs)


def _is_pyro_model(obj: Any) -> bool:
    if isinstance(obj, (str, Path, dict, ModelSpec)):
        return False
    return callable(obj) or callable(getattr(obj, "model", None))


def _data_spec(data: Any, out: Path) -> dict[str, Any]:
    """A data spec from what ``fit(model_fn, ..., data=...)`` was given; arrays are written to
    ``out/data.npz`` so that the run's spec names its data."""
    if data is None:
        raise SpecError("data: ppgen.fit(model_fn, guide_fn, data=...) needs the data: a data spec such as "
                        "{'name': 'digits'}, an array of examples, or (x, y)")
    if isinstance(data, dict):
        return data
    if isinstance(data, BaseModel):
        return data.model_dump(mode="json")
    import numpy as np

    from ppgen.data.sources import check_labels

    x, y = data if isinstance(data, tuple) else (data, None)
    try:
        x = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float32)
    except (TypeError, ValueError):
        x = np.zeros(())
    if isinstance(data, (str, bytes)) or x.ndim == 0:
        raise SpecError(f"data: expected a data spec such as {{'name': 'digits'}}, an array of examples or (x, y), "
                        f"got {cut(repr(data))}")
    if x.ndim < 2:
        x = x[:, None]
    arrays = {"x": x}
    if y is not None:
        arrays["y"] = check_labels(np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y), len(x), "data")
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "data.npz", **arrays)
    return {"name": "npz", "path": str(out / "data.npz"), "batch_size": min(128, len(x))}
