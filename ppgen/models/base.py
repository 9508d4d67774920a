"""What every family is: a PyroModule with model/guide, sampling and (where defined) a likelihood.

The loop, the evaluator, the diagnostics and the CLI talk to families only through this interface.

A family's ``model``, ``guide`` and ``marginal_model`` run inside its PyroModule context (they are
wrapped with :func:`pyro.nn.pyro_method` when the class is defined), so that under Pyro's own settings
every parameter they read is a ``param`` site: ``pyro.infer.SVI(family.model, family.guide, ...)`` trains
a ppgen model as it trains any PyroModule. Each instance gets its own name in Pyro's param store (``vae``,
``vae_2``, ...), so two models of one family in one process never share weights there. ppgen's own Pyro
executions run in :func:`private_param_store`, which leaves the user's param store as it was.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from typing import Any, ClassVar, Iterator

import pyro
import torch
from pyro.nn import PyroModule, pyro_method

from ppgen.contracts import check_implemented
from ppgen.data.core import DataInfo, Dataset
from ppgen.spec import ModelSpec, Strict


#: What minus a family's SVI objective is (:meth:`Family.svi_objective`): minus a lower bound on log p(x)
#: (an ELBO, the IWAE bound: the family has latent variables), minus log p(x) exactly (no latent variable,
#: an empty guide), or that minus log p(theta) / N (no latent variable, a prior on the weights: MAP).
SVI_BOUND, SVI_EXACT, SVI_MAP = "bound", "exact", "map"

#: The methods that run as Pyro programs; wrapped with ``pyro_method`` in every subclass that defines them.
PYRO_METHODS = ("model", "guide", "marginal_model")
_instances: dict[str, Iterator[int]] = {}


def mean_of_weights(log_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log (1/S) sum_s exp(log_w[s]) over the draws along dim 0 (importance weights, or likelihoods under
    posterior draws), and its Monte Carlo standard error by the delta method: the standard error of the
    weights' mean relative to the mean. Zero with a single draw."""
    s = log_w.shape[0]
    est = torch.logsumexp(log_w, 0) - math.log(s)
    if s == 1:
        return est, torch.zeros_like(est)
    w = torch.exp(log_w - log_w.max(0).values)
    return est, (w.var(0) / (w.mean(0) ** 2 * s)).sqrt()


#: Values of x times importance samples held in one chunk of an importance-sampling estimate: tensors of a few
#: MB stay in the processor's cache (with 100 MNIST images, 2,500 rows of 784 likelihood terms took half the
#: time of 25,000 on one AMD EPYC core; benchmarks/evaluate_chunks.py).
CHUNK_VALUES = 2_000_000


