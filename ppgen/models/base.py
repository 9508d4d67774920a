"""What every family is: a PyroModule with model/guide, sampling and (where defined) a likelihood.

The loop, the evaluator, the diagnostics and the CLI talk to families only through this interface.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from pyro.nn import PyroModule

from ppgen.data.core import DataInfo, Dataset
from ppgen.spec import ModelSpec


class Family(PyroModule):
    """Base class of a family. Subclasses set ``Spec`` and ``default_routine`` and implement
    ``model``/``guide`` (Pyro sites shared by name) and ``sample``.

    Optional hooks, each with a sensible default here:
    ``log_likelihood(x, **opts)`` gives per-example log p(x) in nats (exact or an estimator) and returns
    ``(values, stderrs)``; ``evaluate_extra(x, y)`` adds family metrics to ``ppgen evaluate``;
    ``figures(folder, data)`` writes family figures; ``inference_data(data, metrics)`` builds ArviZ data.
    """

    Spec: ClassVar[type[ModelSpec]]
    default_routine: ClassVar[str] = "svi"
    #: Whether ``log_likelihood`` is an importance-sampling estimate that takes ``k`` samples per
    #: example (``ppgen evaluate --k``); for the other families ``k`` means nothing and is refused.
    importance_samples: ClassVar[bool] = False
    #: The deepest nesting of plates in ``model``/``guide``, where known (Pyro guesses it otherwise).
    max_plate_nesting: ClassVar[int | None] = None
    family_name: ClassVar[str]

    def __init__(self, spec: ModelSpec, info: DataInfo) -> None:
        super().__init__()
        self.spec = spec
        self.info = info

    # -- required ---------------------------------------------------------------------------
    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Any:
        raise NotImplementedError

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Any:
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """``n`` draws of x from the model, shape ``(n, *event_shape)``."""
        raise NotImplementedError

    @torch.no_grad()
    def display_samples(self, n: int) -> torch.Tensor:
        """Samples as a picture should show them; families with a pixelwise likelihood may return its
        mean (pixel probabilities) rather than a noisy draw."""
        return self.sample(n)

    # -- optional ---------------------------------------------------------------------------
    def log_likelihood(self, x: torch.Tensor, k: int = 1000, y: torch.Tensor | None = None, **opts: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Per-example log p(x) in nats and the Monte Carlo standard error of each (zeros if exact);
        ``None`` where the family has no likelihood. ``k`` is the estimator's sample budget where it
        has one; ``y`` the labels, for class-conditional families."""
        return None

    def evaluation_setup(self, data: Dataset, **opts: Any) -> dict[str, Any]:
        """Called once by ``ppgen evaluate`` before ``log_likelihood`` (e.g. to estimate a partition
        function); returns numbers for the evaluation report."""
        return {}

    def evaluate_extra(self, x: torch.Tensor, y: torch.Tensor | None) -> dict[str, float]:
        """Family metrics on the test split for ``ppgen evaluate`` (e.g. the ELBO)."""
        return {}

    def figures(self, folder: Path, data: Dataset) -> dict[str, Path]:
        return {}

    def inference_data(self, data: Dataset, metrics: list[dict[str, Any]]) -> Any:
        return None

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")
