"""ArviZ at the boundary: the import (without its banner) and the training records as ``sample_stats``.
The families' InferenceData builders and :mod:`ppgen.diagnostics.diagnose` use these."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np


def arviz() -> Any:
    """``import arviz``, without the banner about its refactor that it prints as a FutureWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az
    return az


def loss_trace(metrics: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The training records as ``sample_stats`` arrays of shape (1 chain, n records): loss and every
    other per-step number, aligned on the records that carry it."""
    train = [m for m in metrics if m.get("kind") == "train"]
    if not train:
        return {}
    keys = [k for k, v in train[0].items() if k not in ("kind",) and isinstance(v, (int, float))]
    return {k: np.asarray([[float(m.get(k, np.nan)) for m in train]]) for k in keys}
