"""ppgen.data.sources: the helpers every data source shares -- the cache folder, SHA-256 of files,
atomic writes, the seeded and the ordered split, label checks, the default binarization and the final
assembly of a Dataset with its checks. The loaders (digits, npz, image folders) are tested in
tests/test_data.py."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from ppgen.data.sources import (SPLIT_SEED, Arrays, atomic_write, cache_dir, check_labels, digits_file, make_dataset,
                                resolve_binarize, sha256_bytes, sha256_file, split_arrays, split_indices)
from ppgen.spec import DataSpec, SpecError


def test_the_cache_is_ppgen_data_or_under_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PPGEN_DATA", "~/data")
    assert cache_dir() == tmp_path / "home" / "data"
    monkeypatch.setenv("PPGEN_DATA", "")
    assert cache_dir() == tmp_path / "home" / ".cache" / "ppgen"
    monkeypatch.delenv("PPGEN_DATA")
    assert cache_dir() == tmp_path / "home" / ".cache" / "ppgen"
    assert not (tmp_path / "home").exists()  # not created here


@pytest.mark.parametrize("data", [b"", b"abc", bytes(range(256)) * 5])
def test_file_digests_read_in_chunks_equal_the_digest_of_the_bytes(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert sha256_bytes(data) == expected
    assert sha256_file(path) == expected and sha256_file(str(path), chunk=7) == expected
    if data == b"abc":
        assert expected == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2


def test_an_atomic_write_makes_its_folders_and_replaces_the_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "data.npz"
    atomic_write(target, lambda tmp: tmp.write_bytes(b"first"))
    atomic_write(target, lambda tmp: tmp.write_bytes(b"second"))
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == ["data.npz"]


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path: Path, error: BaseException) -> None:
    target = tmp_path / "data.npz"
    target.write_bytes(b"old")

    def write(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise error

    with pytest.raises(type(error)):
        atomic_write(target, write)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["data.npz"]


@pytest.mark.parametrize("n, val, test, sizes", [
    (10, 0.1, 0.1, (8, 1, 1)), (3, 0.1, 0.1, (1, 1, 1)), (100, 0.2, 0.3, (50, 20, 30)),
    (25, 0.1, 0.1, (21, 2, 2)),  # 2.5 rounds to the even 2
    (35, 0.1, 0.1, (27, 4, 4)),  # 3.5 rounds to the even 4
])
def test_split_sizes_and_every_example_in_exactly_one_split(n: int, val: float, test: float, sizes: tuple) -> None:
    for seed in (SPLIT_SEED, 7, None):
        parts = split_indices(n, val, test, seed)
        assert tuple(len(p) for p in parts) == sizes
        assert sorted(np.concatenate(parts).tolist()) == list(range(n))


def test_a_seeded_split_is_a_fixed_permutation_and_an_ordered_one_is_blocks() -> None:
    a, b = split_indices(20, 0.1, 0.2, 3), split_indices(20, 0.1, 0.2, 3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    perm = np.random.default_rng(3).permutation(20)
    assert a[1].tolist() == perm[:2].tolist() and a[2].tolist() == perm[2:6].tolist() and a[0].tolist() == perm[6:].tolist()
    assert not np.array_equal(split_indices(20, 0.1, 0.2, 4)[0], a[0])
    tr, va, te = split_indices(20, 0.1, 0.2, None)
    assert (tr.tolist(), va.tolist(), te.tolist()) == (list(range(14)), [14, 15], [16, 17, 18, 19])


def test_too_few_examples_to_split_are_refused_with_what_to_do() -> None:
    with pytest.raises(SpecError) as err:
        split_indices(2, 0.1, 0.1)
    assert str(err.value) == ("2 examples are too few to split into train/val/test with val_fraction=0.1 and "
                              "test_fraction=0.1; provide more data (data.n for generated data)")
    assert [len(p) for p in split_indices(10, 0.45, 0.49)] == [1, 4, 5]
    with pytest.raises(SpecError, match="^4 examples are too few"):
        split_indices(4, 0.45, 0.45)  # 2 + 2: none left to train on


def test_split_arrays_keeps_each_label_with_its_example() -> None:
    x = np.arange(30, dtype=np.float32).reshape(10, 3)
    y = np.arange(10) * 7
    spec = DataSpec(name="npz", path="unused.npz")
    for ordered in (False, True):
        arrays = split_arrays(x, y, spec, "sum", num_classes=70, ordered=ordered)
        for part in ("train", "val", "test"):
            xs, ys = getattr(arrays, f"{part}_x"), getattr(arrays, f"{part}_y")
            assert np.array_equal(ys, (xs[:, 0] / 3).astype(int) * 7)
        assert arrays.checksum == "sum" and arrays.num_classes == 70
    ordered = split_arrays(x, None, spec, "sum", ordered=True)
    assert ordered.train_y is None and np.array_equal(ordered.test_x, x[9:])


def test_labels_become_int64_class_indices() -> None:
    got = check_labels(np.array([2.0, 0.0, 1.0]), 3, "data")
    assert got.dtype == np.int64 and got.tolist() == [2, 0, 1]
    assert check_labels(np.array([True, False]), 2, "data").tolist() == [1, 0]
    assert check_labels(np.array([3, 1], dtype=np.uint8), 2, "data").dtype == np.int64
    assert check_labels(np.zeros(0, dtype=np.int32), 0, "data").shape == (0,)


@pytest.mark.parametrize("y, n, message", [
    (np.array([0, 1]), 3, "here: labels y must have shape (3,), got (2,)"),
    (np.zeros((3, 1), dtype=int), 3, "here: labels y must have shape (3,), got (3, 1)"),
    (np.array([0.0, 1.5, 2.0]), 3, "here: labels y must be integers, got dtype float64"),
    (np.array([0.0, np.nan, 2.0]), 3, "here: labels y must be integers, got dtype float64"),
    (np.array(["a", "b", "c"]), 3, "here: labels y must be integers, got dtype <U1"),
    (np.array([0, -2, 1]), 3, "here: labels y must be class indices >= 0, got a minimum of -2"),
])
def test_bad_labels_are_refused_naming_where(y: np.ndarray, n: int, message: str) -> None:
    with pytest.raises(SpecError) as err:
        check_labels(y, n, "here")
    assert str(err.value) == message


@pytest.mark.parametrize("name, default", [("mnist", "dynamic"), ("digits", "dynamic"), ("images", "dynamic"),
                                           ("npz", "none"), ("toy2d", "none"), ("toyseq", "none")])
def test_binarization_defaults_to_dynamic_for_images_only(name: str, default: str) -> None:
    assert resolve_binarize(DataSpec.model_construct(name=name, binarize=None)) == default
    assert resolve_binarize(DataSpec.model_construct(name=name, binarize="static")) == "static"


def _arrays(train: np.ndarray, val: np.ndarray, test: np.ndarray, ys: tuple | None = None, k: int | None = None) -> Arrays:
    ys = ys or (None, None, None)
    return Arrays(train, val, test, *ys, checksum="c", num_classes=k)


def test_a_dataset_is_float32_and_int64_with_the_limit_on_the_training_split() -> None:
    x = np.linspace(0, 1, 24).reshape(6, 4)
    y = np.array([0, 1, 2, 0, 1, 2])
    spec = DataSpec(name="npz", path="unused.npz", limit=4)
    ds = make_dataset(spec, _arrays(x, x[:2], x[:3], (y, y[:2] + 3, y[:3])))
    assert ds.train_x.dtype == torch.float32 and ds.train_y.dtype == torch.int64
    assert ds.train_x.shape == (4, 4) and ds.train_y.tolist() == [0, 1, 2, 0]
    assert ds.val_x.shape == (2, 4) and ds.test_x.shape == (3, 4)  # the limit is on training examples only
    assert torch.equal(ds.train_x, torch.from_numpy(x[:4]).float())
    assert ds.num_classes == 5  # the largest label of any split, plus one
    assert (ds.binarize, ds.checksum, ds.name) == ("none", "c", "npz")
    given = make_dataset(spec, _arrays(x, x[:2], x[:3], (y, y[:2], y[:3]), k=10))
    assert given.num_classes == 10  # a source's own count wins


def test_a_dataset_without_labels_has_no_classes() -> None:
    x = np.zeros((5, 2))
    ds = make_dataset(DataSpec(name="npz", path="unused.npz"), _arrays(x, x, x))
    assert ds.train_y is None and ds.num_classes is None


@pytest.mark.parametrize("part", ["train", "val", "test"])
def test_values_that_are_not_finite_are_refused_naming_the_split(part: str) -> None:
    splits = {p: np.zeros((3, 2)) for p in ("train", "val", "test")}
    splits[part][1, 1] = np.inf
    with pytest.raises(SpecError) as err:
        make_dataset(DataSpec(name="npz", path="unused.npz"), _arrays(splits["train"], splits["val"], splits["test"]))
    assert str(err.value) == f"data 'npz': the {part} split contains NaN or infinite values"


def test_binarization_needs_values_in_the_unit_interval() -> None:
    x = np.full((3, 2), 0.5)
    wide = x.copy()
    wide[0, 0] = 1.5
    spec = DataSpec(name="npz", path="unused.npz", binarize="static")
    with pytest.raises(SpecError) as err:
        make_dataset(spec, _arrays(x, wide, x))
    assert str(err.value) == ("data.binarize='static' needs values in [0, 1], but the val split of 'npz' ranges over "
                              "[0.5, 1.5]; set data.binarize: none or rescale the data")
    ends = np.array([[0.0, 1.0]] * 3)
    assert make_dataset(spec, _arrays(ends, ends, ends)).binarize == "static"  # 0 and 1 themselves are in
    assert make_dataset(DataSpec(name="npz", path="unused.npz"), _arrays(wide, wide, wide)).binarize == "none"


def test_digits_file_is_scikit_learns_bundled_copy() -> None:
    path = digits_file()
    assert path.name == "digits.csv.gz" and path.is_file()
