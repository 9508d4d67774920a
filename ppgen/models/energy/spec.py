"""The spec sections the energy families share (RBM, Gaussian-Bernoulli RBM, Boltzmann machine, DBN):
initial parameters, the weight prior, annealed importance sampling and Gibbs sampling from the model.

References:
    Hinton (2010), A Practical Guide to Training Restricted Boltzmann Machines, UTML TR 2010-003.
    Salakhutdinov & Murray (2008), On the Quantitative Analysis of Deep Belief Networks, ICML.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ppgen.spec import Strict


class InitSpec(Strict):
    """Initial parameters (Hinton 2010, §8): small random weights, and visible biases either zero or
    ``log p_i / (1 - p_i)`` from the training data's marginals (``data``), set when training starts."""

    weight_std: float = Field(0.01, gt=0, le=10)
    visible_bias: Literal["data", "zero"] = "data"
    hidden_bias: float = Field(0.0, ge=-20, le=20, description="initial hidden biases (e.g. -4 for sparsity)")


class PriorSpec(Strict):
    """The Gaussian prior on the weights that is weight decay (Hinton 2010, §10).

    ``weight_decay`` = lambda declares W_ij ~ N(0, 1/(lambda N)) over a data set of N examples, that is a
    penalty lambda/2 ||W||^2 per example: the gradient step of every weight gains -lr * lambda * W. Zero
    means a flat prior. Biases get no prior."""

    weight_decay: float = Field(0.0, ge=0, le=1)


class AISSpec(Strict):
    """Annealed importance sampling for log Z (Salakhutdinov & Murray 2008): ``runs`` independent
    annealing runs through ``steps`` intermediate distributions (the paper: 100 runs, 14,500 steps).
    Exact enumeration replaces it when one side of an RBM has at most 20 units."""

    runs: int = Field(100, ge=2, le=100_000)
    steps: int = Field(10_000, ge=10, le=1_000_000)


class SamplingSpec(Strict):
    """Gibbs sampling from the model: ``steps`` sweeps per draw of ``sample(n)``; for diagnostics
    ``chains`` independent chains, each ``warmup`` sweeps then ``draws`` recorded sweeps; and, when set, the
    number of samples ``ppgen evaluate`` draws for its sample-quality metrics (each costs ``steps``
    sweeps). Left out, it is the count every family uses (``ppgen.evaluation.quality.DEFAULT_SAMPLES``, or
    ``--quality-samples``), so that the numbers and their real-data floor compare across families."""

    steps: int = Field(1000, ge=1, le=1_000_000)
    chains: int = Field(4, ge=1, le=64)
    warmup: int = Field(500, ge=0, le=1_000_000)
    draws: int = Field(500, ge=4, le=100_000)
    quality_samples: int | None = Field(None, ge=10, le=100_000)
