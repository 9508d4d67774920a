"""Hidden Markov model with declared priors: discrete states, Gaussian or categorical emissions.

    initial ~ Dirichlet(a_0, ..., a_0)
    transition[k] ~ Dirichlet(a + kappa e_k)        (kappa > 0: a "sticky" prior, Fox et al. 2011)
    Gaussian:     locs[k, d] ~ Normal(m, s),  scales[k, d] ~ LogNormal(log median, log_std)
    categorical:  emission_probs[k] ~ Dirichlet(b, ..., b)
    z_1 ~ Categorical(initial),  z_t | z_{t-1} ~ Categorical(transition[z_{t-1}])
    x_t | z_t ~ Normal(locs[z_t], scales[z_t])  or  Categorical(emission_probs[z_t])

Data are sequences ``x`` of shape (N, T, D) (see :mod:`ppgen.data.sequences`); one example is one
sequence, so ``log_likelihood`` is log p(x_1..T) per sequence, computed exactly by the forward algorithm
in log space (Rabiner 1989, eq. 19-21); ``ppgen evaluate`` states ``nll_unit`` and adds the per-step
number ``test_nll_per_step``.

:meth:`HMM.model` writes the states as sample sites in a ``pyro.markov`` chain marked for parallel
enumeration, so TraceEnum_ELBO sums them out (MAP, routine ``enum_svi``) and ``infer_discrete`` decodes
them: temperature 0 is Viterbi decoding (the most probable path, max-product), temperature 1 draws a path
from p(z | x) (forward-filtering backward-sampling). :meth:`HMM.state_marginals` gives p(z_t | x) by
forward-backward. :meth:`HMM.marginal_model` states the forward-algorithm likelihood as one factor per
sequence: what NUTS samples (routine ``nuts``); states are relabelled across draws by their emission
parameters (:func:`ppgen.models.bayesian.relabel.relabel`), rows and columns of the transition matrix alike.
:meth:`HMM.em_statistics` (forward-backward, :mod:`ppgen.models.bayesian.forward_backward`) and
:meth:`HMM.em_maximize` are the E and M steps of the ``em`` routine (:mod:`ppgen.inference.em`): Baum-Welch with
the declared priors.

References:
    Baum, Petrie, Soules & Weiss (1970), A maximization technique occurring in the statistical analysis of
    probabilistic functions of Markov chains, Ann. Math. Statist. 41, 164-171.
    Viterbi (1967), Error bounds for convolutional codes and an asymptotically optimum decoding
    algorithm, IEEE Trans. Information Theory 13, 260-269.
    Rabiner (1989), A tutorial on hidden Markov models and selected applications in speech recognition,
    Proc. IEEE 77, 257-286.
    Scott (2002), Bayesian methods for hidden Markov models, JASA 97, 337-351.
    Fox, Sudderth, Jordan & Willsky (2011), A sticky HDP-HMM with application to speaker diarization,
    Ann. Appl. Stat. 5, 1020-1056.
"""

from __future__ import annotations

import math
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import infer_discrete
from torch.distributions import constraints

from ppgen.models.bayesian.base import BayesFamily, tensor_options
from ppgen.contracts import ChunkedEStep, ForwardBackward
from ppgen.data.core import DataInfo
from ppgen.models.bayesian.forward_backward import forward_backward, forward_scan, smoothed_marginals, viterbi_path
from ppgen.models.bayesian.hmm_spec import HMMSpec
from ppgen.models.bayesian.kmeans import kmeans
from ppgen.models.bayesian.mstep import diag_gaussian_step, dirichlet_mode
from ppgen.models.bayesian.relabel import matched_accuracy
from ppgen.models.bayesian.stores import Site, Theta
from ppgen.registry import register_family
from ppgen.spec import SpecError

_ROWS = constraints.independent(constraints.simplex, 1)


