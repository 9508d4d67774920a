"""What every energy family shares (:class:`EnergyFamily`): data as visible units, evaluation with log Z
(exact enumeration or AIS, :mod:`ppgen.models.energy.partition`), sampling by Gibbs chains, and several
Gibbs chains run by :class:`~ppgen.models.energy.gibbs_kernel.GibbsKernel` as InferenceData; the evaluate
options of the energy families (:class:`EnergyEvaluateOptions`). Their figures are drawn by
:mod:`ppgen.plots.energy`.

References:
    Salakhutdinov & Murray (2008), On the Quantitative Analysis of Deep Belief Networks, ICML.
    Hinton (2010), A Practical Guide to Training Restricted Boltzmann Machines, UTML TR 2010-003.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from ppgen.contracts import BlockGibbs, MeanSamples, PartitionFunction
from ppgen.data.core import DataInfo, Dataset
from ppgen.models.energy.gibbs_kernel import GibbsKernel
from ppgen.models.energy.partition import LogZ
from ppgen.models.base import EvaluateOptions, Family
from ppgen.spec import ModelSpec, SpecError

LogZMethod = Literal["auto", "exact", "ais"]


class EnergyEvaluateOptions(EvaluateOptions):
    """``ppgen evaluate``'s options of the energy families: the AIS budget for log Z (default: the spec's
    ``ais`` section; checked against its bounds by :func:`ppgen.evaluation.evaluate.evaluate`) and how log Z is
    found (``exact`` enumeration where feasible, ``ais``, or ``auto``)."""

    ais_runs: int | None = None
    ais_steps: int | None = None
    log_z_method: LogZMethod = "auto"

#: The chain statistics recorded for diagnostics.
CHAIN_STATS = ("free_energy", "energy", "mean_visible", "mean_hidden")


# --------------------------------------------------------------------------- shared family machinery


class EnergyFamily(Family, PartitionFunction, BlockGibbs, MeanSamples):
    """What the RBM, GB-RBM, BM and DBN families share: the map between data and visible units
    (standardized for Gaussian units), data-driven initial biases, log Z for evaluation. Subclasses
    provide ``first_layer``, ``log_partition``, ``gibbs_init``, ``gibbs_sweep``, ``joint_model`` and
    ``chain_statistics``.

    In ``ppgen evaluate`` the ``k`` of other families is not used: log p(x) = -F(x) - log Z is exact
    given log Z, whose Monte Carlo budget is the spec's ``ais`` section (or the ``ais_runs=`` and
    ``ais_steps=`` options of :func:`ppgen.evaluation.evaluate.evaluate`)."""

    default_routine = "cd"
    EvaluateOptions = EnergyEvaluateOptions
    #: Gaussian visible units (which see the data standardized when ``standardize``); set per family.
    gaussian: bool = False
    standardize: bool = False

    def __init__(self, spec: ModelSpec, info: DataInfo) -> None:
        super().__init__(spec, info)
        self.event_shape = info.event_shape
        self.n_visible = info.dim
        self._log_z: LogZ | None = None
        self._log_z_key: tuple[int, ...] | None = None
        self.register_buffer("x_mean", torch.zeros(info.dim))
        self.register_buffer("x_std", torch.ones(info.dim))

    def first_layer(self) -> Any:
        """The core whose visible units are the data's (its visible biases start from the data)."""
        raise NotImplementedError

    # -- data <-> visible units ---------------------------------------------------------------------
    def to_visible(self, x: torch.Tensor) -> torch.Tensor:
        """Examples (B, *event_shape) as visible vectors (B, D), standardized for Gaussian units, in the
        model's floating-point type (data load as float32; a model may be float64)."""
        v = x.reshape(x.shape[0], -1).to(self.x_mean.dtype)
        return (v - self.x_mean) / self.x_std if self.gaussian else v

    def from_visible(self, v: torch.Tensor) -> torch.Tensor:
        if self.gaussian:
            v = v * self.x_std + self.x_mean
        return v.reshape(v.shape[0], *self.event_shape)

    def visible_of(self, sites: dict[str, torch.Tensor], mean: bool = False) -> torch.Tensor:
        """The sites' visible units (their conditional mean with ``mean``), shaped like the data."""
        v = sites["_mean"] if mean and "_mean" in sites else sites["v"]
        return self.from_visible(v)

    def init_from_data(self, x: torch.Tensor) -> None:
        """Data-driven initial biases and standardization (called by the Gibbs routines before training)."""
        flat = x.reshape(x.shape[0], -1).to(self.x_mean.device)
        with torch.no_grad():
            if self.gaussian and self.standardize:
                self.x_mean.copy_(flat.mean(0))
                std = flat.std(0)
                # A floor at a tenth of the mean scale keeps a unit that is (nearly) constant in the
                # training data, like a border pixel, from turning a rare non-zero value into an outlier.
                self.x_std.copy_(std.clamp_min(max(0.1 * float(std.mean()), 1e-6)))
        if self.spec.init.visible_bias == "data":
            self.first_layer().init_from_data(self.to_visible(flat))

    # -- evaluation -----------------------------------------------------------------------------------
    def log_partition(self, data: Dataset | None = None, runs: int | None = None, steps: int | None = None,
                      method: LogZMethod = "auto") -> LogZ:
        raise NotImplementedError

    def evaluation_setup(self, data: Dataset, ais_runs: int | None = None, ais_steps: int | None = None,
                         log_z_method: LogZMethod = "auto") -> dict[str, Any]:
        """log Z, once per evaluation: exact enumeration where it is feasible, else AIS with the spec's
        ``ais.runs`` and ``ais.steps`` (override with ``ais_runs=``/``ais_steps=``; force either way
        with ``log_z_method="exact"`` or ``"ais"``, e.g. to check AIS on a small model)."""
        if log_z_method not in ("auto", "exact", "ais"):
            raise SpecError(f"log_z_method: expected auto, exact or ais, got {log_z_method!r}")
        self._log_z = self.log_partition(data, ais_runs, ais_steps, log_z_method)
        self._log_z_key = self._parameter_versions()
        return self._log_z.report()

    def _parameter_versions(self) -> tuple[int, ...]:
        # every in-place change of a tensor (an update, load_state_dict) bumps its version counter
        return tuple(t._version for t in (*self.parameters(), *self.buffers()))

    def current_log_z(self) -> LogZ:
        """log Z from the last ``evaluation_setup``, or computed now (without data: AIS from the model's
        own visible biases) if there was none or the parameters have changed since."""
        if self._log_z is None or self._log_z_key != self._parameter_versions():
            self._log_z = self.log_partition(None)
            self._log_z_key = self._parameter_versions()
        return self._log_z

    # -- sampling ---------------------------------------------------------------------------------------
    @property
    def quality_samples(self) -> int | None:
        """How many samples ``ppgen evaluate`` draws for sample-quality metrics (``sampling.quality_samples``;
        None: the count of every family)."""
        return self.spec.sampling.quality_samples

    @torch.no_grad()
    def run_chains(self, n: int, steps: int, start: torch.Tensor | None = None,
                   record: list[int] | None = None) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
        """``n`` Gibbs chains for ``steps`` sweeps from random states (or from the examples ``start``);
        returns the final sites and the visible means after each sweep count in ``record``."""
        sites = self.gibbs_init(n) if start is None else self.gibbs_start(start)
        shots = []
        record = sorted(set(record or []))
        if 0 in record:
            shots.append(self.visible_of(sites, mean=True))
        for i in range(1, steps + 1):
            sites = self.gibbs_sweep(sites)
            if i in record:
                shots.append(self.visible_of(sites, mean=True))
        return sites, shots

    @torch.no_grad()
    def sample(self, n: int, steps: int | None = None, mean: bool = False) -> torch.Tensor:
        """``n`` draws after ``steps`` Gibbs sweeps (the spec's ``sampling.steps``) from random states;
        ``mean`` gives E[v | h] of the last sweep instead of a draw of v."""
        sites, _ = self.run_chains(n, steps or self.spec.sampling.steps)
        return self.visible_of(sites, mean=mean)

    # -- what the figures show -----------------------------------------------------------------------
    def filter_weights(self) -> torch.Tensor | None:
        """First-layer weights (D, H) to draw as filters, or None."""
        return None

    # -- ArviZ ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def gibbs_chains(self, chains: int | None = None, warmup: int | None = None, draws: int | None = None,
                     seed: int = 0) -> dict[str, np.ndarray]:
        """Chain statistics (free energy, energy, mean activations) of ``chains`` Gibbs chains started at
        independent random states, run by ``pyro.infer.MCMC`` with :class:`GibbsKernel`; arrays of shape
        (chain, draw)."""
        from pyro.infer import MCMC

        s = self.spec.sampling
        chains, warmup, draws = chains or s.chains, s.warmup if warmup is None else warmup, draws or s.draws
        gen = torch.get_rng_state()
        torch.manual_seed(seed)
        try:
            kernel = GibbsKernel(self, parallel=chains)
            stats: dict[str, list[torch.Tensor]] = {k: [] for k in CHAIN_STATS}

            def hook(kern: Any, params: dict[str, torch.Tensor], stage: str, i: int) -> None:
                if stage.startswith("Sample"):
                    for k, v in self.chain_statistics(params).items():
                        stats[k].append(v.detach().cpu())

            mcmc = MCMC(kernel, num_samples=draws, warmup_steps=warmup, hook_fn=hook, disable_progbar=True,
                        save_params=[])
            mcmc.run()
        finally:
            torch.set_rng_state(gen)
        return {k: torch.stack(v, 1).double().numpy() for k, v in stats.items() if v}

    def inference_data(self, data: Dataset, metrics: list[dict[str, Any]]) -> Any:
        """Several Gibbs chains as InferenceData. The chains run over the units' states with the weights
        fixed at their fitted values, so they are no posterior over parameters: their statistics (free
        energy, energy, mean activations; dims chain, draw) are statistics of the sampler, in
        ``sample_stats``, and there is no ``posterior`` group. ``az.summary(idata, group="sample_stats")``
        (and ``ppgen diagnose``) gives their R-hat and effective sample size."""
        from ppgen.arviz_data import arviz

        az = arviz()
        stats = self.gibbs_chains()
        return az.from_dict(sample_stats=stats, attrs={"sampler": "block Gibbs (ppgen GibbsKernel)",
                                                       "chain_statistics": ", ".join(stats),
                                                       "family": self.family_name})
