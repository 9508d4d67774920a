"""Data sets: ``load(spec)`` gives a :class:`~ppgen.data.core.Dataset` for any ``data.name``.

Sources: ``mnist`` (:mod:`ppgen.data.mnist`), ``digits``, ``npz`` and ``images``
(:mod:`ppgen.data.sources`), ``toy1d`` and ``toy2d`` (:mod:`ppgen.data.toy`).
"""

from __future__ import annotations

from typing import Callable

from ppgen.data.core import DataInfo, Dataset
from ppgen.data.sources import Arrays, cache_dir, make_dataset
from ppgen.spec import DataSpec, validate

__all__ = ["DataInfo", "Dataset", "load", "cache_dir", "SOURCES"]


def _loader(name: str) -> Callable[[DataSpec], Arrays]:
    if name == "mnist":
        from ppgen.data.mnist import load_mnist

        return load_mnist
    from ppgen.data import mixtures, sequences, sources, toy

    return {
        "digits": sources.load_digits,
        "npz": sources.load_npz,
        "images": sources.load_images,
        "toy1d": toy.load_toy1d,
        "toy2d": toy.load_toy2d,
        "toyseq": sequences.load_toyseq,
        "macro": sequences.load_macro,
        "toymix": mixtures.load_toymix,
    }[name]


#: The data sources and what each is, one whole sentence each, for ``ppgen list``.
SOURCES = {
    "mnist": "MNIST's 28x28 handwritten digits, split 50k/10k/10k into train/val/test and fetched once into the cache.",
    "digits": "The UCI 8x8 handwritten digits that ship with scikit-learn, 1797 images.",
    "toy1d": "One-dimensional densities with exact CDFs: normal, exponential, mixture.",
    "toy2d": "Two-dimensional benchmarks: ring8, grid25, moons, spiral.",
    "npz": "Your own .npz file with an array x (N, ...) and optional labels y.",
    "images": "Your own folder of png/jpg/bmp images, optionally one sub-folder per class.",
    "toyseq": "HMM sequences (N, T, 1) with known parameters: gaussian (3 states), casino (Durbin et al. 1998).",
    "macro": "US quarterly GDP growth or inflation 1959-2009 (ships with statsmodels), cut into 2-year windows.",
    "toymix": "Gaussian mixtures with known parameters: blobs3 (2-D), trio1d, duo1d.",
}


def load(spec: DataSpec | dict | None = None, **fields: object) -> Dataset:
    """The data set a spec describes: ``load(DataSpec(name="digits"))`` or ``load(name="digits")``."""
    if spec is None or isinstance(spec, dict):
        spec = validate(DataSpec, {**(spec or {}), **fields}, "data")
    return make_dataset(spec, _loader(spec.name)(spec))
