"""Restricted Boltzmann machines: Bernoulli-Bernoulli (``rbm``) for binary data and Gaussian-Bernoulli
(``gbrbm``) for real-valued data, fitted by contrastive divergence (``inference/cd.yaml``) or persistent
CD (``inference/pcd.yaml``), with log Z by annealed importance sampling for a test likelihood in nats.

As a Pyro model an RBM is an unnormalized likelihood: ``model(x)`` adds the negative free energy
-F(x) = log sum_h exp(-E(x, h)) of each example as a ``pyro.factor`` and declares weight decay as a
Gaussian prior on W; log Z, the normalizer, is what AIS estimates. ``joint_model`` is the model over
both layers that :class:`~ppgen.models.energy.gibbs_kernel.GibbsKernel` samples.

:class:`EnergyFamily` holds what every energy family shares: evaluation with log Z, sampling, and several
Gibbs chains as InferenceData; its figures are drawn by :mod:`ppgen.plots.energy`.

References:
    Smolensky (1986), Information Processing in Dynamical Systems: Foundations of Harmony Theory.
    Hinton (2002), Training Products of Experts by Minimizing Contrastive Divergence, Neural Comp. 14.
    Salakhutdinov & Murray (2008), On the Quantitative Analysis of Deep Belief Networks, ICML.
    Hinton (2010), A Practical Guide to Training Restricted Boltzmann Machines, UTML TR 2010-003.
    Krizhevsky (2009), Learning Multiple Layers of Features from Tiny Images, ch. 1 (Gaussian-Bernoulli RBM).
    Cho, Ilin & Raiko (2011), Improved Learning of Gaussian-Bernoulli Restricted Boltzmann Machines, ICANN.
"""

from __future__ import annotations

import contextlib
from typing import Any, Literal

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pydantic import Field, model_validator

from ppgen.contracts import BlockGibbs, MeanSamples, PartitionFunction
from ppgen.data.core import DataInfo, Dataset
from ppgen.models.energy.core import base_rate_logits, bernoulli
from ppgen.models.energy.gibbs_kernel import GibbsKernel
from ppgen.models.energy.partition import LogZ
from ppgen.models.energy.rbm_core import RBMCore
from ppgen.models.energy.spec import AISSpec, InitSpec, PriorSpec, SamplingSpec
from ppgen.models.base import EvaluateOptions, Family
from ppgen.registry import register_family
from ppgen.spec import ModelSpec, SpecError, Strict

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


# --------------------------------------------------------------------------- RBM families


class GaussianVisibleSpec(Strict):
    """Gaussian visible units: ``sigma`` per unit (of the standardized data when ``standardize``), fixed
    or learned (``learn_sigma``; Cho et al. 2011). Standardizing to zero mean and unit variance with
    sigma = 1 is the usual recipe (Hinton 2010, §13.2); standard deviations are floored at a tenth of
    their mean. Gaussian units want a learning rate one or two orders of magnitude below binary ones."""

    sigma: float = Field(1.0, gt=0, le=100)
    learn_sigma: bool = False
    standardize: bool = True


class _RBMSpecBase(ModelSpec):
    hidden: int = Field(500, ge=1, le=100_000, description="number of hidden units")
    init: InitSpec = Field(default_factory=InitSpec)
    prior: PriorSpec = Field(default_factory=PriorSpec)
    ais: AISSpec = Field(default_factory=AISSpec)
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)


class RBMSpec(_RBMSpecBase):
    family: Literal["rbm"] = "rbm"

    @model_validator(mode="after")
    def _check(self) -> "RBMSpec":
        if self.data.name in ("toy1d", "toy2d"):
            raise ValueError("family 'rbm' has binary visible units; for real-valued data use family 'gbrbm'")
        if self.data.binarize == "none":
            raise ValueError("family 'rbm' needs binary data: set data.binarize to dynamic or static, or use family 'gbrbm'")
        return self


class GBRBMSpec(_RBMSpecBase):
    family: Literal["gbrbm"] = "gbrbm"
    visible: GaussianVisibleSpec = Field(default_factory=GaussianVisibleSpec)

    @model_validator(mode="after")
    def _check(self) -> "GBRBMSpec":
        if self.data.binarize in ("dynamic", "static"):
            raise ValueError("family 'gbrbm' models real values: set data.binarize: none, or use family 'rbm' for binary data")
        return self


