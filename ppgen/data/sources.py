"""Data sources that need no download (sklearn's digits, a user's ``.npz``, a folder of images) and the
helpers every source shares: the cache folder, SHA-256 of files, atomic writes, the seeded split and the
final assembly of a :class:`~ppgen.data.core.Dataset`.

Every loader returns plain numpy arrays first and :func:`make_dataset` turns them into tensors, so the
checks (shapes, ranges, labels) live in one place.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch

from ppgen.data.core import Dataset
from ppgen.spec import DataSpec, SpecError, cut

Binarize = Literal["dynamic", "static", "none"]

#: Seed of the permutation that splits digits, npz and image folders into train/val/test.
SPLIT_SEED = 0

#: File suffixes read by the ``images`` source (compared lower-case).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
#: The most pixels an image file may have (a 4096 x 4096 picture; larger ones are refused before they
#: are decoded, whatever their header claims), and the most values a data set may hold in memory.
MAX_IMAGE_PIXELS = 1 << 24
MAX_DATA_VALUES = 1 << 30


# --------------------------------------------------------------------------- shared helpers


def cache_dir() -> Path:
    """The data cache: ``$PPGEN_DATA`` if set, else ``~/.cache/ppgen`` (not created here)."""
    env = os.environ.get("PPGEN_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ppgen"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then move it into place with os.replace.

    Readers never see a half-written file; on any error the temporary file is removed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass
class Arrays:
    """A source's data before it becomes a :class:`Dataset`: numpy splits, labels and a checksum."""

    train_x: np.ndarray
    val_x: np.ndarray
    test_x: np.ndarray
    train_y: np.ndarray | None
    val_y: np.ndarray | None
    test_y: np.ndarray | None
    checksum: str
    num_classes: int | None = None


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int | None = SPLIT_SEED) -> tuple[
    np.ndarray, np.ndarray, np.ndarray
]:
    """Train/val/test indices from a permutation seeded by ``seed``; val and test get at least one each.
    With ``seed=None`` the splits are consecutive blocks in order, train first, then val, then test
    (for iid draws, and for sequences cut in time order, where a permutation would leak the future)."""
    n_val = max(1, int(round(n * val_fraction)))
    n_test = max(1, int(round(n * test_fraction)))
    n_train = n - n_val - n_test
    if n_train < 1:
        raise SpecError(
            f"{n} examples are too few to split into train/val/test with val_fraction={val_fraction} and "
            f"test_fraction={test_fraction}; provide more data (data.n for generated data)"
        )
    if seed is None:
        idx = np.arange(n)
        return idx[:n_train], idx[n_train : n_train + n_val], idx[n_train + n_val :]
    perm = np.random.default_rng(seed).permutation(n)
    return perm[n_val + n_test :], perm[:n_val], perm[n_val : n_val + n_test]


def split_arrays(
    x: np.ndarray, y: np.ndarray | None, spec: DataSpec, checksum: str, num_classes: int | None = None,
    *, ordered: bool = False,
) -> Arrays:
    """Split whole arrays with the spec's fractions: permuted with the fixed :data:`SPLIT_SEED`, or with
    ``ordered`` as consecutive blocks (see :func:`split_indices`)."""
    tr, va, te = split_indices(len(x), spec.val_fraction, spec.test_fraction, None if ordered else SPLIT_SEED)
    pick = (lambda idx: y[idx]) if y is not None else (lambda idx: None)
    return Arrays(x[tr], x[va], x[te], pick(tr), pick(va), pick(te), checksum, num_classes)


def check_labels(y: np.ndarray, n: int, where: str) -> np.ndarray:
    """Labels as int64 class indices 0..K-1 of length ``n``."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise SpecError(f"{where}: labels y must have shape ({n},), got {tuple(y.shape)}")
    if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        y = y.astype(np.int64)
    if y.dtype.kind not in "iub":
        raise SpecError(f"{where}: labels y must be integers, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if n and y.min() < 0:
        raise SpecError(f"{where}: labels y must be class indices >= 0, got a minimum of {int(y.min())}")
    return y


def resolve_binarize(spec: DataSpec) -> Binarize:
    """``spec.binarize`` or the source's default: dynamic for images in [0, 1], none otherwise."""
    if spec.binarize is not None:
        return spec.binarize
    return "dynamic" if spec.name in ("mnist", "digits", "images") else "none"


