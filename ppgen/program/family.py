"""The ``program`` family: a model written in the model language, with every service of a family.

The program is compiled once when the family is built (:mod:`ppgen.program.compile`) and checked by a
trial run on two made-up examples, so that a shape that does not fit is an error naming the site before
anything trains. Afterwards it runs two ways that compute the same numbers:

- :meth:`ProgramFamily.model` and :meth:`ProgramFamily.guide` are an ordinary Pyro model and guide
  (real ``pyro.sample`` sites in a ``data`` plate, discrete latents marked for parallel enumeration),
  which Pyro's ELBOs, ``Predictive`` and ``az.from_pyro`` accept; the networks and parameters are
  attributes of this ``PyroModule``, so Pyro's ``param`` statements see them.
- :meth:`ProgramFamily.fused_loss` computes the same bound with plain tensor operations: the structure is
  known before training, so nothing is traced at each step. Trace_ELBO (``trace``), TraceMeanField_ELBO
  (``meanfield``: analytic KL where torch has it), TraceEnum_ELBO for enumerated sites, and the
  per-example importance-weighted bound (``iwae``). The tests check it against Pyro's ELBOs, value and
  gradients, from the same random draws. One difference: under ``meanfield`` a KL that depends on a class
  the guide enumerates (M2's q(z | x, y)) is taken in closed form for every class, which TraceEnum_ELBO
  cannot do (Monte Carlo there; the same bound in expectation); the tests check that case against the bound
  written out class by class.

References:
    Kingma & Welling (2013), Auto-Encoding Variational Bayes, arXiv:1312.6114.
    Burda, Grosse & Salakhutdinov (2015), Importance Weighted Autoencoders, arXiv:1509.00519.
    Obermeyer et al. (2019), Tensor variable elimination for plated factor graphs, ICML.
    Bingham et al. (2019), Pyro: Deep Universal Probabilistic Programming, JMLR 20.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import torch
from pyro.nn.module import pyro_method

from ppgen.bounds import as_bound
from ppgen.contracts import ConditionalSampling, DiagnosticFigures, Enumeration, MeanSamples, OwnFigures
from ppgen.data.core import DataInfo, Dataset
from ppgen.models.base import SVI_BOUND, SVI_EXACT, Family, importance_chunk, mean_of_weights
from ppgen.program import objective, passes, pyro_model, sampling, sites
from ppgen.program.compile import compile_program
from ppgen.program.compiled import Program
from ppgen.program.conjugate import ConjugateEM
from ppgen.program.schema import ProgramSpec, structure
from ppgen.registry import register_family
from ppgen.spec import SpecError


@register_family("program")
class ProgramFamily(ConjugateEM, Family, ConditionalSampling, DiagnosticFigures, MeanSamples, OwnFigures, Enumeration):
    """A model written in the model language: named sites, networks, a guide (see ppgen.program)."""

    Spec = ProgramSpec
    default_routine = "svi"
    max_plate_nesting = 1
    importance_samples = True
    #: the guide is a variational posterior of the model's latent sites
    variational_guide: ClassVar[bool] = True
    #: what the fused bound computes with: it is this class's own model and guide, compiled
    fused_depends: ClassVar[tuple[str, ...]] = ("model", "guide", "_mods", "num_data", "_x_in")

    @classmethod
    def svi_objective(cls, spec: ProgramSpec) -> str:
        """Minus the log-likelihood, exact, when nothing is sampled: no guide site, every latent site of the
        model summed out by enumeration (a flow, a mixture whose component is enumerated) and x not
        dequantized; otherwise minus a bound (a guide over the labels or any sampled latent makes the
        objective an ELBO)."""
        st = structure(spec)
        sampled = [s for s in st.model.values() if s.observed is None and not s.enumerate]
        x_site = next(s for s in st.model.values() if s.observed == "x")
        if sampled or st.guide or x_site.options.get("dequantize") is not None:
            return SVI_BOUND
        return SVI_EXACT

    def __init__(self, spec: ProgramSpec, info: DataInfo) -> None:
        super().__init__(spec, info)
        self.program: Program = compile_program(spec, info)
        nets, params, consts = self.program.build_modules()
        self.nets = nets
        self.params = params
        self.consts = consts
        self.event_shape = tuple(info.event_shape)
        self._view = tuple(self.program.x_site.shape) != self.event_shape
        self._num_data = spec.num_data or info.n_train
        self.importance_samples = not self.program.exact and not self.program.delta_locals
        self._init_global_guides()
        with torch.random.fork_rng(devices=[]):
            self._trial_run()

    # -- modules and sizes -------------------------------------------------------------------
    def _mods(self) -> tuple[Any, Any, Any]:
        m = self._modules  # plain lookups: this runs every training step
        return m["nets"], m["params"], m["consts"]

    def num_data(self) -> int:
        """N of the B / N weight of global sites: ``num_data`` or the training-set size."""
        if not self.program.has_global_latents:
            return 1
        if self._num_data is None:
            raise SpecError("num_data: the model was built without the size of its training set "
                            "(DataInfo.n_train); set num_data to the number of training examples")
        return self._num_data

    @torch.no_grad()
    def _init_global_guides(self) -> None:
        """Start each AutoNormal/AutoDelta location at the median of 15 draws from the prior, in the
        unconstrained space (Pyro's init_to_median)."""
        if not self.program.auto_globals:
            return
        draws = [self._prior_draw() for _ in range(15)]
        params = self._modules["params"]
        for name, kind in self.program.auto_globals.items():
            g = self.program.guide_by_name[name]
            support = g.options.get("support")
            from torch.distributions import biject_to, constraints

            t = biject_to(support if support is not None else constraints.real)
            values = torch.stack([t.inv(d[name][0]) for d in draws]) if all(name in d for d in draws) else None
            if values is None:
                continue
            key = f"auto__{name}__value" if kind == "delta" else f"auto__{name}__loc"
            getattr(params, key).copy_(values.median(0).values)

    def _prior_draw(self) -> dict[str, torch.Tensor]:
        """One draw of the global sites from their prior (not from their guide, which is what is being
        started)."""
        env = sites.Env(self.program, self._mods())
        for m in self.program.global_model:
            d = sites.site_dist(m, sites.site_args(m, env), False)
            if m.deterministic:
                env.values[m.name] = d.mean
                continue
            env.values[m.name] = d.expand(torch.broadcast_shapes(d.batch_shape, (1,))).sample()
        return env.values

    def _trial_run(self) -> None:
        """Run every path once on two made-up examples, with argument validation, so that shapes and
        supports that do not fit are errors naming the site now rather than in the middle of a fit."""
        prog, mods = self.program, self._mods()
        x = self._dummy_x(2)
        modes = [None]
        if prog.y_site is not None:
            modes = [torch.zeros(2, dtype=torch.long)]
            if not prog.labels_required:
                modes += [torch.full((2,), -1, dtype=torch.long), torch.tensor([0, -1])]
        with torch.no_grad():
            for y in modes:
                lab = sites.labels(prog, y, 2)
                for layout in (sites.Layout(2), sites.Layout(2, 2)):
                    for meanfield in (False, True):
                        passes.run(prog, mods, x, lab, layout, meanfield=meanfield, validate=True)
            sampling.ancestral(prog, mods, 2)

    def _dummy_x(self, n: int) -> torch.Tensor:
        """Made-up data as the x site sees them."""
        s = self.program.x_site
        shape = (n, *s.shape)
        if s.entry.discrete:
            return torch.zeros(shape)
        if s.entry.name == "Dirichlet":
            return torch.full(shape, 1.0 / s.shape[-1])
        return torch.full(shape, 0.5)

    def _x_in(self, x: torch.Tensor) -> torch.Tensor:
        """The data as the program's x site sees them (an example reshaped where the site says so)."""
        return x.reshape(x.shape[0], *self.program.x_site.shape) if self._view else x

    def _x_out(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.event_shape) if self._view else x

    # -- Pyro model and guide ----------------------------------------------------------------
    @pyro_method
    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        x = self._x_in(x)
        return self._x_out(pyro_model.pyro_model(self.program, (self.nets, self.params, self.consts), x, y,
                                              self.num_data()))

    @pyro_method
    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        pyro_model.pyro_guide(self.program, (self.nets, self.params, self.consts), self._x_in(x), y, self.num_data())

    # -- the fused objective -----------------------------------------------------------------
    def fused_loss(self, x: torch.Tensor, elbo: str, num_particles: int = 1,
                   y: torch.Tensor | None = None) -> torch.Tensor:
        """Minus the bound summed over the batch, global sites weighted by B / N: Pyro's Trace_ELBO
        (``trace``), TraceMeanField_ELBO (``meanfield``) or TraceEnum_ELBO (either, when sites are
        enumerated) on :meth:`model` and :meth:`guide` as the svi routine scales them, or the per-example
        importance-weighted bound (``iwae``)."""
        bound = as_bound(elbo, num_particles)
        return objective.fused_loss(self.program, self._mods(), self._x_in(x), y, bound.name, bound.num_particles,
                                  self.num_data())

    def enumerates(self, y: torch.Tensor | None) -> bool:
        """Whether a pass with these labels sums a discrete site out (hidden labels, enumerated sites): Pyro's
        objective for it is then TraceEnum_ELBO."""
        prog = self.program
        return objective._enumerates(prog, sites.labels(prog, y, 0 if y is None else y.shape[0]))

    def classification_loss(self, x: torch.Tensor | None, y: torch.Tensor | None) -> torch.Tensor:
        """The sum over labelled examples of -log q(y | x), the guide's classifier (M2's classification
        term, see :mod:`ppgen.program.labels`); with ``x`` None, only checks that the guide has one."""
        from ppgen.program import labels

        if x is None:
            labels.check_guide_classifier(self.program, "classify_weight")
            return torch.zeros(())
        return labels.classification_loss(self.program, self._mods(), self._x_in(x), y)

    # -- sampling ---------------------------------------------------------------------------
    def _given(self, given: dict[str, Any] | None, n: int) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for name, value in (given or {}).items():
            site = self.program.model_by_name.get(name)
            if site is None:
                raise SpecError(f"--given {name}: the model has no site {name!r}; its sites are "
                                f"{', '.join(self.program.model_by_name)}")
            if site.entry.name == "Categorical":
                t = torch.as_tensor(value)
                k = site.options["classes"]
                if t.is_floating_point() and not bool((t == t.round()).all()):
                    raise SpecError(f"--given {name}={value}: a class must be a whole number 0..{k - 1}")
                t = t.long()
                if bool(((t < 0) | (t >= k)).any()):
                    raise SpecError(f"--given {name}={value}: out of range; {name} has classes 0..{k - 1}")
            else:
                t = torch.as_tensor(value, dtype=torch.get_default_dtype())
            try:
                t = t.to(self.device).expand(n, *site.shape) if t.dim() <= len(site.shape) else t.to(self.device)
            except RuntimeError:
                raise SpecError(f"--given {name}: a value of shape {list(t.shape)} does not fit the site's shape "
                                f"{list(site.shape)}") from None
            if t.shape[0] != n:
                raise SpecError(f"--given {name}: {t.shape[0]} values for {n} samples")
            out[name] = t
        return out

    @torch.no_grad()
    def sample_sites(self, n: int, given: dict[str, Any] | None = None, mean: bool = False) -> dict[str, torch.Tensor]:
        """Every site's value in ``n`` ancestral draws, with the sites in ``given`` fixed (``{"y": 3}``)."""
        return sampling.ancestral(self.program, self._mods(), n, self._given(given, n), mean=mean)

    @torch.no_grad()
    def sample(self, n: int, given: dict[str, Any] | None = None, mean: bool = False) -> torch.Tensor:
        return self._x_out(self.sample_sites(n, given, mean)[self.program.x_site.name])

    @torch.no_grad()
    def display_samples(self, n: int, given: dict[str, Any] | None = None) -> torch.Tensor:
        """For images, E[x | latents] (pixel probabilities, mean grey levels) at ancestral draws of the
        latents; a plain draw otherwise."""
        from ppgen.plots.common import is_image

        return self.sample(n, given, mean=is_image(self.event_shape))

    @torch.no_grad()
    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """A point of q(latents | x): locations of continuous guide sites, modes of discrete ones."""
        return sampling.guide_point(self.program, self._mods(), self._x_in(x), y)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """E[x | latents] at the point :meth:`encode` gives."""
        point = self.encode(x, y)
        given = {k: v for k, v in point.items() if k in self.program.model_by_name and k != self.program.x_site.name
                 and not self.program.model_by_name[k].is_global}
        return self._x_out(sampling.ancestral(self.program, self._mods(), x.shape[0], given, mean=True)[self.program.x_site.name])

    # -- likelihood and evaluation ------------------------------------------------------------
    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, k: int = 1000, y: torch.Tensor | None = None,
                       chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """log p(x) per example and its Monte Carlo standard error, by importance sampling with the guide
        as proposal and ``k`` samples: log (1/k) sum_i p(x, z_i) / q(z_i | x) (Burda et al. 2015, eq. 8),
        enumerated sites summed out exactly; exact (standard error 0) when nothing is sampled. A label site
        is summed over its classes: log p(x) = log sum_y p(x, y). Global sites are drawn from their guide,
        so the estimate is of the predictive density under q(globals) (the plug-in density for AutoDelta).
        ``None`` when a local latent has a Delta guide (no proposal to sample)."""
        if self.program.delta_locals:
            return None
        if self.program.y_site is None:
            return self._log_lik(x, None, k, chunk)
        per_class = [self._log_lik(x, torch.full((x.shape[0],), c, dtype=torch.long, device=x.device), k, chunk)
                     for c in range(self.program.y_site.options["classes"])]
        est = torch.stack([e for e, _ in per_class], 1)
        se = torch.stack([s for _, s in per_class], 1)
        total = torch.logsumexp(est, 1)
        # p(x) = sum_y p(x, y), independent estimates: relative variances add with weights p(x, y)^2 / p(x)^2
        rel = ((2 * (est - total[:, None])).exp() * se.pow(2)).sum(1).sqrt()
        return total, rel

    @torch.no_grad()
    def class_log_likelihoods(self, x: torch.Tensor, k: int = 1000, chunk: int | None = None) -> torch.Tensor:
        """log p(x, y = c) for every class c, shape (n, classes) (a program with a label site)."""
        if self.program.y_site is None:
            raise SpecError("class_log_likelihoods: the program has no site observed: y")
        return torch.stack([self._log_lik(x, torch.full((x.shape[0],), c, dtype=torch.long, device=x.device), k, chunk)[0]
                            for c in range(self.program.y_site.options["classes"])], 1)

    def _log_lik(self, x: torch.Tensor, y: torch.Tensor | None, k: int, chunk: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        prog, mods = self.program, self._mods()
        x = self._x_in(x)
        lab = sites.labels(prog, y, x.shape[0])
        if prog.exact:
            lw = objective.log_weights(prog, mods, x, lab, 1)[0]
            return lw, torch.zeros_like(lw)
        if chunk is None:
            chunk = importance_chunk(x.shape[0] * math.prod(self.event_shape))
        parts = []
        for start in range(0, k, chunk):
            parts.append(objective.log_weights(prog, mods, x, lab, min(chunk, k - start)))
        log_w = torch.cat(parts, 0)
        return mean_of_weights(log_w)

    def likelihood_is_discrete(self) -> bool:
        """The observed site's distribution is discrete, or a dequantized density of discrete levels."""
        site = self.program.x_site
        return bool(site.entry.discrete or site.options.get("dequantize"))

    @torch.no_grad()
    def evaluate_extra(self, x: torch.Tensor, y: torch.Tensor | None) -> dict[str, float]:
        """The ELBO per example (one draw, analytic KL where torch has it) and, where the guide encodes x,
        the squared error of the reconstructions. With a label site, ``elbo`` bounds log p(x):
        log sum_y exp ELBO(x, y), and ``elbo_labelled`` is the ELBO of (x, y) with the given labels."""
        prog, mods = self.program, self._mods()
        data_x, x = x, self._x_in(x)
        out: dict[str, float] = {}
        if prog.y_site is None:
            parts = objective.elbo_per_example(prog, mods, x, sites.labels(prog, None, x.shape[0]))
            out["elbo"] = float(parts["elbo"].mean())
            if prog.local_guide:
                out["kl"] = float(parts["kl"].mean())
        else:
            k = prog.y_site.options["classes"]
            per = [objective.elbo_per_example(prog, mods, x, sites.labels(prog, torch.full((x.shape[0],), c,
                                            dtype=torch.long, device=x.device), x.shape[0]))["elbo"] for c in range(k)]
            out["elbo"] = float(torch.logsumexp(torch.stack(per, 1), 1).mean())
            if y is not None and bool((y >= 0).all()):
                out["elbo_labelled"] = float(objective.elbo_per_example(prog, mods, x, sites.labels(prog, y, x.shape[0]))["elbo"].mean())
        if prog.delta_locals:
            out["objective"] = out.pop("elbo")
        if any(not g.is_global for g in prog.guide if g.name != getattr(prog.y_site, "name", None)):
            recon = self.reconstruct(data_x, y if y is not None and bool((y >= 0).all()) else None)
            out["reconstruction_sq_error"] = float(((recon - data_x) ** 2).flatten(1).sum(1).mean())
        return out

    # -- presentation --------------------------------------------------------------------------
    def figures(self, folder: Path, data: Dataset) -> dict[str, Path]:
        from ppgen.program.flow_figures import flow_figures
        from ppgen.program.figures import program_figures

        out = program_figures(self, data, Path(folder))
        out.update(flow_figures(self, data, Path(folder)))
        return out

    def inference_data(self, data: Dataset, metrics: list[dict[str, Any]]) -> Any:
        from ppgen.program.idata import program_inference_data

        return program_inference_data(self, data, metrics)

    def diagnostic_figures(self, idata: Any, folder: Path, labels: dict[str, str] | None = None) -> dict[str, Path]:
        from ppgen.program.idata import program_diagnostic_figures

        return program_diagnostic_figures(self, idata, folder, labels=labels)
