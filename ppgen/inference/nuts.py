"""The No-U-Turn Sampler through ``pyro.infer.MCMC``, several chains, driven by the loop in blocks.

How it fits the two verbs of :mod:`ppgen.inference.base`: one ``step`` draws one block of samples from
the posterior given the **whole** training set, so the data spec must put the whole training set in one
batch (``data.batch_size`` >= the number of training examples; the routine checks and says so). With one
batch per epoch, an epoch is a block:

- the first step runs, for each chain, ``warmup`` iterations of adaptation (step size by dual averaging,
  a diagonal or dense mass matrix from windowed covariance estimates, as in Stan) and then
  ``draws_per_epoch`` draws;
- every later step continues each chain from where it stopped, with the adapted step size and mass
  matrix fixed, for another ``draws_per_epoch`` draws.

So ``epochs`` x ``draws_per_epoch`` draws per chain in all, and ``ppgen fit --resume --epochs N`` draws
more. Everything a chain needs to continue -- its last position (unconstrained), step size and inverse
mass matrix -- and all draws so far live in ``State.extra`` as tensors, so a checkpoint carries them and a
resumed run continues exactly as an uninterrupted one would (the loop restores the RNG). The draws are
also handed to the model (``set_posterior``) so the fitted model in the run folder holds its posterior.

Chains run one after another in this process, each through its own ``pyro.infer.MCMC`` with
``num_chains=1`` (Pyro's own multi-chain mode forks worker processes, one per chain, which a shared CPU
and a notebook cannot always afford); chains are independent, so this is the same sampler. At least two
chains are required so that R-hat is defined. Chains start from the family's data-driven starting point
with a different seed each (``init: data``), from that start moved to the posterior mode by MAP-EM
(``init: em``, :mod:`ppgen.inference.em`: warmup then begins where the posterior mass is), or from a
prior draw (``init: prior``).

By default NUTS samples the family's ``marginal_model`` (discrete latent variables summed out in closed
form); ``likelihood: enumerated`` samples ``model`` instead and lets Pyro sum the enumerated discrete
sites out inside the potential energy (the same posterior, slower).

``info`` per step: ``loss`` (minus the log joint per training example, averaged over the block's draws),
``accept_rate``, ``divergences`` (in the block), ``step_size``, ``draws`` (per chain so far) and, for a
family that relabels, ``rhat_max`` (split R-hat, over relabelled draws). ``validate`` reports the
held-out negative log posterior predictive density per example.

References:
    Hoffman & Gelman (2014), The No-U-Turn Sampler, JMLR 15, 1593-1623.
    Betancourt (2017), A Conceptual Introduction to Hamiltonian Monte Carlo, arXiv:1701.02434.
    Carpenter et al. (2017), Stan: A probabilistic programming language, J. Stat. Software 76 (warmup).
"""

from __future__ import annotations

import math
from typing import Any, Callable, ClassVar, Literal, Mapping, Protocol

import pyro
import torch
from pydantic import Field, model_validator
from pyro.infer import MCMC, NUTS
from pyro.infer.autoguide.initialization import init_to_sample, init_to_value

from ppgen.contracts import JointDensity, MarginalModel, Posterior, Relabeling
from ppgen.inference.base import Plan, Routine, State
from ppgen.inference.capability import require
from ppgen.models.base import private_param_store
from ppgen.registry import register_routine
from ppgen.spec import InferenceSpec, OptimizerSpec, SpecError


