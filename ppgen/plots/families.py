"""Each family's figures, found by its class: the families draw nothing themselves.

:data:`TABLE` maps a family class to its figure functions: ``figures(model, folder, data)``, what
``ppgen fit`` draws after training, and ``diagnostic(model, idata, folder)``, what ``ppgen diagnose``
draws in place of the generic posterior and loss-trace figures (with ``labels=``, the labels of the
recorded numbers). A family takes the entry of the first
class of its MRO that has one, so a subclass (GBRBM, the gated PixelCNN) shares its base's figures.
A family outside the table (the model language's families, a family of an installed package) draws its
own where it declares so: the :class:`~ppgen.contracts.OwnFigures` and
:class:`~ppgen.contracts.DiagnosticFigures` capabilities (its ``diagnostic_figures`` gets ``labels=`` too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, NamedTuple

from ppgen.contracts import DiagnosticFigures, OwnFigures
from ppgen.data.core import Dataset
from ppgen.models.autoregressive.base import PixelFamily
from ppgen.models.bayesian.base import BayesFamily
from ppgen.models.bayesian.gmm import GMM
from ppgen.models.bayesian.hmm import HMM
from ppgen.models.base import Family
from ppgen.models.energy.family import EnergyFamily
from ppgen.models.gan import GAN
from ppgen.models.vae import VAE
from ppgen.plots import bayesian, energy, gan, pixel, vae


class FamilyFigures(NamedTuple):
    """A family's figure functions; None where it has none of that kind. ``diagnostic`` takes the labels of
    the recorded numbers (``labels=``, :func:`~ppgen.plots.metric_labels.metric_labels`)."""

    figures: Callable[[Any, Path, Dataset], dict[str, Path]] | None = None
    diagnostic: Callable[..., dict[str, Path]] | None = None


TABLE: dict[type[Family], FamilyFigures] = {
    VAE: FamilyFigures(vae.figures),
    GAN: FamilyFigures(gan.figures, gan.diagnostic_figures),
    EnergyFamily: FamilyFigures(energy.figures, energy.diagnostic_figures),
    PixelFamily: FamilyFigures(pixel.figures, pixel.diagnostic_figures),
    BayesFamily: FamilyFigures(None, bayesian.diagnostic_figures),
    GMM: FamilyFigures(bayesian.figures_of_gmm, bayesian.diagnostic_figures),
    HMM: FamilyFigures(bayesian.figures_of_hmm, bayesian.diagnostic_figures),
}


def entry(cls: type[Family]) -> FamilyFigures | None:
    """The table's entry for ``cls``: that of the first class of its MRO listed, or None."""
    return next((TABLE[c] for c in cls.__mro__ if c in TABLE), None)


def figures(model: Family, folder: Path, data: Dataset) -> dict[str, Path]:
    """The family's figures after training, written under ``folder``; name -> path (none for a family
    neither in the table nor declaring :class:`~ppgen.contracts.OwnFigures`)."""
    found = entry(type(model))
    if found is None:
        return dict(model.figures(Path(folder), data)) if isinstance(model, OwnFigures) else {}
    return dict(found.figures(model, Path(folder), data)) if found.figures is not None else {}


def diagnostic_figures(model: Family, idata: Any, folder: Path,
                       labels: dict[str, str] | None = None) -> dict[str, Path] | None:
    """The family's own ``ppgen diagnose`` figures, or None where it has none (the generic ones are
    drawn then); ``labels`` name the numbers the run recorded, for the families whose figures show them."""
    found = entry(type(model))
    if found is not None and found.diagnostic is not None:
        return dict(found.diagnostic(model, idata, Path(folder), labels=labels))
    if found is None and isinstance(model, DiagnosticFigures):
        return dict(model.diagnostic_figures(idata, Path(folder), labels=labels))
    return None
