"""Gaussian mixture model with declared priors, fitted by MAP-EM, MAP (TraceEnum_ELBO) or NUTS.

    weights ~ Dirichlet(alpha, ..., alpha)
    locs[k, d] ~ Normal(m, s)
    scales[k, d] ~ LogNormal(log median, log_std)     (covariance: diag; spherical: one per component)
    corr_cholesky[k] ~ LKJCholesky(D, eta)            (covariance: full)
    z_n ~ Categorical(weights)
    x_n | z_n ~ Normal(locs[z_n], diag(scales[z_n]^2))  or MultivariateNormal with scale_tril
                                                         diag(scales[z_n]) corr_cholesky[z_n]

The assignment ``z`` is a sample site marked for parallel enumeration, so TraceEnum_ELBO sums it out
exactly (MAP with a Delta guide on the globals, routine ``enum_svi``) and ``infer_discrete`` recovers it
(temperature 0: the most probable component; 1: a posterior draw). :meth:`GMM.marginal_model` states the
same density with ``z`` summed out by ``MixtureSameFamily``, which is what NUTS samples (routine
``nuts``). Labels are made consistent across draws and chains by :func:`ppgen.models.bayesian.relabel.relabel` with the
component means and log scales as signature, so that R-hat is meaningful. :meth:`GMM.em_statistics` and
:meth:`GMM.em_maximize` are the E and M steps of the ``em`` routine (:mod:`ppgen.inference.em`), which
reaches the posterior mode of this model, with restarts fitted together.

Data are vectors: ``x`` of shape (N, D) (``toy1d``, ``toy2d``, an ``npz`` with (N, D)); images (an image
folder, an ``npz`` of (N, C, H, W)) are flattened to vectors of their C*H*W values (:meth:`GMM.data_view`,
said once on stderr). Labels, where a data set has them, are not used to fit, only to score clusterings in
``ppgen evaluate``.

References:
    McLachlan & Peel (2000), Finite Mixture Models, Wiley.
    Dempster, Laird & Rubin (1977), Maximum likelihood from incomplete data via the EM algorithm, JRSS B 39.
    Richardson & Green (1997), On Bayesian analysis of mixtures with an unknown number of components,
    JRSS B 59, 731-792 (priors; label switching).
    Lewandowski, Kurowicka & Joe (2009), Generating random correlation matrices based on vines and
    extended onion method, J. Multivariate Analysis 100 (the LKJ prior).
    Arthur & Vassilvitskii (2007), k-means++: the advantages of careful seeding, SODA (initialization).
    Obermeyer et al. (2019), Tensor variable elimination for plated factor graphs, ICML (TraceEnum_ELBO).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from typing import Any, Literal

import pyro
import pyro.distributions as dist
import torch
from pydantic import Field, model_validator
from pyro import poutine
from pyro.infer import infer_discrete
from torch.distributions import constraints

from ppgen.models.bayesian.base import BayesFamily, NormalPrior, ScalePrior, tensor_options
from ppgen.contracts import ChunkedEStep
from ppgen.data.core import DataInfo
from ppgen.models.bayesian.kmeans import kmeans
from ppgen.models.bayesian.mstep import CovariancePrior, covariance_mode, diag_gaussian_step, dirichlet_mode, full_gaussian_mean
from ppgen.models.bayesian.relabel import matched_accuracy
from ppgen.models.bayesian.stores import Site, Theta
from ppgen.registry import register_family
from ppgen.spec import ModelSpec, SpecError, Strict


class GMMPrior(Strict):
    """Priors: Dirichlet concentration of the weights (below 1 favours emptying unneeded components),
    Normal on every mean coordinate, LogNormal on every standard deviation, LKJ on correlations."""

    weights_concentration: float = Field(1.0, gt=0)
    loc: NormalPrior = Field(default_factory=NormalPrior)
    scale: ScalePrior = Field(default_factory=ScalePrior)
    lkj_concentration: float = Field(2.0, gt=0, description="eta of LKJCholesky (covariance: full); 1 is uniform")


class GMMSpec(ModelSpec):
    family: Literal["gmm"] = "gmm"
    components: int = Field(3, ge=1, le=200)
    covariance: Literal["diag", "spherical", "full"] = "diag"
    prior: GMMPrior = Field(default_factory=GMMPrior)

    @model_validator(mode="after")
    def _check(self) -> "GMMSpec":
        if self.data.name in ("mnist", "digits", "images") and self.data.binarize in (None, "dynamic", "static"):
            raise ValueError(
                f"a Gaussian mixture needs real-valued vectors; data {self.data.name!r} are images to binarize. "
                "Set data.binarize: none (the grey values, each image flattened to a vector), or use toy1d, toy2d "
                "or an npz of shape (N, D)"
            )
        return self


@register_family("gmm")
class GMM(BayesFamily, ChunkedEStep):
    """Gaussian mixture with Dirichlet, Normal, LogNormal (and LKJ) priors; MAP by enumeration or NUTS."""

    Spec = GMMSpec
    default_routine = "enum_svi"
    unit = "data point"

    @classmethod
    def data_view(cls, dataset: Dataset) -> Dataset:
        """The data as this family takes them: examples with more than one axis (images C x H x W) as
        vectors of their values, said once on stderr; vectors as they are. A coordinate with the same value
        in every training example (a blank border pixel) is refused: a Gaussian's scale there has no
        positive lower bound, and the density none above."""
        shape = tuple(dataset.train_x.shape[1:])
        flat_train = dataset.train_x.reshape(len(dataset.train_x), -1)
        constant = (flat_train == flat_train[:1]).all(0).nonzero().flatten().tolist() if len(flat_train) > 1 else []
        if constant:
            raise SpecError(
                f"data {dataset.name!r}: {len(constant)} of the {flat_train.shape[1]} values of an example are the same "
                f"in every training example (flattened positions {', '.join(map(str, constant[:8]))}"
                f"{', ...' if len(constant) > 8 else ''}); a Gaussian mixture's scale there shrinks to 0 and its "
                "density has no bound. Give data whose every value varies (crop constant borders, or drop those "
                "columns of an npz)")
        if len(shape) <= 1:
            return dataset
        if shape not in _FLATTENED:
            _FLATTENED.add(shape)
            print(f"ppgen: a Gaussian mixture models vectors: each example of shape {'x'.join(map(str, shape))} "
                  f"is flattened to a vector of its {math.prod(shape)} values", file=sys.stderr)
        flat = {f"{part}_x": getattr(dataset, f"{part}_x").reshape(-1, math.prod(shape)) for part in ("train", "val", "test")}
        return dataclasses.replace(dataset, **flat, _fixed={})

    def __init__(self, spec: GMMSpec, info: DataInfo) -> None:
        if len(info.event_shape) != 1:
            raise ValueError(
                f"a Gaussian mixture models vectors, but one example has shape {info.event_shape}; "
                "give data of shape (N, D)"
            )
        self.k = spec.components
        self.d = info.event_shape[0]
        self.cov = spec.covariance
        if self.cov == "full" and self.d < 2:
            raise ValueError("covariance 'full' needs at least 2 dimensions; use covariance: diag for 1-D data")
        self.p = spec.prior
        super().__init__(spec, info)

    # -- declared priors --------------------------------------------------------------------------------
    def build_sites(self) -> list[Site]:
        k, d = self.k, self.d
        sites = [
            Site("weights", (k,), constraints.simplex, ("component",), (0,)),
            Site("locs", (k, d), constraints.real, ("component", "dim"), (0,)),
        ]
        if self.cov == "spherical":
            sites.append(Site("scales", (k,), constraints.positive, ("component",), (0,)))
        else:
            sites.append(Site("scales", (k, d), constraints.positive, ("component", "dim"), (0,)))
        if self.cov == "full":
            sites.append(Site("corr_cholesky", (k, d, d), constraints.corr_cholesky, ("component", "dim", "dim_b"), (0,)))
        return sites

    def prior(self, name: str, like: torch.Tensor | None = None) -> dist.Distribution:
        p, k, d = self.p, self.k, self.d
        opts = tensor_options(like)
        if name == "weights":
            return dist.Dirichlet(torch.full((k,), p.weights_concentration, **opts))
        if name == "locs":
            return dist.Normal(torch.tensor(p.loc.mean, **opts), torch.tensor(p.loc.std, **opts)).expand((k, d)).to_event(2)
        if name == "scales":
            shape = (k,) if self.cov == "spherical" else (k, d)
            base = dist.LogNormal(torch.tensor(math.log(p.scale.median), **opts), torch.tensor(p.scale.log_std, **opts))
            return base.expand(shape).to_event(len(shape))
        if name == "corr_cholesky":
            return dist.LKJCholesky(d, torch.tensor(p.lkj_concentration, **opts)).expand((k,)).to_event(1)
        raise KeyError(name)

    def default_values(self) -> Theta:
        k, d = self.k, self.d
        # Distinct starting means, so that gradients can tell components apart before data arrive.
        offsets = torch.linspace(-1.0, 1.0, k)[:, None].expand(k, d) if k > 1 else torch.zeros(k, d)
        values = {
            "weights": torch.full((k,), 1.0 / k),
            "locs": self.p.loc.mean + offsets.clone(),
            "scales": torch.full((k,) if self.cov == "spherical" else (k, d), self.p.scale.median),
        }
        if self.cov == "full":
            values["corr_cholesky"] = torch.eye(d).expand(k, d, d).clone()
        return values

    # -- densities ----------------------------------------------------------------------------------------
    def _scale_tril(self, theta: Theta) -> torch.Tensor:
        return theta["scales"][..., :, None] * theta["corr_cholesky"]

    def component_log_prob(self, x: torch.Tensor, theta: Theta) -> torch.Tensor:
        """log N(x_n | component k of parameter value s): shape (S, N, K)."""
        xs = x[None, :, None, :]
        locs = theta["locs"][:, None]  # (S, 1, K, D)
        if self.cov == "full":
            return dist.MultivariateNormal(locs, scale_tril=self._scale_tril(theta)[:, None]).log_prob(xs)
        scales = theta["scales"][:, None]
        if self.cov == "spherical":
            scales = scales[..., None]
        return dist.Normal(locs, scales).log_prob(xs).sum(-1)

    def responsibilities(self, x: torch.Tensor, theta: Theta | None = None) -> torch.Tensor:
        """p(z_n = k | x_n, theta_s): shape (S, N, K)."""
        theta = self.theta() if theta is None else theta
        joint = torch.log(theta["weights"])[:, None, :] + self.component_log_prob(x, theta)
        return torch.softmax(joint, -1)

    def log_lik(self, x: torch.Tensor, theta: Theta) -> torch.Tensor:
        joint = torch.log(theta["weights"])[:, None, :] + self.component_log_prob(x, theta)
        return torch.logsumexp(joint, -1)

    def chunk_factor(self) -> int:
        return 4 * self.k * (self.d if self.cov == "full" else 1)

    def _component(self, theta: Theta, z: torch.Tensor | None = None) -> dist.Distribution:
        """The component distributions, all of them (batch K) or those that ``z`` picks."""
        locs, scales = theta["locs"], theta["scales"]
        if self.cov == "spherical":
            scales = scales[..., None].expand_as(locs)
        if self.cov == "full":
            tril = self._scale_tril(theta)
            return dist.MultivariateNormal(locs if z is None else locs[z], scale_tril=tril if z is None else tril[z])
        return dist.Normal(locs if z is None else locs[z], scales if z is None else scales[z]).to_event(1)

    # -- Pyro models (shared site names: the globals, "z", observed "x") ------------------------------------
    def model(self, x: torch.Tensor, y: torch.Tensor | None = None, n_total: int | None = None) -> torch.Tensor:
        """The generative model with the assignment ``z`` as an enumerable site. ``n_total`` scales the
        likelihood of a minibatch up to the whole training set."""
        theta = self.sample_globals()
        scale = 1.0 if n_total is None else n_total / x.shape[0]
        with pyro.plate("data", x.shape[0]), poutine.scale(scale=scale):
            z = pyro.sample("z", dist.Categorical(theta["weights"]), infer={"enumerate": "parallel"})
            return pyro.sample("x", self._component(theta, z), obs=x)

    def marginal_model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The same density with ``z`` summed out: what NUTS samples."""
        theta = self.sample_globals()
        with pyro.plate("data", x.shape[0]):
            mix = dist.MixtureSameFamily(dist.Categorical(theta["weights"]), self._component(theta))
            return pyro.sample("x", mix, obs=x)

    @torch.no_grad()
    def assignments(self, x: torch.Tensor, temperature: int = 0, theta: Theta | None = None) -> torch.Tensor:
        """Component of each point by ``infer_discrete`` on :meth:`model` with the globals fixed at
        ``theta`` (one value, no batch; default the point estimate): temperature 0 gives the most
        probable component (Viterbi-like MAP), 1 a draw from p(z | x, theta)."""
        values = {k: v.detach() for k, v in (theta or self.point.values()).items()}
        conditioned = poutine.condition(self.model, data=values)
        decoder = infer_discrete(conditioned, first_available_dim=-1 - self.max_plate_nesting, temperature=temperature)
        trace = poutine.trace(decoder).get_trace(x)
        return trace.nodes["z"]["value"]

    # -- sampling and predictive checks ----------------------------------------------------------------------
    @torch.no_grad()
    def simulate(self, theta: Theta, n: int) -> torch.Tensor:
        s = theta["weights"].shape[0]
        z = dist.Categorical(theta["weights"]).sample((n,)).T  # (S, n)
        picked = {k: torch.stack([v[i, z[i]] for i in range(s)]) for k, v in theta.items() if k != "weights"}
        return self._component(picked).sample()

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """``n`` points from the fitted mixture: from the point estimate, or with posterior draws each
        point from the parameters of a random draw (the posterior predictive)."""
        theta = self.theta()
        idx = torch.randint(theta["weights"].shape[0], (n,))
        one = {k: v[idx] for k, v in theta.items()}
        z = dist.Categorical(one["weights"]).sample()
        picked = {k: v[torch.arange(n), z] for k, v in one.items() if k != "weights"}
        return self._component(picked).sample()

    # -- relabelling, initialization ------------------------------------------------------------------------
    def signature(self, theta: Theta) -> torch.Tensor:
        scales = theta["scales"]
        log_scale = scales.log() if self.cov == "spherical" else scales.log().mean(-1)
        return torch.cat([theta["locs"], log_scale[..., None]], -1)

    @torch.no_grad()
    def init_values(self, x: torch.Tensor, generator: torch.Generator) -> Theta:
        """The best of ten k-means++ runs; weights, scales and correlations from the clusters; the means
        jittered by half a within-cluster standard deviation, so that chains start apart."""
        k = self.k
        x = x.double()
        centres, label = kmeans(x, k, generator)
        floor = 1e-3 * x.std(0).clamp_min(1e-6) + 1e-6
        counts = torch.bincount(label, minlength=k).double()
        scales = torch.stack([
            x[label == j].std(0, unbiased=False) if counts[j] > 1 else x.std(0) for j in range(k)
        ]).clamp_min(floor)
        centres = centres + 0.5 * scales * torch.randn(centres.shape, generator=generator, dtype=x.dtype)
        values: Theta = {
            "weights": ((counts + 1) / (counts + 1).sum()).float(),
            "locs": centres.float(),
            "scales": (scales.mean(-1) if self.cov == "spherical" else scales).float(),
        }
        if self.cov == "full":
            chols = []
            for j in range(k):
                xj = x[label == j]
                if xj.shape[0] > self.d:
                    corr = torch.corrcoef(xj.T)
                    corr = 0.9 * corr + 0.1 * torch.eye(self.d, dtype=x.dtype)  # keep it well inside the set
                    chols.append(torch.linalg.cholesky(corr))
                else:
                    chols.append(torch.eye(self.d, dtype=x.dtype))
            values["corr_cholesky"] = torch.stack(chols).float()
        return values

    # -- EM (routine em; see ppgen.inference.em_algorithm for the M-steps) ------------------------------------
    def em_check(self, flat: bool) -> None:
        """The declared priors have a posterior mode (Dirichlet and LKJ concentrations at least 1)."""
        if flat:
            return
        if self.p.weights_concentration < 1:
            raise SpecError(
                f"routine em: prior.weights_concentration is {self.p.weights_concentration:g}; below 1 the posterior "
                "density grows without bound as a weight goes to 0, so there is no posterior mode for EM to reach. "
                "Set it to 1 or more, or sample the posterior with --inference nuts"
            )
        if self.cov == "full" and self.p.lkj_concentration < 1:
            raise SpecError(
                f"routine em: prior.lkj_concentration is {self.p.lkj_concentration:g}; below 1 the LKJ density grows "
                "without bound as a correlation approaches +-1, so a component with little data has no mode. "
                "Set it to 1 or more, or sample the posterior with --inference nuts"
            )

    def em_chunk(self, s: int) -> int:
        """Points per chunk of the E-step for S parameter values: temporaries (S, K, D, chunk) of about
        2^17 numbers (1 MB), the fastest measured."""
        return max(1, 2**17 // (s * self.k * self.d))

    def em_statistics(self, x: torch.Tensor, theta: Theta, *, method: str = "auto") -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """E-step at S parameter values: the responsibilities r (S, K, N) of the components and their
        weighted sums about the current means, ``count`` = sum_n r (S, K), ``first`` = sum_n r (x_n - mu_k)
        (S, K, D) and ``second`` = sum_n r (x_n - mu_k)^2 (S, K, D), or the outer products (S, K, D, D) for
        full covariance; and log p(x | theta_s) summed over the points, (S,). The densities are
        :meth:`component_log_prob`'s (the tests check), computed from the same differences, laid out
        (S, K, D, N) so that every operation runs along the points."""
        x_t = x.to(theta["locs"].dtype).T.contiguous()  # (D, N)
        diff = x_t - theta["locs"][..., None]  # (S, K, D, N)
        if self.cov == "full":
            tril = self._scale_tril(theta)
            eye = torch.eye(self.d, dtype=tril.dtype, device=tril.device).expand_as(tril)
            z = torch.linalg.solve_triangular(tril, eye, upper=False) @ diff  # L^-1 (x - mu)
            half_logdet = torch.log(tril.diagonal(dim1=-2, dim2=-1)).sum(-1)
            scale = 0.5
        elif self.cov == "diag":
            z = diff / theta["scales"][..., None]
            half_logdet = torch.log(theta["scales"]).sum(-1)
            scale = 0.5
        else:
            z = diff.clone()
            half_logdet = self.d * torch.log(theta["scales"])
            scale = 0.5 / theta["scales"][..., None] ** 2
        const = torch.log(theta["weights"]) - half_logdet - 0.5 * self.d * math.log(2 * math.pi)
        # joint = const - scale |z|^2, then the responsibilities, in place
        joint = z.square_().sum(-2).mul_(-scale).add_(const[..., None])  # (S, K, N)
        top = joint.amax(1, keepdim=True)
        r = joint.sub_(top).exp_()
        total = r.sum(1, keepdim=True)
        r.div_(total)  # (S, K, N)
        ll = (top + torch.log(total)).sum((1, 2))
        rd = diff * r[:, :, None, :]
        second = rd @ diff.mT if self.cov == "full" else (rd * diff).sum(-1)
        return {"count": r.sum(-1), "first": rd.sum(-1), "second": second}, ll

    def em_maximize(self, stats: dict[str, torch.Tensor], theta: Theta, *, flat: bool) -> tuple[Theta, torch.Tensor]:
        """M-step: the weights' Dirichlet mode; each mean given its old covariance (precision-weighted with
        the Normal prior); then the covariance given the new mean (LogNormal scales: a Newton solve per
        scale; full: Newton over the Cholesky factor with the LKJ prior). Flat priors: the maximum-likelihood
        updates. See :mod:`ppgen.inference.em_algorithm`."""

        p = self.p
        loc_prior = None if flat else (p.loc.mean, p.loc.std)
        scale_prior = None if flat else (math.log(p.scale.median), p.scale.log_std)
        count, first = stats["count"], stats["first"]
        out = {"weights": dirichlet_mode(count, 1.0 if flat else p.weights_concentration, theta["weights"])}
        if self.cov != "full":
            locs, scales, bad = diag_gaussian_step(count, first, stats["second"], theta["locs"], theta["scales"],
                                                   loc_prior, scale_prior, spherical=self.cov == "spherical")
            out.update(locs=locs, scales=scales)
            return out, bad
        tril = self._scale_tril(theta)
        delta = full_gaussian_mean(count, first, theta["locs"], tril @ tril.mT, loc_prior)
        cross = first[..., :, None] * delta[..., None, :]
        scatter = stats["second"] - cross - cross.mT + count[..., None, None] * delta[..., :, None] * delta[..., None, :]
        scatter = 0.5 * (scatter + scatter.mT)
        s, k, d = delta.shape
        if flat:
            new, info = torch.linalg.cholesky_ex(scatter / count[..., None, None])
            bad = ((info != 0) | (count <= 0)).any(-1) | ~torch.isfinite(new).flatten(1).all(-1)
            new = torch.where(bad[:, None, None, None], tril, new)
        else:
            prior = CovariancePrior(math.log(p.scale.median), p.scale.log_std, p.lkj_concentration)
            new = covariance_mode(scatter.reshape(-1, d, d), count.reshape(-1), tril.reshape(-1, d, d), prior)
            new = new.reshape(s, k, d, d)
            bad = torch.zeros(s, dtype=torch.bool, device=new.device)
        scales = torch.linalg.vector_norm(new, dim=-1)
        out.update(locs=theta["locs"] + delta, scales=scales, corr_cholesky=new / scales[..., None])
        return out, bad

    # -- reporting -------------------------------------------------------------------------------------------
    def posterior_variables(self, theta: Theta) -> tuple[dict[str, torch.Tensor], dict[str, list[str]]]:
        """The sites, with correlations (the strictly lower triangle of each correlation matrix) in place
        of their Cholesky factors, whose fixed entries have no R-hat."""
        shown = {k: v for k, v in theta.items() if k != "corr_cholesky"}
        dims = {s.name: list(s.dims) for s in self.sites if s.name != "corr_cholesky"}
        if "corr_cholesky" in theta:
            l = theta["corr_cholesky"]
            corr = l @ l.transpose(-1, -2)
            i, j = torch.tril_indices(self.d, self.d, -1)
            shown["correlations"] = corr[..., i, j]
            dims["correlations"] = ["component", "pair"]
        return shown, dims

    def pair_variables(self) -> tuple[list[str], dict[str, Any]]:
        comps = list(range(min(self.k, 2)))
        return ["weights", "locs"], {"component": comps, "dim": [0]}

    @torch.no_grad()
    def evaluate_extra(self, x: torch.Tensor, y: torch.Tensor | None) -> dict[str, float]:
        """With labels: how well the most probable components match them, under the best one-to-one
        matching of components to labels (accuracy) and by the adjusted Rand index."""
        if y is None or y.dim() != 1:
            return {}
        from sklearn.metrics import adjusted_rand_score

        resp = self.responsibilities(x, self.relabelled_theta()).mean(0)
        pred = resp.argmax(-1)
        return {"assignment_accuracy": matched_accuracy(pred, y), "adjusted_rand_index": float(adjusted_rand_score(y.numpy(), pred.numpy()))}


#: Example shapes already said to be flattened in this process.
_FLATTENED: set[tuple[int, ...]] = set()