class NUTSConfig(InferenceSpec):
    """NUTS recipe. ``optimizer`` is not used (nothing is optimized)."""

    routine: Literal["nuts"] = "nuts"
    epochs: int = Field(4, ge=1, description="blocks of draws_per_epoch draws per chain")
    log_every: int = Field(1, ge=1)
    chains: int = Field(2, ge=2, le=64, description="independent chains (at least 2, for R-hat)")
    warmup: int = Field(500, ge=1, description="adaptation iterations per chain, in the first step")
    draws_per_epoch: int = Field(250, ge=1)
    target_accept: float = Field(0.8, gt=0, lt=1)
    max_tree_depth: int = Field(10, ge=1, le=15)
    dense_mass: bool = Field(False, description="a dense mass matrix over all sites (else diagonal)")
    jit: bool = Field(False, description="compile the potential energy with torch.jit")
    likelihood: Literal["marginal", "enumerated"] = "marginal"
    init: Literal["data", "em", "prior"] = Field(
        "data", description="data: the family's data-driven start; em: that start moved to the posterior mode by EM; "
        "prior: a prior draw")

    @model_validator(mode="after")
    def _check_no_optimizer(self) -> "NUTSConfig":
        # A resolved recipe writes the default optimizer out; any other would be silently unused.
        if "optimizer" in self.model_fields_set and self.optimizer != OptimizerSpec():
            raise ValueError("optimizer does not apply to routine 'nuts': nothing is optimized; remove it")
        return self


class BayesianModel(Protocol):
    """A Bayesian model: a Pyro model whose sample sites are global parameters with priors, to be inferred
    from the whole training set.

    ``bayesian = True`` says so: a VAE's or an energy family's ``model`` is a Pyro program too, but its
    sites are per-example latents or factors, and sampling them would leave the family's weights as
    they were initialised. A family may also offer ``marginal_model`` (used with ``likelihood:
    marginal``), and ``set_posterior``, ``log_joint`` and ``relabel`` to keep, score and order the draws."""

    bayesian: ClassVar[bool]
    #: The deepest nesting of plates in the model (None: Pyro finds it by tracing).
    max_plate_nesting: int | None

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Any: ...


class DataStartValues(Protocol):
    """Data-driven starting values for each chain (init: data)."""

    def init_values(self, x: torch.Tensor, generator: torch.Generator) -> Mapping[str, torch.Tensor]: ...


class _ContinuedNUTS(NUTS):
    """NUTS with a given step size and inverse mass matrix and no adaptation: continues a warmed-up
    chain. Pyro builds the mass matrix when the kernel is set up, so it is installed right after."""

    def __init__(self, model: Callable[..., Any], inverse_mass_matrix: dict[tuple[str, ...], torch.Tensor],
                 **kwargs: Any) -> None:
        super().__init__(model, adapt_step_size=False, adapt_mass_matrix=False, **kwargs)
        self._given_imm = inverse_mass_matrix

    def _initialize_adapter(self) -> None:
        super()._initialize_adapter()
        expected = set(self.mass_matrix_adapter.inverse_mass_matrix)
        if expected != set(self._given_imm):
            raise RuntimeError(f"saved mass matrix blocks {sorted(self._given_imm)} differ from the model's {sorted(expected)}")
        self.mass_matrix_adapter.inverse_mass_matrix = dict(self._given_imm)


def _key(sites: tuple[str, ...]) -> str:
    return "|".join(sites)


def _unkey(key: str) -> tuple[str, ...]:
    return tuple(key.split("|"))