@register_family("hmm")
class HMM(BayesFamily, ChunkedEStep, ForwardBackward):
    """Hidden Markov model with Dirichlet transition rows and Gaussian or categorical emissions."""

    Spec = HMMSpec
    default_routine = "enum_svi"

    def __init__(self, spec: HMMSpec, info: DataInfo) -> None:
        shape = tuple(info.event_shape)
        if len(shape) == 1:  # (N, T): a scalar series
            self.t, self.d = shape[0], 1
        elif len(shape) == 2:
            self.t, self.d = shape
        elif len(shape) == 3 and shape[0] == 1:  # an npz's (N, T, D) arrives as (N, 1, T, D)
            self.t, self.d = shape[1], shape[2]
        else:
            raise ValueError(f"an HMM models sequences (N, T, D) or (N, T), but one example has shape {shape}")
        self.event_shape = shape
        self.k = spec.states
        self.kind = spec.emission.kind
        self.v = spec.emission.symbols or 0
        if self.kind == "categorical" and self.d != 1:
            raise ValueError(f"categorical emissions need one symbol per step (D = 1), got D = {self.d}")
        self.p = spec.prior
        self.unit = f"sequence of {self.t} steps"
        super().__init__(spec, info)

    # -- declared priors --------------------------------------------------------------------------------
    def build_sites(self) -> list[Site]:
        k = self.k
        sites = [
            Site("initial", (k,), constraints.simplex, ("state",), (0,)),
            Site("transition", (k, k), _ROWS, ("state", "state_to"), (0, 1)),
        ]
        if self.kind == "gaussian":
            sites += [Site("locs", (k, self.d), constraints.real, ("state", "dim"), (0,)),
                      Site("scales", (k, self.d), constraints.positive, ("state", "dim"), (0,))]
        else:
            sites.append(Site("emission_probs", (k, self.v), _ROWS, ("state", "symbol"), (0,)))
        return sites

    def prior(self, name: str, like: torch.Tensor | None = None) -> dist.Distribution:
        p, k = self.p, self.k
        opts = tensor_options(like)
        if name == "initial":
            return dist.Dirichlet(torch.full((k,), p.initial_concentration, **opts))
        if name == "transition":
            return dist.Dirichlet(self._transition_concentration(opts)).to_event(1)
        if name == "locs":
            return dist.Normal(torch.tensor(p.loc.mean, **opts), torch.tensor(p.loc.std, **opts)).expand((k, self.d)).to_event(2)
        if name == "scales":
            base = dist.LogNormal(torch.tensor(math.log(p.scale.median), **opts), torch.tensor(p.scale.log_std, **opts))
            return base.expand((k, self.d)).to_event(2)
        if name == "emission_probs":
            return dist.Dirichlet(torch.full((k, self.v), p.emission_concentration, **opts)).to_event(1)
        raise KeyError(name)

    def _transition_concentration(self, opts: dict[str, Any]) -> torch.Tensor:
        k = self.k
        return torch.full((k, k), self.p.transition_concentration, **opts) + self.p.stickiness * torch.eye(k, **opts)

    def default_values(self) -> Theta:
        k = self.k
        values = {"initial": torch.full((k,), 1.0 / k), "transition": _sticky(k, 0.8)}
        if self.kind == "gaussian":
            offsets = torch.linspace(-1.0, 1.0, k)[:, None].expand(k, self.d) if k > 1 else torch.zeros(k, self.d)
            values["locs"] = self.p.loc.mean + offsets.clone()
            values["scales"] = torch.full((k, self.d), self.p.scale.median)
        else:
            values["emission_probs"] = torch.full((k, self.v), 1.0 / self.v)
        return values

    def _seq(self, x: torch.Tensor) -> torch.Tensor:
        """Examples in the data's layout (..., *event_shape) viewed as (..., T, D)."""
        return x.reshape(*x.shape[: x.dim() - len(self.event_shape)], self.t, self.d)

    # -- densities: emissions, the forward algorithm, state marginals, Viterbi -----------------------------
    def emission_log_prob(self, x: torch.Tensor, theta: Theta) -> torch.Tensor:
        """log p(x_nt | z_t = k, theta_s): shape (S, N, T, K)."""
        x = self._seq(x)
        if self.kind == "gaussian":
            xs = x[None, :, :, None, :]  # (1, N, T, 1, D)
            locs, scales = theta["locs"][:, None, None], theta["scales"][:, None, None]  # (S, 1, 1, K, D)
            return dist.Normal(locs, scales).log_prob(xs).sum(-1)
        symbols = x[..., 0].long()  # (N, T)
        if symbols.numel() and (int(symbols.min()) < 0 or int(symbols.max()) >= self.v or not torch.equal(symbols.to(x.dtype), x[..., 0])):
            raise SpecError(
                f"categorical emissions over {self.v} symbols need integer data in 0..{self.v - 1}, got values in "
                f"{float(x.min()):g}..{float(x.max()):g}; set emission.symbols or recode the data"
            )
        logp = torch.log(theta["emission_probs"])  # (S, K, V)
        return logp[:, :, symbols].permute(0, 2, 3, 1)  # (S, N, T, K)

    def log_lik(self, x: torch.Tensor, theta: Theta) -> torch.Tensor:
        """log p(x_1..T | theta_s) per sequence by the forward algorithm: (S, N).

        The recursion alpha_t = (alpha_{t-1} A) * e_t is a product of the matrices M_t = A diag(e_t);
        products are associative, so they are multiplied pairwise in log space, ceil(log2 T) rounds of
        batched operations instead of T sequential ones (the parallel-scan form of the forward
        algorithm) -- the same number, much less Python overhead under NUTS's many gradient calls."""
        e = self.emission_log_prob(x, theta)  # (S, N, T, K)
        return forward_scan(e, torch.log(theta["initial"]), torch.log(theta["transition"]))

    def chunk_factor(self) -> int:
        return 2 * self.k**3

    def state_marginals(self, x: torch.Tensor, theta: Theta | None = None) -> torch.Tensor:
        """p(z_t = k | x_1..T, theta_s) by forward-backward in log space (:func:`smoothed_marginals`): shape
        (S, N, T, K)."""
        theta = self.theta() if theta is None else theta
        e = self.emission_log_prob(x, theta)
        return smoothed_marginals(e, torch.log(theta["initial"]), torch.log(theta["transition"]))

    def viterbi_dp(self, x: torch.Tensor, theta: Theta | None = None) -> torch.Tensor:
        """The most probable path of each sequence by max-product dynamic programming (:func:`viterbi_path`),
        for one parameter value (default: the point estimate): (N, T). :meth:`viterbi` reaches it through
        Pyro."""
        theta = {k: v[:1] for k, v in (self.theta() if theta is None else theta).items()}
        e = self.emission_log_prob(x, theta)[0]
        return viterbi_path(e, torch.log(theta["initial"][0]), torch.log(theta["transition"][0]))

    # -- Pyro models ------------------------------------------------------------------------------------------
    def _emission(self, theta: Theta, z: torch.Tensor) -> dist.Distribution:
        if self.kind == "gaussian":
            return dist.Normal(theta["locs"][z], theta["scales"][z]).to_event(1)
        return dist.Categorical(theta["emission_probs"][z])

    def _obs(self, x: torch.Tensor, t: int) -> torch.Tensor:
        return x[:, t] if self.kind == "gaussian" else x[:, t, 0].long()

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None, n_total: int | None = None) -> None:
        """The generative model with states ``z_0 .. z_{T-1}`` as enumerable sites in a Markov chain (Pyro
        reuses two enumeration dimensions along it, so the cost is O(T K^2)). ``n_total`` scales a
        minibatch of sequences up to the training set."""
        theta = self.sample_globals()
        x = self._seq(x)
        scale = 1.0 if n_total is None else n_total / x.shape[0]
        with pyro.plate("sequences", x.shape[0], dim=-1), poutine.scale(scale=scale):
            z: torch.Tensor | None = None
            for t in pyro.markov(range(self.t)):
                probs = theta["initial"] if z is None else theta["transition"][z]
                z = pyro.sample(f"z_{t}", dist.Categorical(probs), infer={"enumerate": "parallel"})
                pyro.sample(f"x_{t}", self._emission(theta, z), obs=self._obs(x, t))

    def marginal_model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """The same model with the states summed out by the forward algorithm, one factor per sequence."""
        theta = self.sample_globals()
        ll = self.log_lik(x, {k: v[None] for k, v in theta.items()})[0]
        with pyro.plate("sequences", x.shape[0], dim=-1):
            pyro.factor("x", ll)

    @torch.no_grad()
    def viterbi(self, x: torch.Tensor, theta: Theta | None = None, temperature: int = 0) -> torch.Tensor:
        """State paths (N, T) by ``infer_discrete`` on :meth:`model` with the globals fixed at ``theta``
        (one value, no batch; default the point estimate): temperature 0 is Viterbi decoding, 1 a
        posterior draw of the path."""
        values = {k: v.detach() for k, v in (theta or self.point.values()).items()}
        conditioned = poutine.condition(self.model, data=values)
        decoder = infer_discrete(conditioned, first_available_dim=-1 - self.max_plate_nesting, temperature=temperature)
        trace = poutine.trace(decoder).get_trace(x)
        return torch.stack([trace.nodes[f"z_{t}"]["value"].reshape(-1) for t in range(self.t)], 1)

    # -- sampling and predictive checks -------------------------------------------------------------------------
    @torch.no_grad()
    def simulate(self, theta: Theta, n: int) -> torch.Tensor:
        """``n`` sequences per parameter value, in the data's layout: (S, n, *event_shape)."""
        length = self.t
        s = theta["initial"].shape[0]
        rows = torch.arange(s)[:, None]
        z = dist.Categorical(theta["initial"][:, None].expand(s, n, self.k)).sample()  # (S, n)
        out = []
        for t in range(length):
            if t > 0:
                z = dist.Categorical(theta["transition"][rows, z]).sample()
            if self.kind == "gaussian":
                out.append(dist.Normal(theta["locs"][rows, z], theta["scales"][rows, z]).sample())
            else:
                out.append(dist.Categorical(theta["emission_probs"][rows, z]).sample()[..., None].float())
        return torch.stack(out, 2).reshape(s, n, *self.event_shape)

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """``n`` sequences of the training length: from the point estimate, or each from a random
        posterior draw (the posterior predictive)."""
        theta = self.theta()
        idx = torch.randint(theta["initial"].shape[0], (n,))
        one = {k: v[idx] for k, v in theta.items()}
        return self.simulate(one, 1)[:, 0]

    def test_statistic(self, x: torch.Tensor) -> tuple[str, torch.Tensor]:
        """Gaussian: the mean lag-1 autocorrelation within sequences (persistence of the regimes);
        categorical: the fraction of steps that repeat the previous symbol. ``x``: (B, N, *event) -> (B,)."""
        x = self._seq(x)
        if self.kind == "categorical":
            same = (x[:, :, 1:, 0] == x[:, :, :-1, 0]).double()
            return "fraction of repeated symbols", same.mean((1, 2))
        xc = x[..., 0].double()
        xc = xc - xc.mean(2, keepdim=True)
        num = (xc[:, :, 1:] * xc[:, :, :-1]).sum(2)
        den = (xc**2).sum(2).clamp_min(1e-12)
        return "mean lag-1 autocorrelation", (num / den).mean(1)

    # -- relabelling, initialization --------------------------------------------------------------------------
    def signature(self, theta: Theta) -> torch.Tensor:
        if self.kind == "gaussian":
            return torch.cat([theta["locs"], theta["scales"].log().mean(-1, keepdim=True)], -1)
        return theta["emission_probs"]

    @torch.no_grad()
    def init_values(self, x: torch.Tensor, generator: torch.Generator) -> Theta:
        """Gaussian: k-means (best of ten k-means++ runs) on all steps gives means (jittered) and scales; categorical: each
        state's symbol probabilities halfway between the overall frequencies and a random draw. Sticky
        transitions (0.8 on the diagonal) and a uniform start."""
        k = self.k
        values: Theta = {"initial": torch.full((k,), 1.0 / k), "transition": _sticky(k, 0.8)}
        x = self._seq(x)
        if self.kind == "gaussian":
            flat = x.reshape(-1, self.d).double()
            centres, label = kmeans(flat, k, generator)
            spread = flat.std(0).clamp_min(1e-6)
            scales = torch.stack([flat[label == j].std(0, unbiased=False) if (label == j).sum() > 1 else spread
                                  for j in range(k)]).clamp_min(1e-3 * spread)
            # Jitter the means by half a within-state standard deviation, so that chains start apart.
            centres = centres + 0.5 * scales * torch.randn(centres.shape, generator=generator, dtype=centres.dtype)
            values["locs"], values["scales"] = centres.float(), scales.float()
        else:
            counts = torch.bincount(x[..., 0].long().reshape(-1), minlength=self.v).double() + 1
            freq = counts / counts.sum()
            noise = -torch.log(torch.rand(k, self.v, generator=generator, dtype=torch.float64))
            values["emission_probs"] = (0.5 * freq + 0.5 * noise / noise.sum(-1, keepdim=True)).float()
        return values

    # -- EM (routine em; see ppgen.inference.em_algorithm for the M-steps) --------------------------------------
    def em_check(self, flat: bool) -> None:
        """The declared Dirichlet priors have a posterior mode (concentrations at least 1)."""
        if flat:
            return
        keys = [("initial_concentration", self.p.initial_concentration),
                ("transition_concentration", self.p.transition_concentration)]
        if self.kind == "categorical":
            keys.append(("emission_concentration", self.p.emission_concentration))
        for key, value in keys:
            if value < 1:
                raise SpecError(
                    f"routine em: prior.{key} is {value:g}; below 1 the posterior density grows without bound as a "
                    "probability goes to 0, so there is no posterior mode for EM to reach. Set it to 1 or more, or "
                    "sample the posterior with --inference nuts"
                )

    def forward_backward(self, x: torch.Tensor, theta: Theta, method: str = "auto") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """log p(x_n | theta_s) (S, N), the state marginals p(z_t = k | x_n) (S, N, T, K) and the expected
        transition counts summed over sequences and steps (S, K, K); see :func:`forward_backward`."""
        e = self.emission_log_prob(x, theta)
        return forward_backward(e, torch.log(theta["initial"]), torch.log(theta["transition"]), method)

    def em_chunk(self, s: int) -> int:
        """Sequences per chunk of the E-step for S parameter values: arrays (T, S, chunk, K) of about
        2^19 numbers (4 MB); smaller chunks pay the recursion's per-step overhead more often, larger
        ones leave the cache (measured on 2,000 sequences of 200 steps)."""
        return max(1, 2**19 // (s * self.t * self.k))

    def em_statistics(self, x: torch.Tensor, theta: Theta, *, method: str = "auto") -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """E-step at S parameter values by forward-backward (``method``: see :func:`forward_backward`):
        expected initial-state counts ``initial`` (S, K), transition counts ``transition`` (S, K, K), time
        spent in each state ``count`` (S, K) and, Gaussian, the weighted sums of x - mu_k and (x - mu_k)^2
        about the current means (S, K, D), categorical, the expected symbol counts ``symbols`` (S, K, V);
        and log p(x | theta_s) summed over the sequences, (S,). The Gaussian emission densities are
        :meth:`emission_log_prob`'s (the tests check), computed from the same differences, laid out
        (S, K, D, N T) so that every operation runs along the data."""
        dtype = theta["initial"].dtype
        x = self._seq(x).to(dtype)
        n, t = x.shape[:2]
        s, k = theta["initial"].shape
        if self.kind == "gaussian":
            diff = x.reshape(n * t, self.d).T[None, None] - theta["locs"][..., None]  # (S, K, D, N T)
            z = diff / theta["scales"][..., None]
            log_e = -0.5 * (z * z).sum(-2) - (torch.log(theta["scales"]).sum(-1) + 0.5 * self.d * math.log(2 * math.pi))[..., None]
            log_e = log_e.reshape(s, k, n, t).permute(0, 2, 3, 1)
        else:
            log_e = self.emission_log_prob(x, theta)
        ll, gamma, xi = forward_backward(log_e, torch.log(theta["initial"]), torch.log(theta["transition"]), method)
        g = gamma.permute(0, 3, 1, 2).reshape(s, k, n * t)
        stats = {"initial": gamma[:, :, 0].sum(1), "transition": xi, "count": g.sum(-1)}
        if self.kind == "gaussian":
            gd = diff * g[:, :, None, :]
            stats["first"] = gd.sum(-1)
            stats["second"] = (gd * diff).sum(-1)
        else:
            symbols = x[..., 0].long().reshape(-1)
            counts = torch.zeros(s, k, self.v, dtype=dtype, device=x.device)
            block = max(1, 2**22 // self.v)  # one-hot blocks of bounded size; a matmul sums in a fixed order
            for i in range(0, n * t, block):
                onehot = torch.nn.functional.one_hot(symbols[i : i + block], self.v).to(dtype)
                counts = counts + g[..., i : i + block] @ onehot
            stats["symbols"] = counts
        return stats, ll.sum(-1)

    def em_maximize(self, stats: dict[str, torch.Tensor], theta: Theta, *, flat: bool) -> tuple[Theta, torch.Tensor]:
        """M-step: the Dirichlet modes of the initial distribution, of each transition row (with the sticky
        prior's extra concentration on staying) and of each state's symbol probabilities; Gaussian
        emissions as in the mixture with diagonal covariance (the mean given the old scale, then the
        LogNormal scale by a Newton solve). Flat priors: the maximum-likelihood updates (Baum-Welch)."""

        p = self.p
        opts = tensor_options(theta["transition"])
        out = {
            "initial": dirichlet_mode(stats["initial"], 1.0 if flat else p.initial_concentration, theta["initial"]),
            "transition": dirichlet_mode(stats["transition"], 1.0 if flat else self._transition_concentration(opts),
                                         theta["transition"]),
        }
        if self.kind == "categorical":
            out["emission_probs"] = dirichlet_mode(stats["symbols"], 1.0 if flat else p.emission_concentration,
                                                   theta["emission_probs"])
            return out, torch.zeros(theta["initial"].shape[0], dtype=torch.bool, device=opts.get("device"))
        loc_prior = None if flat else (p.loc.mean, p.loc.std)
        scale_prior = None if flat else (math.log(p.scale.median), p.scale.log_std)
        locs, scales, bad = diag_gaussian_step(stats["count"], stats["first"], stats["second"], theta["locs"],
                                               theta["scales"], loc_prior, scale_prior)
        out.update(locs=locs, scales=scales)
        return out, bad

    # -- reporting ----------------------------------------------------------------------------------------------
    def pair_variables(self) -> tuple[list[str], dict[str, Any]]:
        states = list(range(min(self.k, 2)))
        if self.kind == "gaussian":
            return ["transition", "locs"], {"state": states, "state_to": states[:1], "dim": [0]}
        return ["transition", "emission_probs"], {"state": states, "state_to": states[:1], "symbol": [0]}

    def evaluation_setup(self, data: Any) -> dict[str, Any]:
        return {**super().evaluation_setup(data), "steps_per_sequence": self.t}

    def likelihood_is_discrete(self) -> bool:
        """Categorical emissions give probabilities of symbols (bits/dim apply); Gaussian ones a density."""
        return self.kind == "categorical"

    @torch.no_grad()
    def evaluate_extra(self, x: torch.Tensor, y: torch.Tensor | None) -> dict[str, float]:
        """Per-step held-out NLL; with true state paths, the accuracy of Viterbi decoding under the best
        matching of states to true states."""
        ll, _ = self.log_likelihood(x)
        out = {"test_nll_per_step": float(-ll.mean() / self.t)}
        if y is not None and tuple(y.shape) == (x.shape[0], self.t):
            path = self.viterbi_dp(x, centre_theta(self))
            out["viterbi_accuracy"] = matched_accuracy(path.reshape(-1), y.reshape(-1))
        return out


def _sticky(k: int, stay: float) -> torch.Tensor:
    if k == 1:
        return torch.ones(1, 1)
    return torch.full((k, k), (1 - stay) / (k - 1)) + (stay - (1 - stay) / (k - 1)) * torch.eye(k)


def centre_theta(model: HMM) -> Theta:
    """One parameter value: the point estimate, or the mean of the relabelled posterior draws (rows of a
    mean of stochastic matrices are still distributions)."""
    return {k: v.mean(0, keepdim=True) for k, v in model.relabelled_theta().items()}
