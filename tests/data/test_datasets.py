"""Loading digits, MNIST IDX files and .npz; every kind of bad input is a one-line DataError."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from fastslow.data import load_dataset
from fastslow.errors import DataError

SHARED_MNIST = Path(__file__).resolve().parents[3] / "shared" / "data" / "MNIST" / "raw"


def test_digits_split_shapes_and_range():
    data = load_dataset("digits", seed=0)
    assert data.x_train.shape == (1437, 1, 8, 8) and data.x_test.shape == (360, 1, 8, 8)
    assert data.x_train.dtype == np.float32 and 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    assert data.n_classes == 10 and data.input_shape == (1, 8, 8)
    assert np.bincount(data.y_test).min() >= 35  # stratified


def test_digits_split_is_seeded():
    a, b, c = load_dataset("digits", seed=0), load_dataset("digits", seed=0), load_dataset("digits", seed=1)
    assert np.array_equal(a.y_test, b.y_test) and np.array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.x_test, c.x_test)


def _write_idx(path: Path, array: np.ndarray, magic: int, compress: bool) -> None:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


def _fake_mnist(root: Path, n: int, compress: bool, with_train: bool = False) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    prefixes = ["t10k"] + (["train"] if with_train else [])
    for prefix in prefixes:
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), 2051, compress)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, 2049, compress)
    return raw


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_test_files_only_are_split_and_say_so(tmp_path, compress):
    _fake_mnist(tmp_path, 100, compress)
    data = load_dataset(f"mnist:{tmp_path}", seed=0)
    assert len(data.x_train) == 80 and len(data.x_test) == 20
    assert data.x_train.shape[1:] == (1, 28, 28) and data.x_train.max() <= 1.0
    assert "only the MNIST test files" in data.note and "80 train / 20 test" in data.note


def test_mnist_official_split_when_train_files_exist(tmp_path):
    _fake_mnist(tmp_path, 50, True, with_train=True)
    data = load_dataset(f"mnist:{tmp_path}")
    assert len(data.x_train) == 50 and len(data.x_test) == 50 and "official split" in data.note


def test_mnist_missing_or_corrupt_files(tmp_path):
    with pytest.raises(DataError, match="no MNIST files"):
        load_dataset(f"mnist:{tmp_path}")
    raw = _fake_mnist(tmp_path, 20, False)
    (raw / "t10k-images-idx3-ubyte").write_bytes((raw / "t10k-images-idx3-ubyte").read_bytes()[:500])
    with pytest.raises(DataError, match="truncated"):
        load_dataset(f"mnist:{tmp_path}")


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason=f"benchmark data not present at {SHARED_MNIST}")
def test_real_mnist_test_set_splits_8000_2000():
    data = load_dataset(f"mnist:{SHARED_MNIST.parents[1]}", seed=0)
    assert len(data.x_train) == 8000 and len(data.x_test) == 2000 and data.n_classes == 10


def test_npz_with_explicit_test_set_and_uint8(tmp_path):
    path = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(path, X=rng.integers(0, 256, (30, 6, 6), dtype=np.uint8), y=np.arange(30) % 3,
             X_test=rng.integers(0, 256, (9, 6, 6), dtype=np.uint8), y_test=np.arange(9) % 3)
    data = load_dataset(str(path))
    assert data.x_train.shape == (30, 1, 6, 6) and data.x_test.shape == (9, 1, 6, 6)
    assert data.x_train.max() <= 1.0 and "255" in data.note


def test_npz_flat_float_is_scaled_with_training_range(tmp_path):
    path = tmp_path / "flat.npz"
    x = np.linspace(-5, 5, 40 * 4).reshape(40, 4)
    np.savez(path, X=x, y=(np.arange(40) % 2).astype(float))
    data = load_dataset(str(path), seed=0)
    assert data.input_shape == (4,) and len(data.x_test) == 8
    assert data.x_train.min() >= 0 and data.x_train.max() <= 1 and "min-max" in data.note


def _bad(tmp_path, **arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError) as info:
        load_dataset(str(path))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_npz_bad_inputs_are_one_line_errors(tmp_path):
    x, y = np.random.rand(20, 3), np.arange(20) % 2
    assert "no array 'y'" in _bad(tmp_path, X=x)
    assert "no array 'X'" in _bad(tmp_path, y=y)
    nan = x.copy()
    nan[3, 1] = np.inf
    assert "NaN/inf" in _bad(tmp_path, X=nan, y=y)
    assert "negative" in _bad(tmp_path, X=x, y=y - 1)
    assert "non-integer" in _bad(tmp_path, X=x, y=y + 0.5)
    assert "at least 2 classes" in _bad(tmp_path, X=x, y=np.zeros(20, dtype=int))
    assert "labels for" in _bad(tmp_path, X=x, y=y[:10])
    assert "1-D" in _bad(tmp_path, X=x, y=y[:, None])
    assert "too few" in _bad(tmp_path, X=x, y=np.r_[np.zeros(19, dtype=int), 1])
    assert "empty" in _bad(tmp_path, X=np.zeros((0, 3)), y=np.zeros(0, dtype=int))
    assert "shape" in _bad(tmp_path, X=np.zeros(20), y=y)
    assert "not numbers" in _bad(tmp_path, X=np.array([["a"] * 3] * 20), y=y)
    assert "only one of X_test/y_test" in _bad(tmp_path, X=x, y=y, X_test=x)
    assert "X_test samples have shape" in _bad(tmp_path, X=x, y=y, X_test=np.random.rand(4, 5), y_test=np.arange(4) % 2)
    assert "never occur" in _bad(tmp_path, X=x, y=y * 2)


def test_missing_path_unknown_name_and_garbage(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(str(tmp_path / "nope.npz"))
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("cifar10")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_dataset(str(garbage))
