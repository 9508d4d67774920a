"""The random-number state of a training process: seeded at the start, captured in each checkpoint
(torch, NumPy, Python and CUDA generators, as tensors) and restored on resume, so that a resumed run
draws what the uninterrupted one would have drawn."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_rng_to_tensor(),
        "python": torch.tensor(_python_rng_to_list(), dtype=torch.int64),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    keys = state["numpy"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys[:-1], int(keys[-1])))
    py = state["python"].tolist()
    random.setstate((py[0], tuple(py[1:-1]), None if py[-1] < 0 else py[-1]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _numpy_rng_to_tensor() -> torch.Tensor:
    _, keys, pos, *_ = np.random.get_state()
    return torch.from_numpy(np.append(keys, pos).astype(np.int64))


def _python_rng_to_list() -> list[int]:
    version, internal, gauss = random.getstate()
    return [version, *internal, -1 if gauss is None else int(gauss)]
