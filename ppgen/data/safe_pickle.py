"""An unpickler that can build numpy arrays and nothing else, for the pickle of a downloaded copy."""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np

__all__ = ["NumpyOnlyUnpickler", "restricted_loads"]


def _reconstruct() -> Any:
    # numpy's own array-rebuilding function, whatever module it lives in for this numpy version.
    return np.empty(0).__reduce__()[0]


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that can build numpy arrays and nothing else.

    A pickle may name any importable callable (``os.system`` ...) and have it called while loading, so
    an arbitrary pickle is arbitrary code. This one resolves only the globals a pickled ndarray needs:
    numpy's ``_reconstruct`` (under its numpy 1 and numpy 2 module names), ``ndarray`` and ``dtype``.
    Any other global raises :class:`pickle.UnpicklingError` before anything is called.
    """

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: this unpickler admits only numpy arrays "
                f"({', '.join(sorted(m + '.' + n for m, n in self.ALLOWED))})"
            )
        if name == "_reconstruct":
            return _reconstruct()
        return np.ndarray if name == "ndarray" else np.dtype

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing a persistent id: this unpickler admits only numpy arrays")


def restricted_loads(data: bytes, encoding: str = "latin1") -> Any:
    """Unpickle ``data`` with :class:`NumpyOnlyUnpickler` (latin1 reads Python 2 array bytes intact)."""
    return NumpyOnlyUnpickler(io.BytesIO(data), encoding=encoding).load()
