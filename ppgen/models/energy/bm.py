"""The general Boltzmann machine, as the lecture presents it: visible units that are clamped to the data
during training and become the output afterwards, stochastic hidden units, and symmetric connections
between every pair of units, including visible-visible and hidden-hidden ones.

Training alternates, as Hinton and Sejnowski's learning rule prescribes, between a clamped phase (the
visible units held at a training example, the hidden units sampled "until equilibrium") and a free
phase (every unit sampled), and moves each weight by <s_i s_j>_clamped - <s_i s_j>_free
(``inference/pcd.yaml`` keeps the free-phase chains between updates, which the rule needs to be
unbiased; ``inference/cd.yaml`` starts them at the data). Sampling is sequential single-site Gibbs, so
this family is for small machines (at most 1,024 units).

Log-likelihood: log p(v) = log sum_h exp(-E(v, h)) - log Z, with the sum over h enumerated when
H <= 16 (else AIS with v clamped) and log Z enumerated when N <= 24 (else AIS over all units).

References:
    Hinton & Sejnowski (1983), Optimal Perceptual Inference, CVPR.
    Ackley, Hinton & Sejnowski (1985), A Learning Algorithm for Boltzmann Machines, Cognitive Science 9.
    Hinton & Sejnowski (1986), Learning and Relearning in Boltzmann Machines, in Parallel Distributed
    Processing, vol. 1, ch. 7.
    Salakhutdinov (2008), Learning and Evaluating Boltzmann Machines, UTML TR 2008-002 (AIS for BMs).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Literal

import pyro
import pyro.distributions as dist
import torch
from pydantic import Field, model_validator

from ppgen.data.core import DataInfo, Dataset
from ppgen.models.energy.bm_core import BMCore
from ppgen.models.energy.core import base_rate_logits
from ppgen.models.energy.family import EnergyFamily, LogZMethod
from ppgen.models.energy.partition import LogZ
from ppgen.models.energy.spec import AISSpec, InitSpec, PriorSpec, SamplingSpec
from ppgen.registry import register_family
from ppgen.spec import ModelSpec, Strict

#: Sum over the hidden states exactly up to this many hidden units (2^16 states per example).
EXACT_HIDDEN = 16
#: A sweep visits units one at a time in Python; beyond this many units it becomes impractically slow.
MAX_UNITS = 1024


class ConnectionsSpec(Strict):
    """Which lateral connections exist; with both off the machine is an RBM."""

    visible_visible: bool = True
    hidden_hidden: bool = True


def _bm_ais() -> AISSpec:
    return AISSpec(runs=100, steps=1000)


def _bm_sampling() -> SamplingSpec:
    return SamplingSpec(steps=200, chains=4, warmup=200, draws=500)


class BMSpec(ModelSpec):
    family: Literal["bm"] = "bm"
    hidden: int = Field(16, ge=1, le=512)
    connections: ConnectionsSpec = Field(default_factory=ConnectionsSpec)
    init: InitSpec = Field(default_factory=InitSpec)
    prior: PriorSpec = Field(default_factory=PriorSpec)
    ais: AISSpec = Field(default_factory=_bm_ais)
    sampling: SamplingSpec = Field(default_factory=_bm_sampling)

    @model_validator(mode="after")
    def _check(self) -> "BMSpec":
        if self.data.name in ("toy1d", "toy2d"):
            raise ValueError("family 'bm' has binary units; for real-valued data use family 'gbrbm'")
        if self.data.binarize == "none":
            raise ValueError("family 'bm' needs binary data: set data.binarize to dynamic or static")
        return self


@register_family("bm")
class BM(EnergyFamily):
    """A general Boltzmann machine with binary visible and hidden units."""

    Spec = BMSpec
    default_routine = "pcd"
    core: BMCore

    def __init__(self, spec: BMSpec, info: DataInfo) -> None:
        super().__init__(spec, info)
        if info.kind != "binary":
            raise ValueError("family 'bm' needs binary data: set data.binarize to 'dynamic' or 'static'")
        if info.dim + spec.hidden > MAX_UNITS:
            raise ValueError(
                f"a general BM over {info.dim} visible and {spec.hidden} hidden units has more than {MAX_UNITS} "
                "units, which single-site Gibbs cannot sample in reasonable time; use a smaller data set "
                "(e.g. data.name: digits) or family 'rbm'"
            )
        self.core = BMCore(
            info.dim,
            spec.hidden,
            visible_visible=spec.connections.visible_visible,
            hidden_hidden=spec.connections.hidden_hidden,
            weight_std=spec.init.weight_std,
            hidden_bias=spec.init.hidden_bias,
            weight_decay=spec.prior.weight_decay,
        )
        self._mc_se: list[torch.Tensor] = []

    def first_layer(self) -> Any:
        return self.core

    # -- Pyro -----------------------------------------------------------------------------------------
    def weight_prior(self, batch: int) -> None:
        """Weight decay as a Gaussian prior on every coupling (W, L, J), per example (see RBM)."""
        lam = self.core.weight_decay
        if lam <= 0:
            return
        with pyro.poutine.scale(scale=float(batch)):
            for name, p in (("W", self.core.W), ("L", self.core.L), ("J", self.core.J)):
                if p is None:
                    continue
                if name != "W":  # only the strict upper triangle is a coupling
                    p = p[tuple(torch.triu_indices(p.shape[0], p.shape[1], 1, device=p.device))]
                pyro.sample(name, dist.Normal(torch.zeros_like(p), lam**-0.5).to_event(p.dim()), obs=p)

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """The unnormalized likelihood of each example, log sum_h exp(-E(x, h)), as a factor, with the hidden
        units as latent sites: p(v, h) ~ exp(-E(v, h)) over uniform base measures."""
        v = self.to_visible(x)
        self.weight_prior(v.shape[0])
        H = self.core.n_hidden
        with pyro.plate("data", v.shape[0]):
            h = pyro.sample("h", dist.Bernoulli(logits=v.new_zeros(v.shape[0], H)).to_event(1))
            s = torch.cat([v, h], -1)
            pyro.factor("x", -self.core.energy(s) + H * math.log(2))

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """q(h | v): one sweep's worth of the clamped phase, drawn as independent units from their input
        given v (exact when there are no hidden-hidden couplings)."""
        v = self.to_visible(x)
        with pyro.plate("data", v.shape[0]):
            logits = v @ self.core.W + self.core.c
            pyro.sample("h", dist.Bernoulli(logits=logits).to_event(1))

    def joint_model(self, n: int | None = None) -> None:
        core = self.core
        shape = (n,) if n else ()
        plate = pyro.plate("chains", n) if n else contextlib.nullcontext()
        with plate:
            v = pyro.sample("v", dist.Bernoulli(logits=core.b.new_zeros(*shape, core.n_visible)).to_event(1))
            h = pyro.sample("h", dist.Bernoulli(logits=core.c.new_zeros(*shape, core.n_hidden)).to_event(1))
            pyro.factor("energy", -core.energy(torch.cat([v, h], -1)))

    # -- Gibbs -----------------------------------------------------------------------------------------
    def _split(self, s: torch.Tensor) -> dict[str, torch.Tensor]:
        D = self.core.n_visible
        return {"v": s[:, :D].clone(), "h": s[:, D:].clone()}

    def gibbs_init(self, n: int) -> dict[str, torch.Tensor]:
        return self._split(self.core.random_states(n))

    def gibbs_start(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._split(self.core.clamped_hidden(self.to_visible(x), 1))

    def gibbs_sweep(self, sites: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One sequential sweep over every unit (visible first, then hidden)."""
        s = torch.cat([sites["v"], sites["h"]], -1)
        s = self.core.sweep(s)
        out = self._split(s)
        D = self.core.n_visible
        out["_mean"] = torch.sigmoid(s @ self.core.coupling()[:, :D] + self.core.b)
        return out

    @torch.no_grad()
    def chain_statistics(self, sites: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        v, h = sites["v"], sites["h"]
        if v.dim() == 1:
            v, h = v.unsqueeze(0), h.unsqueeze(0)
        s = torch.cat([v, h], -1)
        out = {"energy": self.core.energy(s), "mean_visible": v.mean(-1), "mean_hidden": h.mean(-1)}
        if self.core.n_hidden <= 12:
            out["free_energy"] = -self.core.log_unnormalized_visible(v).float()
        return out

    # -- likelihood --------------------------------------------------------------------------------------
    def log_partition(self, data: Dataset | None = None, runs: int | None = None, steps: int | None = None,
                      method: LogZMethod = "auto") -> LogZ:
        """log Z: enumerated for at most 24 units (or 20 on each side), else AIS over all units from the
        base rate of the training data."""
        core = self.core
        feasible = core.n_units <= 24 or (core.n_visible <= 20 and core.n_hidden <= 20)
        if method == "exact" or (method == "auto" and feasible):
            return LogZ(core.log_z_exact(), 0.0, "exact")
        if data is not None:
            base = base_rate_logits(self.to_visible(data.split("train")[0].to(self.device)))
        else:
            base = core.b.detach().clone()
        return core.ais_log_z(runs or self.spec.ais.runs, steps or self.spec.ais.steps, base_logits=base)

    def evaluation_setup(self, data: Dataset, ais_runs: int | None = None, ais_steps: int | None = None,
                         log_z_method: LogZMethod = "auto") -> dict[str, Any]:
        self._mc_se = []
        return super().evaluation_setup(data, ais_runs=ais_runs, ais_steps=ais_steps, log_z_method=log_z_method)

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, k: int = 1000, y: torch.Tensor | None = None,
                       ais_runs: int | None = None, ais_steps: int | None = None,
                       log_z_method: LogZMethod = "auto") -> tuple[torch.Tensor, torch.Tensor]:
        """log p(x) = log sum_h exp(-E(x, h)) - log Z; the sum over h is exact for H <= 16, else AIS with
        x clamped (per-example errors returned, log Z's error reported by ``evaluate_extra``)."""
        lz = self.current_log_z()
        v = self.to_visible(x)
        if self.core.n_hidden <= EXACT_HIDDEN:
            lu = self.core.log_unnormalized_visible(v)
            se = torch.zeros_like(lu)
        else:
            lu, se = self.core.ais_log_unnormalized_visible(v, ais_runs or self.spec.ais.runs, ais_steps or self.spec.ais.steps)
        self._mc_se.append(se.cpu())
        return lu - lz.value, se

    @torch.no_grad()
    def evaluate_extra(self, x: torch.Tensor, y: torch.Tensor | None) -> dict[str, float]:
        """Conditional pseudo-likelihood and reconstruction error of the test set, and the Monte Carlo
        error of the test NLL: the per-example errors average out, log Z's does not."""
        out = {f"test_{k}": v for k, v in self.core.validation_metrics(self.to_visible(x)).items() if k != "loss"}
        if self._log_z is not None:
            per = torch.cat(self._mc_se) if self._mc_se else torch.zeros(1)
            out["test_nll_mc_stderr"] = math.sqrt(float(per.pow(2).mean()) / max(per.numel(), 1) + self._log_z.stderr**2)
        return out

    def filter_weights(self) -> torch.Tensor:
        return self.core.W