def make_dataset(spec: DataSpec, arrays: Arrays) -> Dataset:
    """Tensors from arrays: float32 x, int64 y; ``limit`` and ``binarize`` applied and checked."""
    binarize = resolve_binarize(spec)
    xs = []
    for part in ("train", "val", "test"):
        x = np.asarray(getattr(arrays, f"{part}_x"))
        if not np.all(np.isfinite(x)):
            raise SpecError(f"data {spec.name!r}: the {part} split contains NaN or infinite values")
        if binarize != "none" and x.size and (x.min() < 0 or x.max() > 1):
            raise SpecError(
                f"data.binarize={binarize!r} needs values in [0, 1], but the {part} split of {spec.name!r} "
                f"ranges over [{x.min():g}, {x.max():g}]; set data.binarize: none or rescale the data"
            )
        xs.append(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    ys: list[torch.Tensor | None] = []
    for part in ("train", "val", "test"):
        y = getattr(arrays, f"{part}_y")
        ys.append(None if y is None else torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)))
    if spec.limit is not None:
        xs[0] = xs[0][: spec.limit]
        ys[0] = ys[0][: spec.limit] if ys[0] is not None else None
    num_classes = arrays.num_classes
    if num_classes is None and ys[0] is not None:
        num_classes = int(max(int(y.max()) for y in ys if y is not None and y.numel())) + 1
    if spec.labels is not None or spec.labelled_batch is not None or spec.labelled_only:
        from ppgen.data import labels

        ys[0], keep = labels.apply(ys[0], spec.labels, num_classes, spec.labels_seed, spec.labelled_batch)
        kept = keep
        if spec.labelled_only:
            xs[0], ys[0], keep = labels.labelled_only(xs[0], ys[0], keep)
        return labels.LabelledDataset(name=spec.name, train_x=xs[0], val_x=xs[1], test_x=xs[2], train_y=ys[0],
                                      val_y=ys[1], test_y=ys[2], binarize=binarize, num_classes=num_classes,
                                      checksum=arrays.checksum, labelled=keep, labelled_batch=spec.labelled_batch,
                                      kept=kept)
    return Dataset(
        name=spec.name,
        train_x=xs[0],
        val_x=xs[1],
        test_x=xs[2],
        train_y=ys[0],
        val_y=ys[1],
        test_y=ys[2],
        binarize=binarize,
        num_classes=num_classes,
        checksum=arrays.checksum,
    )


# --------------------------------------------------------------------------- digits


def digits_file() -> Path:
    """scikit-learn's bundled copy of the UCI 8x8 digits (``sklearn/datasets/data/digits.csv.gz``)."""
    import sklearn.datasets

    path = Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"
    if not path.is_file():
        raise SpecError(f"scikit-learn's digits file is missing ({path}); reinstall scikit-learn")
    return path


def load_digits(spec: DataSpec) -> Arrays:
    """sklearn's 1797 8x8 digits as (1, 8, 8) images in [0, 1] (pixel counts 0..16 divided by 16)."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = (np.asarray(bunch.images, dtype=np.float32) / 16.0)[:, None, :, :]
    y = np.asarray(bunch.target, dtype=np.int64)
    return split_arrays(x, y, spec, sha256_file(digits_file()), num_classes=10)


# --------------------------------------------------------------------------- npz


def load_npz(spec: DataSpec) -> Arrays:
    """A user's ``.npz`` with ``x`` (N, ...) and optional integer ``y`` (N,).

    Integer images (ndim >= 3) must lie in 0..255 and are scaled to [0, 1]; (N, H, W) becomes
    (N, 1, H, W); (N,) becomes (N, 1); (N, D) stays (N, D). Arrays of Python objects are refused
    (the file is read with ``allow_pickle=False``).
    """
    path = Path(str(spec.path)).expanduser()
    where = f"data.path {str(path)!r}"
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "no such file"
        raise SpecError(f"{where}: {what}; give the path of an .npz file with an array 'x'")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
    except OSError as exc:
        raise SpecError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    if magic == b"\x93NUMPY":
        raise SpecError(f"{where}: is a .npy file (a single array), not an .npz archive; save it with "
                        "np.savez(path, x=array) (and y=labels)")
    if not magic.startswith(b"PK"):
        raise SpecError(f"{where}: is not an .npz file (an .npz is a zip archive, as np.savez writes it; "
                        f"this file starts with {magic!r}); save the arrays with np.savez(path, x=..., y=...)")
    _check_npz_sizes(path, where)
    try:
        # numpy leaves the file open when it fails to parse it; opening it here closes it either way.
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as npz:
            keys = list(npz.files)
            if "x" not in keys:
                raise SpecError(f"{where}: no array 'x' in the file (it has {keys}); save with np.savez(path, x=..., y=...)")
            x = np.asarray(npz["x"])
            y = np.asarray(npz["y"]) if "y" in keys else None
    except SpecError:
        raise
    except ValueError as exc:
        raise SpecError(f"{where}: cannot read it as .npz without pickles ({exc}); save plain numeric arrays") from None
    except Exception as exc:  # zipfile.BadZipFile, OSError, EOFError ...
        raise SpecError(f"{where}: not a readable .npz file ({type(exc).__name__}: {exc})") from None
    if x.ndim == 0 or len(x) < 3:
        raise SpecError(f"{where}: 'x' must have shape (N, ...) with N >= 3, got {tuple(x.shape)}")
    if x.size == 0:
        raise SpecError(f"{where}: 'x' has shape {tuple(x.shape)}, with no values in an example")
    if x.dtype.kind == "b":
        x = x.astype(np.float32)
    elif x.dtype.kind in "iu":
        if x.ndim >= 3:
            lo, hi = int(x.min()), int(x.max())
            if lo < 0 or hi > 255:
                raise SpecError(f"{where}: integer images must lie in 0..255, got {lo}..{hi}; save floats instead")
            x = x.astype(np.float32) / 255.0
        else:
            x = x.astype(np.float32)
    elif x.dtype.kind != "f":
        raise SpecError(f"{where}: 'x' must be numeric, got dtype {x.dtype}")
    if x.ndim == 1:
        x = x[:, None]
    elif x.ndim == 3:
        x = x[:, None, :, :]
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise SpecError(f"{where}: 'x' contains NaN or infinite values")
    if y is not None:
        y = check_labels(y, len(x), where)
    return split_arrays(x, y, spec, sha256_file(path))


def _check_npz_sizes(path: Path, where: str) -> None:
    """Read the headers of the arrays x and y in the archive and refuse, before decompressing anything,
    arrays of more than :data:`MAX_DATA_VALUES` values (a compressed archive can expand a thousandfold)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            for key in ("x", "y"):
                if f"{key}.npy" not in names:
                    continue
                with zf.open(f"{key}.npy") as f:
                    version = np.lib.format.read_magic(f)
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                    shape, _, dtype = read(f)
                count = int(np.prod(shape, dtype=object)) if shape else 1
                if count > MAX_DATA_VALUES:
                    raise SpecError(f"{where}: the array {key!r} has shape {tuple(shape)} ({count} values), more than "
                                    f"the {MAX_DATA_VALUES} a data set may hold in memory")
    except SpecError:
        raise
    except Exception as exc:  # zipfile.BadZipFile, ValueError from a bad header, OSError ...
        raise SpecError(f"{where}: not a readable .npz file ({type(exc).__name__}: {cut(str(exc))})") from None