@register_family("rbm")
class RBM(EnergyFamily):
    """A restricted Boltzmann machine with binary visible and hidden units."""

    Spec = RBMSpec
    gaussian = False
    core: RBMCore

    def __init__(self, spec: RBMSpec, info: DataInfo) -> None:
        super().__init__(spec, info)
        if self.gaussian:
            if info.kind != "continuous":
                raise ValueError("family 'gbrbm' needs real-valued data: set data.binarize: none (or use family 'rbm')")
        elif info.kind != "binary":
            raise ValueError(
                "family 'rbm' needs binary data but the data are continuous (data.binarize is 'none'); set "
                "data.binarize to 'dynamic' or 'static', or use family 'gbrbm'"
            )
        vis = spec.visible if isinstance(spec, GBRBMSpec) else None
        self.core = RBMCore(
            info.dim,
            spec.hidden,
            gaussian=self.gaussian,
            weight_std=spec.init.weight_std,
            hidden_bias=spec.init.hidden_bias,
            sigma=vis.sigma if vis else 1.0,
            learn_sigma=vis.learn_sigma if vis else False,
            weight_decay=spec.prior.weight_decay,
        )
        self.standardize = bool(vis.standardize) if vis else False

    def first_layer(self) -> RBMCore:
        return self.core

    # -- Pyro -----------------------------------------------------------------------------------------
    def weight_prior(self, batch: int, site: str = "W", core: RBMCore | None = None) -> None:
        """Weight decay as a declared Gaussian prior: W ~ N(0, 1/lambda) per example, i.e. scaled by the
        batch size, so that the batch's log joint divided by its size is mean log-lik - lambda/2 |W|^2."""
        core = core or self.core
        if core.weight_decay > 0:
            prior = dist.Normal(torch.zeros_like(core.W), core.weight_decay**-0.5).to_event(2)
            with pyro.poutine.scale(scale=float(batch)):
                pyro.sample(site, prior, obs=core.W)

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """The unnormalized likelihood: each example contributes -F(x) (log Z is left out)."""
        v = self.to_visible(x)
        self.weight_prior(v.shape[0])
        with pyro.plate("data", v.shape[0]):
            pyro.factor("x", -self.core.free_energy(v))

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """No latent sites: the hidden units are summed out in the free energy."""

    def joint_model(self, n: int | None = None) -> None:
        """The joint Boltzmann distribution p(v, h) ~ exp(-E(v, h)) as a Pyro model: uniform (or, for
        Gaussian units, N(b, sigma^2)) base measures on v and h and a factor for the rest of -E."""
        core = self.core
        D, H = core.n_visible, core.n_hidden
        shape = (n,) if n else ()
        zeros_h = core.c.new_zeros(*shape, H)
        with pyro.plate("chains", n) if n else contextlib.nullcontext():
            if self.gaussian:
                v = pyro.sample("v", dist.Normal(core.b.expand(*shape, D), core.sigma.expand(*shape, D)).to_event(1))
            else:
                v = pyro.sample("v", dist.Bernoulli(logits=core.b.new_zeros(*shape, D)).to_event(1))
            h = pyro.sample("h", dist.Bernoulli(logits=zeros_h).to_event(1))
            rest = -core.energy(v, h)
            if self.gaussian:
                # the base N(b, sigma^2) already carries the quadratic term of -E
                rest = rest + (((v - core.b) / core.sigma) ** 2).sum(-1) / 2
            pyro.factor("energy", rest)

    # -- Gibbs (GibbsKernel protocol) ---------------------------------------------------------------------
    def gibbs_init(self, n: int) -> dict[str, torch.Tensor]:
        core = self.core
        if self.gaussian:
            v = 2 * torch.randn(n, core.n_visible, device=core.W.device, dtype=core.W.dtype)  # over-dispersed starts
        else:
            v = bernoulli(core.W.new_full((n, core.n_visible), 0.5))
        h, _ = core.sample_h(v)
        return {"v": v, "h": h}

    def gibbs_start(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        v = self.to_visible(x)
        h, _ = self.core.sample_h(v)
        return {"v": v, "h": h}

    def gibbs_sweep(self, sites: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """h ~ p(h | v), then v ~ p(v | h): one block-Gibbs sweep."""
        h, _ = self.core.sample_h(sites["v"])
        v, mean = self.core.sample_v(h)
        return {"v": v, "h": h, "_mean": mean}

    @torch.no_grad()
    def chain_statistics(self, sites: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        v, h = sites["v"], sites["h"]
        if v.dim() == 1:
            v, h = v.unsqueeze(0), h.unsqueeze(0)
        return {
            "free_energy": self.core.free_energy(v),
            "energy": self.core.energy(v, h),
            "mean_visible": v.mean(-1),
            "mean_hidden": h.mean(-1),
        }

    # -- likelihood -----------------------------------------------------------------------------------------
    def log_partition(self, data: Dataset | None = None, runs: int | None = None, steps: int | None = None,
                      method: LogZMethod = "auto") -> LogZ:
        """log Z: exact when one side has at most 20 units, else AIS from the base-rate model of the
        training data (the model's own visible biases when no data are given)."""
        core = self.core
        if method == "exact" or (method == "auto" and core.can_enumerate()):
            return LogZ(core.log_z_exact(), 0.0, "exact")
        base = None
        if not self.gaussian:
            if data is not None:
                base = base_rate_logits(self.to_visible(data.split("train")[0].to(self.device)))
            else:
                base = core.b.detach().clone()
        return core.ais_log_z(runs or self.spec.ais.runs, steps or self.spec.ais.steps, base_logits=base)

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, k: int = 1000, y: torch.Tensor | None = None,
                       ais_runs: int | None = None, ais_steps: int | None = None,
                       log_z_method: LogZMethod = "auto") -> tuple[torch.Tensor, torch.Tensor]:
        """log p(x) = -F(x) - log Z (minus log|det| of the standardization for Gaussian units); the Monte
        Carlo error is that of log Z, common to every example."""
        lz = self.current_log_z()
        ll = -self.core.free_energy(self.to_visible(x)).double() - lz.value
        if self.gaussian:
            ll = ll - self.x_std.log().sum().double()
        return ll, torch.full_like(ll, lz.stderr)

    @torch.no_grad()
    def evaluate_extra(self, x: torch.Tensor, y: torch.Tensor | None) -> dict[str, float]:
        """Pseudo-likelihood, reconstruction error and mean free energy of the test set; and the Monte
        Carlo error of the test NLL, which is log Z's (it is shared by all examples, so it does not
        shrink with their number)."""
        out = {f"test_{k}": v for k, v in self.core.validation_metrics(self.to_visible(x)).items() if k != "loss"}
        if self._log_z is not None:
            out["test_nll_mc_stderr"] = self._log_z.stderr
        return out

    def filter_weights(self) -> torch.Tensor:
        return self.core.W


@register_family("gbrbm")
class GBRBM(RBM):
    """A Gaussian-Bernoulli RBM: real-valued visible units with standard deviations sigma, binary hidden
    units; a mixture of 2^H Gaussians with shared diagonal covariance."""

    Spec = GBRBMSpec
    gaussian = True
