"""Optional capabilities a family declares by inheriting them.

Two kinds of contract tie a family to the code that uses it:

- What a routine *requires* to fit a family at all is a ``typing.Protocol`` next to the routine
  (``VariationalFamily`` in :mod:`ppgen.inference.svi`, ``EMFamily`` in :mod:`ppgen.inference.em_algorithm`, ...),
  checked structurally by :mod:`ppgen.inference.capability` before a run folder is written and again at
  the routine's ``init``.
- What a routine or a service *uses where present* -- posterior draws kept in the model, a closed-form
  log joint, relabelling of draws, a marginal model, log Z, the family's own figures -- is a
  :class:`Capability` below. A family has one only by inheriting it (``class GMM(BayesFamily)`` where
  ``BayesFamily(Family, Posterior, Relabeling, ...)``), and the user asks ``isinstance(model,
  Relabeling)``: the declaration, never the presence of an attribute, decides. A family that inherits a
  capability and leaves one of its methods unimplemented (a misspelled name, say) cannot be built: the
  error names the family, the capability and the method.

This module imports nothing of ppgen, so that the families (``ppgen.models``) and everything that uses
them can import it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])


def abstract(fn: F) -> F:
    """Marks a method of a :class:`Capability` that every family declaring the capability implements."""
    fn.__isabstractmethod__ = True  # type: ignore[attr-defined]
    return fn


class Capability:
    """Base of the capability mixins. A capability's methods marked :func:`abstract` must be implemented
    by every concrete family that inherits it (:func:`check_implemented`)."""

    __slots__ = ()


def capabilities(cls: type) -> list[type[Capability]]:
    """The capabilities ``cls`` declares, in its method resolution order."""
    return [c for c in cls.__mro__
            if issubclass(c, Capability) and c is not Capability and not issubclass(c, torch.nn.Module)]


def unimplemented(cls: type) -> list[tuple[type[Capability], str]]:
    """(capability, method) for each method a declared capability marks abstract that ``cls`` leaves so."""
    out = []
    for cap in capabilities(cls):
        for name, value in vars(cap).items():
            marked = getattr(value.fget if isinstance(value, property) else value, "__isabstractmethod__", False)
            if not marked:
                continue
            resolved = getattr(cls, name, None)
            resolved = resolved.fget if isinstance(resolved, property) else resolved
            if getattr(resolved, "__isabstractmethod__", False) and (cap, name) not in out:
                out.append((cap, name))
    return out


_checked: set[type] = set()


def check_implemented(cls: type) -> None:
    """Raise TypeError if ``cls`` declares a capability whose methods it does not all implement."""
    if cls in _checked:
        return
    gaps = unimplemented(cls)
    if gaps:
        name = getattr(cls, "family_name", cls.__name__)
        shown = "; ".join(f"{cap.__name__} needs {meth}()" for cap, meth in gaps)
        raise TypeError(f"family {name!r} ({cls.__qualname__}) declares capabilities it does not implement: {shown}")
    _checked.add(cls)


# --------------------------------------------------------------------------- the capabilities


class Posterior(Capability):
    """Posterior draws kept in the model as buffers: the fitted result of a sampler (``routine: nuts``),
    saved with the model, not training state (the sampler's own state, to continue its chains, is in
    the routine's state)."""

    @abstract
    def set_posterior(self, draws: Mapping[str, torch.Tensor], stats: Mapping[str, torch.Tensor] | None = None) -> None:
        """Keep draws (chain, draw, ...) and per-draw sampler statistics."""
        raise NotImplementedError

    @property
    @abstract
    def has_posterior(self) -> bool:
        """Whether the model holds posterior draws."""
        raise NotImplementedError


class JointDensity(Capability):
    """log p(x, theta) in closed form, vectorized over a leading batch of parameter values."""

    @abstract
    def log_joint(self, x: torch.Tensor, theta: Mapping[str, torch.Tensor], n_total: int | None = None) -> torch.Tensor:
        """log p(theta_s) + (n_total / N) sum_n log p(x_n | theta_s), shape (S,)."""
        raise NotImplementedError


class Relabeling(Capability):
    """Draws of a model with exchangeable labels (mixture components, hidden states) made consistent
    across draws and chains before R-hat or summaries."""

    @abstract
    def relabel(self, draws: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Relabelled draws (chain, draw, ...) and the permutation applied to each draw."""
        raise NotImplementedError


class MarginalModel(Capability):
    """A Pyro model with the discrete latent variables summed out in closed form (what NUTS samples with
    ``likelihood: marginal``)."""

    @abstract
    def marginal_model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Any:
        raise NotImplementedError


class PartitionFunction(Capability):
    """An energy-based model whose log p(x) needs log Z (exact enumeration or annealed importance
    sampling), with the evaluate options ``ais_runs`` and ``ais_steps``."""

    @abstract
    def log_partition(self, data: Any = None, runs: int | None = None, steps: int | None = None,
                      method: str = "auto") -> Any:
        """log Z, with its Monte Carlo error where estimated."""
        raise NotImplementedError


class BlockGibbs(Capability):
    """A joint distribution over all units that block Gibbs sweeps leave invariant (what
    :class:`~ppgen.inference.gibbs.GibbsKernel` runs as a Pyro MCMC kernel)."""

    @abstract
    def joint_model(self, n: int | None = None) -> Any:
        """The Pyro model over all units (its log density is -E up to a constant)."""
        raise NotImplementedError

    @abstract
    def gibbs_init(self, n: int) -> dict[str, torch.Tensor]:
        """Random starting states of ``n`` chains."""
        raise NotImplementedError

    @abstract
    def gibbs_sweep(self, sites: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One sweep that leaves the joint invariant."""
        raise NotImplementedError


class OwnFigures(Capability):
    """The family draws its own figures after training (``ppgen fit``), for a family that draws its own (the
    model language's, a plug-in's); ppgen's other families have theirs in :mod:`ppgen.plots.families`."""

    @abstract
    def figures(self, folder: Path, data: Any) -> dict[str, Path]:
        """The figures for the fitted model and its data set, written under ``folder``; name -> path."""
        raise NotImplementedError


class DiagnosticFigures(Capability):
    """The family's own ``ppgen diagnose`` figures, in place of the generic ones, for a family that draws its
    own (the model language's, a plug-in's); ppgen's other families have theirs in :mod:`ppgen.plots.families`."""

    @abstract
    def diagnostic_figures(self, idata: Any, folder: Path, labels: dict[str, str] | None = None) -> dict[str, Path]:
        """``labels``: what the numbers the run recorded are, with units
        (:func:`ppgen.plots.metric_labels.metric_labels`), for figures that show them."""
        raise NotImplementedError


class ForwardBackward(Capability):
    """A chain-structured model whose E-step runs a forward-backward recursion (the ``forward_backward``
    key of the EM recipe chooses how)."""

    @abstract
    def forward_backward(self, x: torch.Tensor, theta: Mapping[str, torch.Tensor],
                         method: str = "auto") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class ChunkedEStep(Capability):
    """An E-step whose statistics are sums over examples, computed in chunks of a size the family sets."""

    @abstract
    def em_chunk(self, s: int) -> int:
        """Examples per chunk for ``s`` parameter values at once."""
        raise NotImplementedError


class MeanSamples(Capability):
    """``sample(n, mean=True)`` gives the mean of the likelihood given each draw of the latents (E[x | z]
    for a VAE, E[v | h] after the last Gibbs sweep): the pictures a model is shown and measured by."""

    @abstract
    def sample(self, n: int, mean: bool = False) -> torch.Tensor:
        raise NotImplementedError


class ConditionalSampling(Capability):
    """Draws with some sites fixed to given values (``ppgen sample RUN --given y=3``): ``given`` maps a
    site's name to its value; the other sites are drawn ancestrally."""

    @abstract
    def sample(self, n: int, given: Mapping[str, Any] | None = None, mean: bool = False) -> torch.Tensor:
        raise NotImplementedError

    @abstract
    def display_samples(self, n: int, given: Mapping[str, Any] | None = None) -> torch.Tensor:
        raise NotImplementedError


class Enumeration(Capability):
    """A family whose Pyro model or guide sums discrete sites out by parallel enumeration, in every batch or in
    some (M2's hidden labels): Pyro's objective for such a batch is TraceEnum_ELBO."""

    @abstract
    def enumerates(self, y: torch.Tensor | None) -> bool:
        """Whether a pass with these labels sums a discrete site out."""
        raise NotImplementedError
