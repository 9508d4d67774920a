"""The hidden Markov model's spec sections (:class:`HMMSpec`): the number of states, the emissions
(Gaussian or categorical) and the declared priors; the family is :mod:`ppgen.models.bayesian.hmm`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ppgen.models.bayesian.base import NormalPrior, ScalePrior
from ppgen.spec import ModelSpec, Strict

__all__ = ["EmissionSpec", "HMMPrior", "HMMSpec"]


class EmissionSpec(Strict):
    """``gaussian`` (diagonal, one mean and standard deviation per state and dimension) or
    ``categorical`` over ``symbols`` values coded 0..symbols-1."""

    kind: Literal["gaussian", "categorical"] = "gaussian"
    symbols: int | None = Field(None, ge=2, le=10_000, description="number of symbols (categorical)")

    @model_validator(mode="after")
    def _check(self) -> "EmissionSpec":
        if self.kind == "categorical" and self.symbols is None:
            raise ValueError("emission.symbols is required for categorical emissions (e.g. 6 for a die)")
        if self.kind == "gaussian" and self.symbols is not None:
            raise ValueError("emission.symbols applies to categorical emissions only; remove it")
        return self


class HMMPrior(Strict):
    initial_concentration: float = Field(1.0, gt=0)
    transition_concentration: float = Field(1.0, gt=0)
    stickiness: float = Field(0.0, ge=0, description="extra Dirichlet concentration on staying in a state")
    emission_concentration: float = Field(1.0, gt=0, description="Dirichlet on each state's symbol probabilities")
    loc: NormalPrior = Field(default_factory=NormalPrior)
    scale: ScalePrior = Field(default_factory=ScalePrior)


class HMMSpec(ModelSpec):
    family: Literal["hmm"] = "hmm"
    states: int = Field(2, ge=1, le=100)
    emission: EmissionSpec = Field(default_factory=EmissionSpec)
    prior: HMMPrior = Field(default_factory=HMMPrior)

    @model_validator(mode="after")
    def _check(self) -> "HMMSpec":
        if self.data.name not in ("toyseq", "macro", "npz"):
            raise ValueError(f"an HMM needs sequence data (N, T, D): data.name toyseq, macro or npz, not {self.data.name!r}")
        return self