@register_routine("nuts")
class NUTSRoutine(Routine):
    Config = NUTSConfig

    def requirements(self) -> tuple[type, ...]:
        return (BayesianModel,) + ((DataStartValues,) if self.config.init == "data" else ())

    def init(self, model: torch.nn.Module, plan: Plan | None = None) -> State:
        require(self, model)
        plan = self.needs_plan(plan)
        self.n_total = plan.n_train
        if plan.batch_size < self.n_total:
            raise SpecError(
                f"routine nuts samples the posterior given the whole training set in one step, but "
                f"data.batch_size is {plan.batch_size} and there are {self.n_total} training examples; "
                f"set data.batch_size to at least {self.n_total} (e.g. --set data.batch_size={self.n_total})"
            )
        if self.config.init == "em":  # refused now, not at the first step
            from ppgen.inference.em_algorithm import check_family

            check_family(model, routine="nuts with init: em")
            model.em_check(False)
        # BayesianModel (required) gives model(); a family that declares MarginalModel gives the other.
        self.fn = model.marginal_model if self.config.likelihood == "marginal" and isinstance(model, MarginalModel) else model.model
        self.plates = model.max_plate_nesting
        extra: dict[str, Any] = {"warmed_up": False, "draws": {}, "position": {}, "step_size": torch.zeros(0, dtype=torch.float64),
                                 "inverse_mass_matrix": {}, "diverging": torch.zeros(self.config.chains, 0, dtype=torch.bool)}
        return State(model=model, optimizers={}, extra=extra)

    # -- one block ------------------------------------------------------------------------------------
    def _kernel(self, model: Any, x: torch.Tensor, chain: int, extra: dict[str, Any]) -> tuple[NUTS, dict[str, torch.Tensor] | None]:
        c = self.config
        common: dict[str, Any] = {
            "target_accept_prob": c.target_accept,
            "max_tree_depth": c.max_tree_depth,
            "full_mass": c.dense_mass,
            "jit_compile": c.jit,
            "ignore_jit_warnings": True,
        }
        if self.plates is not None:
            common["max_plate_nesting"] = self.plates
        if not extra["warmed_up"]:
            seed = int(torch.randint(2**31 - 1, ()))
            if c.init in ("data", "em"):  # required: DataStartValues (data) or EMFamily (em), checked at init
                values = model.init_values(x, torch.Generator().manual_seed(seed))
                if c.init == "em":
                    values = em_start_values(model, x, values)
                strategy = init_to_value(values={k: v.detach() for k, v in values.items()})
            else:
                strategy = init_to_sample
            return NUTS(self.fn, init_strategy=strategy, **common), None
        imm = {_unkey(k): v for k, v in extra["inverse_mass_matrix"][str(chain)].items()}
        kernel = _ContinuedNUTS(self.fn, imm, step_size=float(extra["step_size"][chain]), **common)
        return kernel, {k: v[chain] for k, v in extra["position"].items()}

    def step(self, state: State, batch: tuple[torch.Tensor, torch.Tensor | None]) -> tuple[State, dict[str, float]]:
        # Pyro's MCMC traces the model, whose parameters would otherwise land in the user's param store.
        with private_param_store():
            return self._step(state, batch)

    def _step(self, state: State, batch: tuple[torch.Tensor, torch.Tensor | None]) -> tuple[State, dict[str, float]]:
        x, _ = batch
        if x.shape[0] != self.n_total:
            raise SpecError(
                f"routine nuts got a batch of {x.shape[0]} examples but the training set has {self.n_total}; "
                f"set data.batch_size to at least {self.n_total}"
            )
        c, extra, model = self.config, state.extra, state.model
        first = not extra["warmed_up"]
        blocks: list[dict[str, torch.Tensor]] = []
        positions, step_sizes, imms, diverging, accept = [], [], {}, [], []
        for chain in range(c.chains):
            kernel, start = self._kernel(model, x, chain, extra)
            record = _Recorder()
            mcmc = MCMC(kernel, num_samples=c.draws_per_epoch, warmup_steps=c.warmup if first else 0,
                        initial_params=start, hook_fn=record, disable_progbar=True)
            mcmc.run(x)
            blocks.append({k: v.detach() for k, v in mcmc.get_samples(group_by_chain=True).items()})
            positions.append(record.last)
            step_sizes.append(float(kernel.step_size))
            imms[str(chain)] = {_key(k): v.detach().clone() for k, v in kernel.inverse_mass_matrix.items()}
            diverging.append(torch.tensor(record.diverging, dtype=torch.bool))
            accept.append(record.accept_rate)
        new = {k: torch.cat([b[k] for b in blocks], 0) for k in blocks[0]}
        draws = {k: torch.cat([extra["draws"][k], v], 1) if k in extra["draws"] else v for k, v in new.items()}
        extra["draws"] = draws
        extra["position"] = {k: torch.stack([p[k] for p in positions]) for k in positions[0]}
        extra["step_size"] = torch.tensor(step_sizes, dtype=torch.float64)
        extra["inverse_mass_matrix"] = imms
        extra["diverging"] = torch.cat([extra["diverging"], torch.stack(diverging)], 1)
        extra["warmed_up"] = True
        n_draws = draws[next(iter(draws))].shape[1]
        stats = {"diverging": extra["diverging"],
                 "step_size": extra["step_size"][:, None].expand(c.chains, n_draws).clone()}
        if isinstance(model, Posterior):
            model.set_posterior(draws, stats)
        info = {
            "loss": self._loss(model, x, new),
            "accept_rate": sum(accept) / len(accept),
            "divergences": float(torch.stack(diverging).sum()),
            "step_size": sum(step_sizes) / len(step_sizes),
            "draws": float(n_draws),
        }
        rhat = self._rhat(model, draws)
        if rhat is not None:
            info["rhat_max"] = rhat
        state.step += 1
        return state, info

    @torch.no_grad()
    def _loss(self, model: Any, x: torch.Tensor, new: dict[str, torch.Tensor]) -> float:
        """Minus the log joint per training example, averaged over the block's draws."""
        flat = {k: v.reshape(-1, *v.shape[2:]) for k, v in new.items()}
        if isinstance(model, JointDensity):
            return float(-model.log_joint(x, flat).mean() / x.shape[0])
        total, m = 0.0, flat[next(iter(flat))].shape[0]
        picks = sorted({int(i) for i in torch.linspace(0, m - 1, min(m, 20))})
        for i in picks:
            cond = pyro.poutine.condition(self.fn, data={k: v[i] for k, v in flat.items()})
            total += float(pyro.poutine.trace(cond).get_trace(x).log_prob_sum())
        return -total / len(picks) / x.shape[0]

    @torch.no_grad()
    def _rhat(self, model: Any, draws: dict[str, torch.Tensor]) -> float | None:
        from pyro.ops.stats import split_gelman_rubin

        if draws[next(iter(draws))].shape[1] < 4:
            return None
        if isinstance(model, Relabeling):
            draws, _ = model.relabel(draws)
        values = [split_gelman_rubin(v.double()).reshape(-1) for v in draws.values()]
        r = torch.cat(values)
        r = r[torch.isfinite(r)]
        return float(r.max()) if r.numel() else None

    def trained_parameters(self, state: State, since: int) -> dict[str, list[str]]:
        """None: NUTS draws from the posterior and changes no weights (the draws go to the model's
        buffers)."""
        return {}

    def validate(self, state: State, x: torch.Tensor, y: torch.Tensor | None) -> dict[str, float]:
        model = state.model
        if not (isinstance(model, Posterior) and model.has_posterior):
            return {}
        ll, _ = model.log_likelihood(x)
        return {"val_loss": float(-ll.mean())}


