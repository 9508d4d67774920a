"""Deep belief nets: RBMs stacked by greedy layer-wise training (``inference/layerwise.yaml``).

With layers v = h0, h1, ..., hL, the generative model is an RBM over (h_{L-1}, h_L) at the top and
directed sigmoid layers below it: p(v, h1, ..., h_{L-1}) = p_top(h_{L-1}) prod_l p(h_{l-1} | h_l), where
each p(h_{l-1} | h_l) uses the generative (downward) direction of RBM l. Generation runs Gibbs sampling
in the top RBM and then one top-down pass. Recognition uses the same weights upwards:
q(h_l | h_{l-1}) = sigmoid(c_l + h_{l-1} W_l), factorial.

Likelihood: the variational lower bound used in the literature (Hinton, Osindero & Teh 2006;
Salakhutdinov & Murray 2008),
    log p(v) >= E_q[ sum_l log p(h_{l-1} | h_l) - F_top(h_{L-1}) - log q(h_1..h_{L-1} | v) ] - log Z_top,
estimated with ``bound.samples`` draws from q per example, and log Z_top by AIS (exact when the top RBM
has a side of at most 20 units). ``ppgen evaluate`` reports minus this bound as ``test_nll_nats`` (so
it is an upper bound on the NLL) and the importance-weighted estimate from the same draws as
``test_nll_iw_nats``. A one-layer DBN is an RBM and its log p(v) is exact given log Z.

As a Pyro model, ``model(x)`` samples h_{L-1} with -F_top as a factor (log Z_top left out) and the
directed layers top-down, observing x; ``guide(x)`` is the recognition pass, with the same site names.

References:
    Hinton, Osindero & Teh (2006), A Fast Learning Algorithm for Deep Belief Nets, Neural Comp. 18.
    Hinton & Salakhutdinov (2006), Reducing the Dimensionality of Data with Neural Networks, Science 313.
    Bengio, Lamblin, Popovici & Larochelle (2007), Greedy Layer-Wise Training of Deep Networks, NIPS.
    Salakhutdinov & Murray (2008), On the Quantitative Analysis of Deep Belief Networks, ICML.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Literal

import pyro
import pyro.distributions as dist
import torch
from pydantic import Field, model_validator
from torch import nn

from ppgen.data.core import DataInfo, Dataset
from ppgen.models.energy.core import base_rate_logits, bernoulli
from ppgen.models.energy.family import EnergyEvaluateOptions, EnergyFamily, LogZMethod
from ppgen.models.energy.partition import LogZ, log_mean_exp
from ppgen.models.energy.rbm_core import RBMCore
from ppgen.models.energy.spec import AISSpec, InitSpec, PriorSpec, SamplingSpec
from ppgen.models.energy.rbm import GaussianVisibleSpec
from ppgen.registry import register_family
from ppgen.spec import ModelSpec, Strict


class BoundSpec(Strict):
    """Draws from the recognition model per test example for the variational bound."""

    samples: int = Field(100, ge=1, le=100_000)


class DBNSpec(ModelSpec):
    family: Literal["dbn"] = "dbn"
    hidden: list[int] = Field(default_factory=lambda: [500, 500, 2000], min_length=1, max_length=8,
                              description="hidden layer sizes, bottom first; the last two layers form the top RBM")
    visible: Literal["bernoulli", "gaussian"] = "bernoulli"
    gaussian: GaussianVisibleSpec = Field(default_factory=GaussianVisibleSpec)
    init: InitSpec = Field(default_factory=InitSpec)
    prior: PriorSpec = Field(default_factory=PriorSpec)
    ais: AISSpec = Field(default_factory=AISSpec)
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    bound: BoundSpec = Field(default_factory=BoundSpec)

    @model_validator(mode="after")
    def _check(self) -> "DBNSpec":
        bad = [h for h in self.hidden if not 1 <= h <= 100_000]
        if bad:
            raise ValueError(f"hidden layer sizes must be between 1 and 100000, got {bad}")
        if self.visible == "bernoulli" and self.data.binarize == "none":
            raise ValueError("visible 'bernoulli' needs binary data: set data.binarize to dynamic or static, or visible: gaussian")
        if self.visible == "bernoulli" and self.data.name in ("toy1d", "toy2d"):
            raise ValueError("visible 'bernoulli' needs binary data; use visible: gaussian for toy data")
        if self.visible == "gaussian" and self.data.binarize in ("dynamic", "static"):
            raise ValueError("visible 'gaussian' models real values: set data.binarize: none")
        return self


class DBNEvaluateOptions(EnergyEvaluateOptions):
    """The energy families' options, and ``bound_samples``: draws for the variational bound (default:
    the spec's ``bound.samples``)."""

    bound_samples: int | None = Field(None, ge=1, le=100_000)