# --------------------------------------------------------------------------- image folders


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_images(spec: DataSpec) -> Arrays:
    """A folder of png/jpg/bmp files, or one sub-folder per class (labels = sorted sub-folder names).

    Images become grayscale (1, H, W) in [0, 1]; with ``spec.image_size`` they are resized to that side,
    otherwise they must all share one size. The checksum covers every file's relative path and bytes.
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(str(spec.path)).expanduser()
    where = f"data.path {str(root)!r}"
    if not root.is_dir():
        raise SpecError(f"{where}: no such folder; give a folder of png/jpg/bmp images")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    classes = [c for c in classes if _image_files(root / c)]
    top = _image_files(root)
    files: list[tuple[Path, int | None]]
    if classes:
        if top:
            raise SpecError(
                f"{where}: has both class sub-folders {classes} and loose images (e.g. {top[0].name}); "
                "move every image into a class sub-folder, or remove the sub-folders"
            )
        files = [(f, k) for k, c in enumerate(classes) for f in _image_files(root / c)]
    else:
        files = [(f, None) for f in top]
    if len(files) < 3:
        raise SpecError(f"{where}: found {len(files)} images ({', '.join(IMAGE_SUFFIXES)}); need at least 3")

    size = spec.image_size
    digest = hashlib.sha256()
    images: list[np.ndarray] = []
    first_shape: tuple[int, int] | None = None
    total = 0
    for f, _ in files:
        rel = f.relative_to(root).as_posix()
        digest.update(rel.encode() + b"\0" + bytes.fromhex(sha256_file(f)))
        try:
            with warnings.catch_warnings():
                # PIL warns (and past twice its limit refuses) on huge pictures; the bound here is ours.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(f) as im:
                    if im.width * im.height > MAX_IMAGE_PIXELS:
                        raise SpecError(
                            f"{where}: image {rel} is {im.width}x{im.height}, more than the {MAX_IMAGE_PIXELS} pixels "
                            "an image may have; shrink it (data.image_size resizes only after reading)")
                    im = im.convert("L")
                    if size is not None:
                        im = im.resize((size, size), Image.Resampling.BILINEAR)
                    arr = np.asarray(im, dtype=np.float32) / 255.0
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError, EOFError) as exc:
            if isinstance(exc, SpecError):
                raise
            raise SpecError(f"{where}: cannot read image {rel} ({cut(str(exc))}); remove or replace it") from None
        total += arr.size
        if total > MAX_DATA_VALUES:
            raise SpecError(f"{where}: the images hold more than the {MAX_DATA_VALUES} pixels a data set may hold in "
                            "memory; set data.image_size to shrink them, or use fewer")
        if first_shape is None:
            first_shape = arr.shape  # type: ignore[assignment]
        elif arr.shape != first_shape:
            raise SpecError(
                f"{where}: images differ in size ({files[0][0].relative_to(root).as_posix()} is "
                f"{first_shape[1]}x{first_shape[0]}, {rel} is {arr.shape[1]}x{arr.shape[0]}); "
                "set data.image_size to resize them all"
            )
        images.append(arr)
    x = np.stack(images)[:, None, :, :]
    y = np.array([k for _, k in files], dtype=np.int64) if classes else None
    return split_arrays(x, y, spec, digest.hexdigest(), num_classes=len(classes) if classes else None)
