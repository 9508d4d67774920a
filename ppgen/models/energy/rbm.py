"""Restricted Boltzmann machines: Bernoulli-Bernoulli (``rbm``) for binary data and Gaussian-Bernoulli
(``gbrbm``) for real-valued data, fitted by contrastive divergence (``inference/cd.yaml``) or persistent
CD (``inference/pcd.yaml``), with log Z by annealed importance sampling for a test likelihood in nats.

As a Pyro model an RBM is an unnormalized likelihood: ``model(x)`` adds the negative free energy
-F(x) = log sum_h exp(-E(x, h)) of each example as a ``pyro.factor`` and declares weight decay as a
Gaussian prior on W; log Z, the normalizer, is what AIS estimates. ``joint_model`` is the model over
both layers that :class:`~ppgen.models.energy.gibbs_kernel.GibbsKernel` samples.

:class:`~ppgen.models.energy.family.EnergyFamily` holds what every energy family shares: evaluation with
log Z, sampling, and several Gibbs chains as InferenceData; its figures are drawn by :mod:`ppgen.plots.energy`.

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
from typing import Literal

import pyro
import pyro.distributions as dist
import torch
from pydantic import Field, model_validator

from ppgen.data.core import DataInfo, Dataset
from ppgen.models.energy.core import base_rate_logits, bernoulli
from ppgen.models.energy.family import EnergyFamily, LogZMethod
from ppgen.models.energy.partition import LogZ
from ppgen.models.energy.rbm_core import RBMCore
from ppgen.models.energy.spec import AISSpec, InitSpec, PriorSpec, SamplingSpec
from ppgen.registry import register_family
from ppgen.spec import ModelSpec, Strict

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
