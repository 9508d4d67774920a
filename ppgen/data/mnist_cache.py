"""MNIST's cache ``cache_dir()/mnist/mnist.npz``: written once, atomically, after its arrays have been
checked, byte-for-byte deterministic (fixed zip timestamps), with its SHA-256 beside it in
``mnist.npz.sha256``; read back only if it matches that digest and, since a sidecar can be rewritten along
with the file, if its arrays written back as IDX hash to the canonical digests."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ppgen.data.mnist_idx import idx_header
from ppgen.data.mnist_layout import DIGESTS, NUM_CLASSES, SIDE, mnist_dir, say
from ppgen.data.sources import atomic_write, sha256_bytes, sha256_file
from ppgen.spec import SpecError

__all__ = ["cache_path", "idx_digests", "read_cache", "write_cache"]

#: Array names inside the cached npz.
NPZ_KEYS = ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")
NPZ_NAME = "mnist.npz"

# A fixed zip timestamp makes the cached npz, and so the dataset checksum, reproducible.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def cache_path() -> Path:
    """The cached npz (``cache_dir()/mnist/mnist.npz``)."""
    return mnist_dir() / NPZ_NAME


def _digest_path() -> Path:
    return mnist_dir() / (NPZ_NAME + ".sha256")


def _check_arrays(arrays: dict[str, np.ndarray], where: str) -> None:
    """The cache's invariants: float32 (N, 1, 28, 28) in [0, 1], int64 (N,) labels 0..9."""
    for part in ("train", "val", "test"):
        x, y = arrays[f"{part}_x"], arrays[f"{part}_y"]
        if x.dtype != np.float32 or x.ndim != 4 or x.shape[1:] != (1, SIDE, SIDE):
            raise SpecError(f"{where}: {part}_x must be float32 (N, 1, {SIDE}, {SIDE}), got {x.dtype} {x.shape}")
        if y.dtype != np.int64 or y.shape != (len(x),):
            raise SpecError(f"{where}: {part}_y must be int64 ({len(x)},), got {y.dtype} {y.shape}")
        if x.size and not (np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1):
            raise SpecError(f"{where}: {part}_x has values outside [0, 1]")
        if y.size and (y.min() < 0 or y.max() >= NUM_CLASSES):
            raise SpecError(f"{where}: {part}_y has labels outside 0..{NUM_CLASSES - 1}")


def idx_digests(arrays: dict[str, np.ndarray]) -> dict[str, str] | None:
    """SHA-256 of the four unpacked IDX files the arrays were made from (intensities times 256 as bytes;
    train and val together as the training files), or None if the intensities are not bytes / 256."""
    out: dict[str, str] = {}
    parts = {"train": ("train_x", "val_x", "train_y", "val_y"), "t10k": ("test_x", None, "test_y", None)}
    for prefix, (x1, x2, y1, y2) in parts.items():
        x = np.concatenate([arrays[x1]] + ([arrays[x2]] if x2 else []))
        y = np.concatenate([arrays[y1]] + ([arrays[y2]] if y2 else []))
        scaled = x.reshape(len(x), SIDE, SIDE).astype(np.float64) * 256.0
        pixels = np.rint(scaled)
        if not np.array_equal(pixels, scaled) or (pixels.size and (pixels.min() < 0 or pixels.max() > 255)):
            return None
        images = idx_header(0x08, pixels.shape) + pixels.astype(np.uint8).tobytes()
        labels = idx_header(0x08, y.shape) + y.astype(np.uint8).tobytes()
        out[f"{prefix}-images-idx3-ubyte"] = sha256_bytes(images)
        out[f"{prefix}-labels-idx1-ubyte"] = sha256_bytes(labels)
    return out


def _canonical_problem(arrays: dict[str, np.ndarray]) -> str | None:
    """Why the arrays are not MNIST's (their IDX digests differ from :data:`DIGESTS`), or None."""
    digests = idx_digests(arrays)
    if digests is None:
        return "its images are not intensities byte / 256, as MNIST's are"
    wrong = [name for name, digest in digests.items() if DIGESTS[name] != digest]
    if wrong:
        return (f"its arrays are not MNIST's: written back as {wrong[0]} they hash to {digests[wrong[0]]}, not the "
                f"canonical {DIGESTS[wrong[0]]}")
    return None


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    # np.savez stamps each member with the current time; fixed stamps keep the bytes reproducible.
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key in NPZ_KEYS:
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE)
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(arrays[key]), allow_pickle=False)


def write_cache(arrays: dict[str, np.ndarray], progress: bool) -> str:
    """Check ``arrays``, write the npz and then its digest atomically; the npz's SHA-256."""
    _check_arrays(arrays, "MNIST arrays to cache")
    digest: list[str] = []

    def write(tmp: Path) -> None:
        _write_npz(tmp, arrays)
        digest.append(sha256_file(tmp))

    path = cache_path()
    try:
        atomic_write(path, write)
        atomic_write(_digest_path(), lambda tmp: tmp.write_text(f"{digest[0]}  {NPZ_NAME}\n"))
    except OSError as exc:
        raise SpecError(f"cannot write the MNIST cache {path} ({exc.strerror or exc}); point $PPGEN_DATA at a "
                        "writable folder") from None
    say(f"cached in {path}", progress)
    return digest[0]


def read_cache() -> tuple[dict[str, np.ndarray] | None, str, str | None]:
    """(arrays, digest, problem): arrays None if the cache is missing (problem None) or bad (problem says why)."""
    path, side = cache_path(), _digest_path()
    if not path.exists():
        return None, "", None
    try:
        expected = side.read_text().split()[0].lower()
    except (OSError, IndexError, UnicodeDecodeError):
        return None, "", f"its digest file {side.name} is missing or unreadable"
    try:
        actual = sha256_file(path)
    except OSError as exc:
        return None, "", f"it cannot be read ({exc})"
    if actual != expected:
        return None, "", f"its SHA-256 {actual} differs from the {expected} recorded in {side.name}"
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in NPZ_KEYS if k not in npz.files]
            if missing:
                return None, "", f"it lacks the arrays {missing}"
            arrays = {k: np.asarray(npz[k]) for k in NPZ_KEYS}
        _check_arrays(arrays, str(path))
        problem = _canonical_problem(arrays)
        if problem is not None:
            return None, "", problem
    except SpecError as exc:
        return None, "", str(exc)
    except Exception as exc:  # zipfile.BadZipFile, ValueError, OSError, EOFError ...
        return None, "", f"it is not a readable npz ({type(exc).__name__}: {exc})"
    return arrays, actual, None