def importance_chunk(values_per_sample: int, most: int = 250) -> int:
    """Importance samples per chunk, for ``values_per_sample`` values (examples x values in one example)
    each: :data:`CHUNK_VALUES` in all, at least 1 and at most ``most``. The draws are the same estimator
    whatever the chunk; only how many are held at once changes."""
    return int(max(1, min(most, CHUNK_VALUES // max(1, values_per_sample))))


@contextlib.contextmanager
def private_param_store() -> Iterator[None]:
    """Run ppgen's own Pyro executions (ELBOs, MCMC, traces) against an empty param store and put the
    user's back afterwards, whatever it held: under Pyro's default settings the ``param`` sites of a
    family's model and guide would otherwise be registered in the user's global store."""
    with pyro.get_param_store().scope():
        yield


class EvaluateOptions(Strict):
    """The options of :func:`ppgen.evaluation.evaluate.evaluate` (``evaluate(run, **options)``) that a family takes,
    beyond ``k``: none by default. A family with options subclasses this and sets it as its
    ``EvaluateOptions``; each option it gives is passed by keyword to both ``evaluation_setup`` and
    ``log_likelihood``, and an option the family does not declare is an error that names it."""


class Family(PyroModule):
    """Base class of a family. Subclasses set ``Spec`` and ``default_routine`` and implement
    ``model``/``guide`` (Pyro sites shared by name) and ``sample``.

    Optional hooks, each with a sensible default here:
    ``log_likelihood(x, k, y)`` gives per-example log p(x) in nats (exact or an estimator) and returns
    ``(values, stderrs)``, taking the family's ``EvaluateOptions`` by keyword as well; ``evaluate_extra(x, y)`` adds family metrics to ``ppgen evaluate``;
    ``inference_data(data, metrics)`` builds ArviZ data.
    """

    Spec: ClassVar[type[ModelSpec]]
    default_routine: ClassVar[str] = "svi"
    #: Whether ``log_likelihood`` is an importance-sampling estimate that takes ``k`` samples per
    #: example (``ppgen evaluate --k``); for the other families ``k`` means nothing and is refused.
    importance_samples: ClassVar[bool] = False
    #: The deepest nesting of plates in ``model``/``guide``, where known (Pyro guesses it otherwise).
    max_plate_nesting: ClassVar[int | None] = None
    family_name: ClassVar[str]
    #: The options ``ppgen evaluate`` passes to ``evaluation_setup`` and ``log_likelihood``.
    EvaluateOptions: ClassVar[type[EvaluateOptions]] = EvaluateOptions
    #: How many samples ``ppgen evaluate`` draws for sample-quality metrics (None: ppgen.evaluation.quality's default).
    quality_samples: int | None = None

    #: The methods whose definitions ``fused_loss`` was written against: it is used only where the
    #: instance's class takes each of them from the class that defines ``fused_loss`` or one of its
    #: bases (see :func:`fused_loss_applies`).
    fused_depends: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in PYRO_METHODS:
            fn = cls.__dict__.get(name)
            if callable(fn) and not getattr(fn, "_ppgen_pyro_method", False):
                wrapped = pyro_method(fn)
                wrapped._ppgen_pyro_method = True  # type: ignore[attr-defined]
                setattr(cls, name, wrapped)

    def __init__(self, spec: ModelSpec, info: DataInfo) -> None:
        check_implemented(type(self))
        base = getattr(type(self), "family_name", type(self).__name__.lower())
        n = next(_instances.setdefault(base, itertools.count(1)))
        super().__init__(name=base if n == 1 else f"{base}_{n}")
        # Pyro keeps a module-local param state only when module_local_params was on at construction;
        # a user who turns it on later would otherwise meet an AttributeError inside model/guide.
        if not hasattr(self._pyro_context, "param_state"):
            self._pyro_context.param_state = {"params": {}, "constraints": {}}
        self.spec = spec
        self.info = info

    # -- required ---------------------------------------------------------------------------
    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Any:
        raise NotImplementedError

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Any:
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """``n`` draws of x from the model, shape ``(n, *event_shape)``."""
        raise NotImplementedError

    @torch.no_grad()
    def display_samples(self, n: int) -> torch.Tensor:
        """Samples as a picture should show them; families with a pixelwise likelihood may return its
        mean (pixel probabilities) rather than a noisy draw."""
        return self.sample(n)

    # -- optional ---------------------------------------------------------------------------
    def log_likelihood(self, x: torch.Tensor, k: int = 1000, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Per-example log p(x) in nats and the Monte Carlo standard error of each (zeros if exact);
        ``None`` where the family has no likelihood. ``k`` is the estimator's sample budget where it
        has one; ``y`` the labels, for class-conditional families."""
        return None

    def evaluation_setup(self, data: Dataset) -> dict[str, Any]:
        """Called once by ``ppgen evaluate`` before ``log_likelihood`` (e.g. to estimate a partition
        function); returns numbers for the evaluation report."""
        return {}

    def evaluate_extra(self, x: torch.Tensor, y: torch.Tensor | None) -> dict[str, float]:
        """Family metrics on the test split for ``ppgen evaluate`` (e.g. the ELBO)."""
        return {}

    def likelihood_is_discrete(self) -> bool:
        """Whether ``log_likelihood`` is a probability of discrete values (so bits per dimension mean
        something) rather than a density: here, where the data are binary."""
        return self.info.kind == "binary"

    @classmethod
    def data_view(cls, dataset: Dataset) -> Dataset:
        """The data set as this family takes it, wherever a run's data are loaded (the data set itself here)."""
        return dataset

    def inference_data(self, data: Dataset, metrics: list[dict[str, Any]]) -> Any:
        return None

    @classmethod
    def svi_objective(cls, spec: ModelSpec) -> str:
        """What minus the objective of SVI is for a model of this spec (:data:`SVI_BOUND`, :data:`SVI_EXACT`
        or :data:`SVI_MAP`), so that its training loss is named for what it is: a bound here."""
        return SVI_BOUND

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")


def _owner(cls: type, name: str) -> type | None:
    """The class in ``cls``'s MRO whose ``__dict__`` defines ``name``."""
    return next((c for c in cls.__mro__ if name in c.__dict__), None)


def fused_loss_applies(model: Any) -> bool:
    """Whether ``model.fused_loss`` computes the objective of ``model``'s own model and guide: true only
    where every method in ``fused_depends`` comes from the class that defines ``fused_loss`` or one of
    its bases, and none is replaced on the instance. A subclass that overrides ``prior`` (say) without
    overriding ``fused_loss`` fails this, and ppgen then goes through Pyro."""
    cls = type(model)
    home = _owner(cls, "fused_loss")
    depends = cls.fused_depends
    if home is None or not depends:
        return False
    for name in depends:
        if name in vars(model) or _owner(cls, name) not in home.__mro__:
            return False
    return True
