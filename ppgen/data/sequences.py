"""Sequence data for hidden Markov models: toy sequences from HMMs with known parameters, and a real
regime-switching series that ships with statsmodels.

**Shape.** A sequence data set is ``x`` of shape (N, T, D): N sequences of a fixed length T with D values
per step (D = 1 for a scalar series; a categorical series holds symbol indices 0..V-1 as floats). One
example is one sequence, so held-out likelihoods are per sequence (an HMM reports per-step numbers
beside them), and a fifth of the sequences are held out for testing unless ``data.test_fraction`` says
otherwise (``ppgen.spec.SEQUENCE_TEST_FRACTION``; 5 of the 25 macro windows). Labels ``y``, where the truth is known, are the hidden state paths, int64 of shape (N, T).

``toyseq`` (``data.distribution``, default ``gaussian``; ``data.n`` sequences, default 200; iid
sequences, split into consecutive blocks train/val/test):

- ``gaussian``: 3 states with 1-D Gaussian emissions, means (-2, 0, 2.5), standard deviations
  (0.5, 0.4, 0.6), sticky transitions (0.9 on the diagonal), a uniform initial distribution, T = 50;
- ``casino``: the occasionally dishonest casino of Durbin, Eddy, Krogh & Mitchison (1998), section 3.2:
  a fair die and a loaded one (six with probability 1/2, every other face 1/10), P(fair -> loaded) =
  0.05, P(loaded -> fair) = 0.1, started from the stationary distribution (2/3, 1/3); faces are coded
  0..5; T = 60.

``macro`` (``data.distribution``, default ``gdp``): a quarterly US series from statsmodels' bundled
``macrodata`` (1959Q1-2009Q3, FRED; public domain), no download:

- ``gdp``: real GDP growth, 400 log(GDP_t / GDP_{t-1}) (annualized percent) -- the series on which
  Hamilton (1989) fitted his two-regime (expansion/recession) Markov-switching model;
- ``inflation``: CPI inflation, annualized percent (statsmodels' ``infl``).

The series is cut into consecutive non-overlapping windows of T = 8 quarters (two years; the first
quarters are dropped so that the last window ends in 2009Q3), and windows are split in time order:
train first, then validation, then test (the most recent), so that nothing from the future leaks into
training. Each window is one sequence.

References:
    Rabiner (1989), A tutorial on hidden Markov models and selected applications in speech recognition,
    Proc. IEEE 77, 257-286.
    Durbin, Eddy, Krogh & Mitchison (1998), Biological Sequence Analysis, Cambridge University Press.
    Hamilton (1989), A new approach to the economic analysis of nonstationary time series and the
    business cycle, Econometrica 57, 357-384.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ppgen.data.sources import Arrays, sha256_bytes, sha256_file, split_arrays
from ppgen.spec import DataSpec, SpecError

#: Seed of every toy sequence.
SEQ_SEED = 0
#: Default number of toy sequences.
DEFAULT_SEQUENCES = 200
#: Quarters per window of the ``macro`` series.
MACRO_WINDOW = 8
#: Bump when the generating code changes, so that checksums change with it.
SEQ_VERSION = 1


@dataclass(frozen=True)
class ToyHMM:
    """A hidden Markov model with known parameters. ``emission`` is ``gaussian`` (``locs``, ``scales``
    per state, 1-D) or ``categorical`` (``probs``: one row of symbol probabilities per state)."""

    name: str
    initial: tuple[float, ...]
    transition: tuple[tuple[float, ...], ...]
    emission: str
    length: int
    locs: tuple[float, ...] = ()
    scales: tuple[float, ...] = ()
    probs: tuple[tuple[float, ...], ...] = ()

    @property
    def states(self) -> int:
        return len(self.initial)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The parameters as float64 tensors: initial (K,), transition (K, K) and the emission's."""
        out = {"initial": torch.tensor(self.initial, dtype=torch.float64),
               "transition": torch.tensor(self.transition, dtype=torch.float64)}
        if self.emission == "gaussian":
            out["locs"] = torch.tensor(self.locs, dtype=torch.float64)[:, None]
            out["scales"] = torch.tensor(self.scales, dtype=torch.float64)[:, None]
        else:
            out["emission_probs"] = torch.tensor(self.probs, dtype=torch.float64)
        return out

    def sample(self, n: int, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` sequences: x (n, T, 1) float64 and the state paths z (n, T) int64."""
        p = self.tensors()
        z = torch.empty(n, self.length, dtype=torch.int64)
        z[:, 0] = torch.multinomial(p["initial"].expand(n, -1), 1, generator=generator)[:, 0]
        for t in range(1, self.length):
            z[:, t] = torch.multinomial(p["transition"][z[:, t - 1]], 1, generator=generator)[:, 0]
        if self.emission == "gaussian":
            eps = torch.randn(n, self.length, 1, generator=generator, dtype=torch.float64)
            x = p["locs"][z] + p["scales"][z] * eps
        else:
            flat = torch.multinomial(p["emission_probs"][z.reshape(-1)], 1, generator=generator)
            x = flat.reshape(n, self.length, 1).double()
        return x.numpy(), z.numpy()


_LOADED = (0.1, 0.1, 0.1, 0.1, 0.1, 0.5)
TOYSEQ: dict[str, ToyHMM] = {
    "gaussian": ToyHMM(
        "gaussian",
        initial=(1 / 3, 1 / 3, 1 / 3),
        transition=((0.9, 0.05, 0.05), (0.05, 0.9, 0.05), (0.05, 0.05, 0.9)),
        emission="gaussian",
        length=50,
        locs=(-2.0, 0.0, 2.5),
        scales=(0.5, 0.4, 0.6),
    ),
    "casino": ToyHMM(
        "casino",
        initial=(2 / 3, 1 / 3),
        transition=((0.95, 0.05), (0.1, 0.9)),
        emission="categorical",
        length=60,
        probs=((1 / 6,) * 6, _LOADED),
    ),
}


def toyseq(name: str) -> ToyHMM:
    """The named toy HMM; an unknown name is a :class:`SpecError` listing the known ones."""
    try:
        return TOYSEQ[name]
    except KeyError:
        raise SpecError(f"data.distribution {name!r} is not a toyseq HMM; accepted: {', '.join(TOYSEQ)}") from None


def load_toyseq(spec: DataSpec) -> Arrays:
    """``data.n`` (default 200) sequences of a :class:`ToyHMM`, x (n, T, 1), y the state paths (n, T)."""
    hmm = toyseq(spec.distribution or "gaussian")
    n = spec.n or DEFAULT_SEQUENCES
    x, z = hmm.sample(n, torch.Generator().manual_seed(SEQ_SEED))
    checksum = sha256_bytes(json.dumps({"name": "toyseq", "distribution": hmm.name, "n": n, "seed": SEQ_SEED,
                                        "version": SEQ_VERSION}, sort_keys=True).encode())
    return split_arrays(x, z, spec, checksum, hmm.states, ordered=True)


MACRO_SERIES = {
    "gdp": "real GDP growth, annualized percent (400 log GDP_t / GDP_t-1)",
    "inflation": "CPI inflation, annualized percent",
}


def macrodata_file() -> Path:
    """statsmodels' bundled ``datasets/macrodata/macrodata.csv``."""
    try:
        import statsmodels.datasets.macrodata as md
    except ImportError:
        raise SpecError("data macro needs statsmodels (it ships the series): pip install statsmodels") from None
    path = Path(md.__file__).parent / "macrodata.csv"
    if not path.is_file():
        raise SpecError(f"statsmodels' macrodata file is missing ({path}); reinstall statsmodels")
    return path


def macro_series(name: str) -> tuple[np.ndarray, list[str]]:
    """The whole quarterly series and its quarter labels ("1959Q2", ...)."""
    if name not in MACRO_SERIES:
        raise SpecError(f"data.distribution {name!r} is not a macro series; accepted: {', '.join(MACRO_SERIES)}")
    path = macrodata_file()
    table = np.genfromtxt(path, delimiter=",", names=True, dtype=np.float64)
    quarters = [f"{int(y)}Q{int(q)}" for y, q in zip(table["year"], table["quarter"])]
    if name == "gdp":
        return 400.0 * np.diff(np.log(table["realgdp"])), quarters[1:]
    # The first quarter's inflation is recorded as 0 for want of a previous CPI: drop it.
    return np.asarray(table["infl"][1:]), quarters[1:]


def load_macro(spec: DataSpec) -> Arrays:
    """Windows of ``MACRO_WINDOW`` quarters of a macro series, x (N, T, 1), split in time order."""
    name = spec.distribution or "gdp"
    values, _ = macro_series(name)
    n = len(values) // MACRO_WINDOW
    x = values[len(values) - n * MACRO_WINDOW :].reshape(n, MACRO_WINDOW, 1)
    checksum = sha256_bytes(json.dumps({"name": "macro", "series": name, "window": MACRO_WINDOW,
                                        "file": sha256_file(macrodata_file())}, sort_keys=True).encode())
    return split_arrays(x, None, spec, checksum, None, ordered=True)  # windows in time order


def macro_windows(name: str = "gdp") -> list[tuple[str, str]]:
    """The first and last quarter of every window, in order (train windows first, test last)."""
    values, quarters = macro_series(name)
    n = len(values) // MACRO_WINDOW
    q = quarters[len(values) - n * MACRO_WINDOW :]
    return [(q[i * MACRO_WINDOW], q[(i + 1) * MACRO_WINDOW - 1]) for i in range(n)]