def em_start_values(model: Any, x: torch.Tensor, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``values`` moved to the posterior mode by MAP-EM (``init: em``), in the model's dtype."""
    from ppgen.inference.em_algorithm import check_family, em_fit

    check_family(model, routine="nuts with init: em")
    run = em_fit(model, x, starts={k: v[None] for k, v in values.items()}, set_point=False)
    return {k: v.to(values[k].dtype) for k, v in run.best_theta().items()}


class _Recorder:
    """MCMC hook: the chain's last unconstrained position, per-draw divergence flags, mean acceptance."""

    def __init__(self) -> None:
        self.last: dict[str, torch.Tensor] = {}
        self.diverging: list[bool] = []
        self.accept_rate = math.nan
        self._seen = 0

    def __call__(self, kernel: Any, params: dict[str, torch.Tensor], stage: str, i: int) -> None:
        self.last = {k: v.detach().clone() for k, v in params.items()}
        if stage.startswith("Sample"):
            diag = kernel.diagnostics()
            n = len(diag["divergences"])
            self.diverging.append(n > self._seen)
            self._seen = n
            # The mean Metropolis acceptance statistic over the sampling iterations so far (Pyro's running
            # mean, which restarts after warmup).
            self.accept_rate = float(kernel.logging()["acc. prob"])