@register_family("dbn")
class DBN(EnergyFamily):
    """A deep belief net: directed sigmoid layers under an RBM."""

    Spec = DBNSpec
    EvaluateOptions = DBNEvaluateOptions
    default_routine = "layerwise"
    layers: nn.ModuleList

    def __init__(self, spec: DBNSpec, info: DataInfo) -> None:
        super().__init__(spec, info)
        self.gaussian = spec.visible == "gaussian"
        if self.gaussian and info.kind != "continuous":
            raise ValueError("visible 'gaussian' needs real-valued data: set data.binarize: none")
        if not self.gaussian and info.kind != "binary":
            raise ValueError("visible 'bernoulli' needs binary data: set data.binarize to 'dynamic' or 'static'")
        sizes = [info.dim, *spec.hidden]
        self.layers = nn.ModuleList(
            RBMCore(
                sizes[i],
                sizes[i + 1],
                gaussian=self.gaussian and i == 0,
                weight_std=spec.init.weight_std,
                hidden_bias=spec.init.hidden_bias,
                sigma=spec.gaussian.sigma,
                learn_sigma=spec.gaussian.learn_sigma,
                weight_decay=spec.prior.weight_decay,
            )
            for i in range(len(spec.hidden))
        )
        self.standardize = spec.gaussian.standardize
        self._stash: list[tuple[torch.Tensor, torch.Tensor]] = []

    @property
    def top(self) -> RBMCore:
        return self.layers[-1]

    @property
    def depth(self) -> int:
        return len(self.layers)

    def first_layer(self) -> RBMCore:
        return self.layers[0]

    @torch.no_grad()
    def up(self, v: torch.Tensor, upto: int, mean: bool = True) -> torch.Tensor:
        """The recognition pass through the first ``upto`` layers: probabilities (``mean``) or draws."""
        h = v
        for layer in self.layers[:upto]:
            p = torch.sigmoid(layer.hidden_logits(h))
            h = p if mean else bernoulli(p)
        return h

    def down(self, h: torch.Tensor, start: int, mean: bool = False) -> list[torch.Tensor]:
        """The generative pass from the states ``h`` of layer ``start`` (h_start) to v; returns
        [v, h1, ..., h_start-1]; intermediate layers are drawn, the visible layer is its mean if ``mean``."""
        out: list[torch.Tensor] = []
        for i in range(start - 1, -1, -1):
            x, m = self.layers[i].sample_v(h)
            h = m if (mean and i == 0) else x
            out.append(h)
        return out[::-1]

    # -- Pyro -------------------------------------------------------------------------------------------
    def weight_priors(self, batch: int) -> None:
        for i, layer in enumerate(self.layers):
            if layer.weight_decay > 0:
                prior = dist.Normal(torch.zeros_like(layer.W), layer.weight_decay**-0.5).to_event(2)
                with pyro.poutine.scale(scale=float(batch)):
                    pyro.sample(f"W{i + 1}", prior, obs=layer.W)

    def _visible_dist(self, i: int, h: torch.Tensor) -> dist.Distribution:
        layer = self.layers[i]
        if layer.gaussian:
            return dist.Normal(layer.visible_param(h), layer.sigma.expand(h.shape[0], -1)).to_event(1)
        return dist.Bernoulli(logits=layer.visible_param(h), validate_args=False).to_event(1)

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """p(v, h1..h_{L-1}) up to 1/Z_top: h_{L-1} with the top RBM's -F as a factor, then top-down."""
        v = self.to_visible(x)
        B, L = v.shape[0], self.depth
        self.weight_priors(B)
        with pyro.plate("data", B):
            if L == 1:
                pyro.factor("x", -self.top.free_energy(v))
                return
            n = self.top.n_visible
            h = pyro.sample(f"h{L - 1}", dist.Bernoulli(logits=v.new_zeros(B, n)).to_event(1))
            pyro.factor("top", -self.top.free_energy(h) + n * math.log(2))  # the uniform base cancels
            for i in range(L - 2, 0, -1):
                h = pyro.sample(f"h{i}", self._visible_dist(i, h))
            pyro.sample("x", self._visible_dist(0, h), obs=v)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """The recognition pass: q(h_l | h_{l-1}) = Bernoulli(sigmoid(c_l + h_{l-1} W_l))."""
        v = self.to_visible(x)
        with pyro.plate("data", v.shape[0]):
            h = v
            for i in range(1, self.depth):
                h = pyro.sample(f"h{i}", dist.Bernoulli(logits=self.layers[i - 1].hidden_logits(h)).to_event(1))

    def joint_model(self, n: int | None = None) -> None:
        """The joint over every layer: the top RBM's Boltzmann distribution and the directed layers."""
        L, top = self.depth, self.top
        shape = (n,) if n else ()
        names = ["v"] + [f"h{i}" for i in range(1, L + 1)]
        with pyro.plate("chains", n) if n else contextlib.nullcontext():
            if self.gaussian and L == 1:
                tv = pyro.sample("v", dist.Normal(top.b.expand(*shape, -1), top.sigma.expand(*shape, -1)).to_event(1))
            else:
                tv = pyro.sample(names[L - 1], dist.Bernoulli(logits=top.b.new_zeros(*shape, top.n_visible)).to_event(1))
            th = pyro.sample(names[L], dist.Bernoulli(logits=top.c.new_zeros(*shape, top.n_hidden)).to_event(1))
            rest = -top.energy(tv.reshape(-1, top.n_visible), th.reshape(-1, top.n_hidden)).reshape(shape)
            if top.gaussian:
                rest = rest + (((tv - top.b) / top.sigma) ** 2).sum(-1) / 2
            pyro.factor("energy", rest)
            h = tv
            for i in range(L - 2, -1, -1):
                layer = self.layers[i]
                logits = layer.visible_param(h.reshape(-1, layer.n_hidden)).reshape(*shape, layer.n_visible)
                if layer.gaussian:
                    d: dist.Distribution = dist.Normal(logits, layer.sigma.expand_as(logits)).to_event(1)
                else:
                    d = dist.Bernoulli(logits=logits).to_event(1)
                h = pyro.sample(names[i], d)

    # -- Gibbs -------------------------------------------------------------------------------------------
    def _names(self) -> list[str]:
        return ["v"] + [f"h{i}" for i in range(1, self.depth + 1)]

    def _complete(self, top_v: torch.Tensor, top_h: torch.Tensor, mean_v: torch.Tensor | None) -> dict[str, torch.Tensor]:
        names, L = self._names(), self.depth
        sites = {names[L - 1]: top_v, names[L]: top_h}
        if L > 1:
            lower = self.down(top_v, L - 1)
            for i, h in enumerate(lower):
                sites[names[i]] = h
            sites["_mean"] = self.layers[0].visible_mean(sites["h1"])
        elif mean_v is not None:
            sites["_mean"] = mean_v
        return sites

    def gibbs_init(self, n: int) -> dict[str, torch.Tensor]:
        top = self.top
        if top.gaussian:
            tv = 2 * torch.randn(n, top.n_visible, device=top.W.device, dtype=top.W.dtype)
        else:
            tv = bernoulli(top.W.new_full((n, top.n_visible), 0.5))
        th, _ = top.sample_h(tv)
        return self._complete(tv, th, None)

    def gibbs_start(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        tv = self.up(self.to_visible(x), self.depth - 1, mean=False)
        th, _ = self.top.sample_h(tv)
        return self._complete(tv, th, None)

    def gibbs_sweep(self, sites: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One block-Gibbs sweep of the top RBM, then the directed layers drawn afresh top-down (their
        exact conditional given the top), which leaves the DBN's joint invariant."""
        names, L = self._names(), self.depth
        th, _ = self.top.sample_h(sites[names[L - 1]])
        tv, mean = self.top.sample_v(th)
        return self._complete(tv, th, mean)

    @torch.no_grad()
    def chain_statistics(self, sites: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        names, L = self._names(), self.depth
        tv, th, v = sites[names[L - 1]], sites[names[L]], sites["v"]
        if v.dim() == 1:
            tv, th, v = tv.unsqueeze(0), th.unsqueeze(0), v.unsqueeze(0)
        return {
            "free_energy": self.top.free_energy(tv),
            "energy": self.top.energy(tv, th),
            "mean_visible": v.mean(-1),
            "mean_hidden": th.mean(-1),
        }

    # -- likelihood ---------------------------------------------------------------------------------------
    def log_partition(self, data: Dataset | None = None, runs: int | None = None, steps: int | None = None,
                      method: LogZMethod = "auto") -> LogZ:
        """log Z of the top RBM: exact for a side of at most 20 units, else AIS from the base rate of the
        training data passed up the recognition weights (the first 10,000 examples)."""
        top = self.top
        if method == "exact" or (method == "auto" and top.can_enumerate()):
            return LogZ(top.log_z_exact(), 0.0, "exact")
        base = None
        if not top.gaussian:
            if data is not None:
                x = self.to_visible(data.split("train")[0][:10_000].to(self.device))
                base = base_rate_logits(self.up(x, self.depth - 1, mean=True))
            else:
                base = top.b.detach().clone()
        return top.ais_log_z(runs or self.spec.ais.runs, steps or self.spec.ais.steps, base_logits=base)

    def evaluation_setup(self, data: Dataset, ais_runs: int | None = None, ais_steps: int | None = None,
                         log_z_method: LogZMethod = "auto", bound_samples: int | None = None) -> dict[str, Any]:
        self._stash = []
        out = super().evaluation_setup(data, ais_runs=ais_runs, ais_steps=ais_steps, log_z_method=log_z_method)
        out["test_nll_bound"] = "variational lower bound on log p(v) (ELBO)" if self.depth > 1 else "exact given log Z"
        return out

    def log_joint(self, hs: list[torch.Tensor]) -> torch.Tensor:
        """log p*(v, h1, ..., h_{L-1}) per row for hs = [v, h1, ..., h_{L-1}]: the directed layers' log
        conditionals plus -F_top(h_{L-1}); p* leaves out 1/Z_top."""
        L = self.depth
        out = -self.top.free_energy(hs[L - 1])
        for i in range(L - 1):
            out = out + self._visible_dist(i, hs[i + 1]).log_prob(hs[i])
        return out

    def recognize(self, v: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """A draw [v, h1, ..., h_{L-1}] from q(. | v) and log q of it, per row."""
        hs, log_q = [v], torch.zeros(v.shape[0], device=v.device, dtype=v.dtype)
        for i in range(1, self.depth):
            logits = self.layers[i - 1].hidden_logits(hs[-1])
            h = bernoulli(torch.sigmoid(logits))
            log_q = log_q + dist.Bernoulli(logits=logits, validate_args=False).log_prob(h).sum(-1)
            hs.append(h)
        return hs, log_q

    @torch.no_grad()
    def log_weights(self, v: torch.Tensor, samples: int) -> torch.Tensor:
        """log p*(v, h) - log q(h | v) for ``samples`` draws h = (h1..h_{L-1}) ~ q per example, shape
        (samples, B); their mean is the bound + log Z_top, their log-mean-exp the importance-weighted
        estimate + log Z_top."""
        B = v.shape[0]
        out = torch.empty(samples, B, dtype=torch.float64, device=v.device)
        per = max(1, 20_000 // max(B, 1))  # rows per chunk, to bound memory
        for start in range(0, samples, per):
            m = min(per, samples - start)
            hs, log_q = self.recognize(v.repeat(m, 1))
            out[start : start + m] = (self.log_joint(hs) - log_q).double().view(m, B)
        return out

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, k: int = 1000, y: torch.Tensor | None = None,
                       ais_runs: int | None = None, ais_steps: int | None = None, log_z_method: LogZMethod = "auto",
                       bound_samples: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The variational lower bound on log p(x) per example (exact for one layer) and the Monte Carlo
        standard error of its estimate from ``bound.samples`` draws (``bound_samples=`` overrides)."""
        lz = self.current_log_z()
        v = self.to_visible(x)
        jac = self.x_std.log().sum().double() if self.gaussian else 0.0
        if self.depth == 1:
            ll = -self.top.free_energy(v).double() - lz.value - jac
            self._stash.append((ll.cpu(), torch.zeros_like(ll).cpu()))
            return ll, torch.zeros_like(ll)
        s = bound_samples or self.spec.bound.samples
        log_w = self.log_weights(v, s)
        elbo = log_w.mean(0) - lz.value - jac
        se = log_w.std(0) / math.sqrt(s) if s > 1 else torch.zeros_like(elbo)
        iw, _ = log_mean_exp(log_w, 0)
        self._stash.append(((iw - lz.value - jac).cpu(), se.cpu()))
        return elbo, se

    @torch.no_grad()
    def evaluate_extra(self, x: torch.Tensor, y: torch.Tensor | None) -> dict[str, float]:
        """The importance-weighted estimate -log mean_s p*(x, h_s)/q(h_s | x) + log Z from the same draws
        (tighter than the bound), the first layer's reconstruction error, and the Monte Carlo error of
        the test NLL (per-example errors averaged, log Z's added)."""
        out: dict[str, float] = {}
        if self._stash:
            iw = torch.cat([a for a, _ in self._stash])
            se = torch.cat([b for _, b in self._stash])
            out["test_nll_iw_nats"] = float(-iw.mean())
            lz_se = self._log_z.stderr if self._log_z is not None else 0.0
            out["test_nll_mc_stderr"] = math.sqrt(float(se.pow(2).mean()) / se.numel() + lz_se**2)
        first = self.layers[0].validation_metrics(self.to_visible(x))
        out["test_recon_error"] = first["recon_error"]
        return out

    def filter_weights(self) -> torch.Tensor:
        return self.layers[0].W
