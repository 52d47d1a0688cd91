"""Loading digits, MNIST IDX files and .npz; every kind of bad input is a one-line DataError."""

import gzip
from pathlib import Path

import numpy as np
import pytest
from load_errors import load_error  # this folder is on sys.path (rootdir import mode)

from fastslow.data import Dataset, load_dataset
from fastslow.errors import DataError

SHARED_MNIST = Path(__file__).resolve().parents[3] / "shared" / "data" / "MNIST" / "raw"


# --------------------------------------------------------------------------- digits


def test_digits_split_shapes_and_range():
    data = load_dataset("digits", seed=0)
    assert isinstance(data, Dataset) and data.name == "digits"
    assert data.x_train.shape == (1437, 1, 8, 8) and data.x_test.shape == (360, 1, 8, 8)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert 0.0 <= data.x_train.min() and data.x_train.max() == 1.0
    assert data.n_classes == 10 and data.input_shape == (1, 8, 8)
    assert np.bincount(data.y_test).min() >= 35  # stratified
    assert "stratified 80/20 split, seed 0" in data.note


def test_digits_split_is_seeded():
    a, b, c = load_dataset("digits", seed=0), load_dataset("digits", seed=0), load_dataset("digits", seed=1)
    assert np.array_equal(a.y_test, b.y_test) and np.array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.x_test, c.x_test)
    assert "seed 1" in c.note


def test_bad_test_fraction():
    assert "test_fraction" in load_error("digits", test_fraction=1.0)


# --------------------------------------------------------------------------- MNIST IDX


def _write_idx(path: Path, array: np.ndarray, magic: int, compress: bool) -> Path:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def _fake_mnist(root: Path, n: int, compress: bool, prefixes=("t10k",)) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix in prefixes:
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), 2051, compress)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, 2049, compress)
    return raw


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_test_files_only_are_split_and_say_so(tmp_path, compress):
    raw = _fake_mnist(tmp_path, 100, compress)
    data = load_dataset(f"mnist:{tmp_path}", seed=0)
    assert len(data.x_train) == 80 and len(data.x_test) == 20 and data.n_classes == 10
    assert data.x_train.shape[1:] == (1, 28, 28) and data.x_train.dtype == np.float32
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    assert np.bincount(data.y_test, minlength=10).tolist() == [2] * 10  # stratified
    assert "only the MNIST test files" in data.note and "80 train / 20 test" in data.note
    assert str(raw) in data.note and "seed 0" in data.note


def test_mnist_idx_round_trip_exact_pixels(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = np.zeros((4, 28, 28), dtype=np.uint8)
    images[:, 0, 0] = [0, 51, 255, 102]
    for prefix in ("train", "t10k"):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images, 2051, prefix == "train")
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.array([0, 1, 0, 1]), 2049, prefix == "t10k")
    data = load_dataset(f"mnist:{tmp_path}")
    np.testing.assert_allclose(data.x_train[:, 0, 0, 0], [0.0, 0.2, 1.0, 0.4], rtol=1e-6)
    assert data.y_test.tolist() == [0, 1, 0, 1] and data.n_classes == 2


def test_mnist_official_split_when_train_files_exist(tmp_path):
    _fake_mnist(tmp_path, 50, True, prefixes=("t10k", "train"))
    data = load_dataset(f"mnist:{tmp_path}")
    assert len(data.x_train) == 50 and len(data.x_test) == 50 and "official split" in data.note


def test_mnist_missing_files_name_the_expected_path(tmp_path):
    message = load_error(f"mnist:{tmp_path}")
    assert "no MNIST files" in message and str(tmp_path / "MNIST" / "raw") in message
    assert "t10k-images-idx3-ubyte" in message

    _fake_mnist(tmp_path / "train_only", 20, True, prefixes=("train",))
    assert "add t10k-images" in load_error(f"mnist:{tmp_path / 'train_only'}")

    raw = _fake_mnist(tmp_path / "no_labels", 20, True)
    (raw / "t10k-labels-idx1-ubyte.gz").unlink()
    assert "no t10k-labels-idx1-ubyte" in load_error(f"mnist:{tmp_path / 'no_labels'}")


def test_mnist_corrupt_files(tmp_path):
    raw = _fake_mnist(tmp_path, 20, False)
    images = raw / "t10k-images-idx3-ubyte"
    intact = images.read_bytes()

    images.write_bytes(intact[:500])
    assert "truncated" in load_error(f"mnist:{tmp_path}")

    images.write_bytes((2049).to_bytes(4, "big") + intact[4:])
    assert "magic number" in load_error(f"mnist:{tmp_path}")

    images.unlink()
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    assert "cannot read" in load_error(f"mnist:{tmp_path}")

    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(intact)[:-30])
    assert "cannot read" in load_error(f"mnist:{tmp_path}")

    (raw / "t10k-images-idx3-ubyte.gz").unlink()
    _write_idx(images, np.zeros((7, 28, 28)), 2051, False)
    assert "7 images" in load_error(f"mnist:{tmp_path}") and "20 labels" in load_error(f"mnist:{tmp_path}")


def test_real_mnist_test_set_splits_8000_2000():
    if not SHARED_MNIST.is_dir():
        pytest.skip(f"real MNIST files not present at {SHARED_MNIST}")
    data = load_dataset(f"mnist:{SHARED_MNIST.parents[1]}", seed=0)
    assert len(data.x_train) == 8000 and len(data.x_test) == 2000 and data.n_classes == 10
    assert "8000 train / 2000 test" in data.note


# --------------------------------------------------------------------------- .npz


def _save(tmp_path, name="d.npz", **arrays) -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def test_npz_with_explicit_test_set_and_uint8(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (30, 6, 6), dtype=np.uint8)
    x[0, 0, 0], x[1, 0, 0] = 255, 51
    path = _save(
        tmp_path, X=x, y=np.arange(30) % 3, X_test=rng.integers(0, 256, (9, 6, 6), dtype=np.uint8), y_test=np.arange(9) % 3
    )
    data = load_dataset(str(path))
    assert data.name == "d.npz" and data.n_classes == 3
    assert data.x_train.shape == (30, 1, 6, 6) and data.x_test.shape == (9, 1, 6, 6)
    assert data.x_train[0, 0, 0, 0] == 1.0 and data.x_train[1, 0, 0, 0] == pytest.approx(0.2)
    assert data.y_test.tolist() == (np.arange(9) % 3).tolist()  # explicit test set kept as given
    assert "given train/test split (30/9)" in data.note and "255" in data.note


def test_npz_flat_float_is_scaled_with_training_range(tmp_path):
    x = np.linspace(-5, 5, 40 * 4).reshape(40, 4)
    path = _save(tmp_path, "flat.npz", X=x, y=(np.arange(40) % 2).astype(float))  # whole floats are fine labels
    data = load_dataset(str(path), seed=0)
    assert data.input_shape == (4,) and len(data.x_train) == 32 and len(data.x_test) == 8
    assert data.y_train.dtype == np.int64 and data.x_train.dtype == np.float32
    assert data.x_train.min() >= 0 and data.x_train.max() <= 1 and "min-max" in data.note
    assert "stratified 80/20 split, seed 0" in data.note


def test_npz_test_values_outside_training_range_are_clipped(tmp_path):
    x = np.tile(np.linspace(10, 20, 8), (8, 1))
    path = _save(tmp_path, X=x, y=np.arange(8) % 2, X_test=np.array([[0.0] * 8, [30.0] * 8]), y_test=np.array([0, 1]))
    data = load_dataset(str(path))
    assert data.x_test.min() == 0.0 and data.x_test.max() == 1.0 and "[10, 20]" in data.note

    in_unit = _save(tmp_path, "unit.npz", X=x / 20, y=np.arange(8) % 2, X_test=np.full((2, 8), 1.5), y_test=np.array([0, 1]))
    data = load_dataset(str(in_unit))
    np.testing.assert_array_equal(data.x_train, (x / 20).astype(np.float32))  # already in [0, 1]: kept
    assert data.x_test.max() == 1.0 and "already in [0, 1]" in data.note and "clipped" in data.note


@pytest.mark.parametrize(("shape", "expected"), [((12, 5), (5,)), ((12, 4, 3), (1, 4, 3)), ((12, 2, 4, 3), (2, 4, 3))])
def test_npz_shapes(tmp_path, shape, expected):
    path = _save(tmp_path, X=np.random.default_rng(0).random(shape), y=np.arange(12) % 2)
    data = load_dataset(str(path), test_fraction=0.25)
    assert data.input_shape == expected and data.x_test.shape == (3, *expected)


def test_npz_split_is_seeded(tmp_path):
    path = _save(tmp_path, X=np.arange(60.0).reshape(30, 2) / 60, y=np.arange(30) % 3)
    a, b, c = (load_dataset(str(path), seed=s) for s in (3, 3, 4))
    assert np.array_equal(a.x_test, b.x_test) and not np.array_equal(a.x_test, c.x_test)


X, Y = np.random.default_rng(0).random((20, 3)), np.arange(20) % 2
NAN = X.copy()
NAN[3, 1], NAN[4, 2], NAN[5, 0] = np.inf, np.nan, -np.inf

BAD_NPZ = {
    "missing y": (dict(X=X), "no array 'y'"),
    "missing X": (dict(y=Y), "no array 'X'"),
    "X_test without y_test": (dict(X=X, y=Y, X_test=X), "X_test without y_test"),
    "y_test without X_test": (dict(X=X, y=Y, y_test=Y), "y_test without X_test"),
    "length mismatch": (dict(X=X, y=Y[:10]), "10 labels for 20 inputs"),
    "1-D X": (dict(X=np.zeros(20), y=Y), "N×F"),
    "5-D X": (dict(X=np.zeros((20, 1, 1, 1, 1)), y=Y), "N×C×H×W"),
    "empty X": (dict(X=np.zeros((0, 3)), y=np.zeros(0, dtype=int)), "empty"),
    "NaN/inf": (dict(X=NAN, y=Y), "3 NaN/inf values"),
    "string X": (dict(X=np.array([["a"] * 3] * 20), y=Y), "not numbers"),
    "negative labels": (dict(X=X, y=Y - 1), "negative"),
    "fractional labels": (dict(X=X, y=Y + 0.5), "non-integer"),
    "huge label": (dict(X=X, y=np.r_[Y[:-1], 10**12]), "too large"),
    "2-D y": (dict(X=X, y=Y[:, None]), "1-D"),
    "one class": (dict(X=X, y=np.zeros(20, dtype=int)), "at least 2 classes"),
    "class too small to split": (dict(X=X, y=np.r_[np.zeros(19, dtype=int), 1]), "too few"),
    "unused label": (dict(X=X, y=Y * 2), "every class present in the training split"),
    "test class not in train": (dict(X=X, y=Y, X_test=X[:3], y_test=np.array([0, 1, 2])), "never seen in training"),
    "test shape differs": (dict(X=X, y=Y, X_test=np.random.rand(4, 5), y_test=np.arange(4) % 2), "X_test samples have shape"),
    "uint8 X with float X_test": (dict(X=(X * 255).astype(np.uint8), y=Y, X_test=X, y_test=Y), "same dtype"),
}


@pytest.mark.parametrize("case", list(BAD_NPZ))
def test_npz_bad_inputs_are_one_line_errors(tmp_path, case):
    arrays, word = BAD_NPZ[case]
    assert word in load_error(_save(tmp_path, "bad.npz", **arrays))


def test_missing_path_unknown_name_and_unreadable_files(tmp_path):
    message = load_error(tmp_path / "nope.npz")
    assert "does not exist" in message and "digits" in message and "mnist:ROOT" in message
    message = load_error("cifar10")
    assert "unknown dataset" in message and "mnist:ROOT" in message
    assert "folder" in load_error(tmp_path)

    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"PK\x03\x04 not really a zip")
    assert "not a readable .npz" in load_error(garbage)
    garbage.write_bytes(b"")
    assert "not an .npz" in load_error(garbage)
    text = tmp_path / "data.csv"
    text.write_text("1,2,3\n4,5,6\n")
    assert "not an .npz" in load_error(text)

    np.save(tmp_path / "single.npy", X)
    assert ".npy" in load_error(tmp_path / "single.npy")

    np.savez(tmp_path / "objects.npz", X=np.array([[object()]] * 20, dtype=object), y=Y)
    assert "object" in load_error(tmp_path / "objects.npz")

    corrupt = tmp_path / "corrupt.npz"
    np.savez_compressed(corrupt, X=np.random.default_rng(0).random((500, 20)), y=np.arange(500) % 2)
    raw = bytearray(corrupt.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 64] = bytes(64)
    corrupt.write_bytes(bytes(raw))
    assert "corrupt" in load_error(corrupt)


def test_samples_without_features_are_refused(tmp_path):
    for shape in ((40, 0), (40, 0, 8)):
        path = tmp_path / f"empty{len(shape)}.npz"
        np.savez(path, X=np.zeros(shape, np.float32), y=np.arange(40) % 2)
        with pytest.raises(DataError, match="holds no values"):
            load_dataset(str(path))


def test_a_data_path_is_recorded_absolute(tmp_path, monkeypatch):
    from fastslow.data import resolved_data

    (tmp_path / "d.npz").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert resolved_data("d.npz") == str(tmp_path / "d.npz") and resolved_data("mnist:raw") == f"mnist:{tmp_path / 'raw'}"
    assert resolved_data("digits") == "digits" and resolved_data("missing.npz") == "missing.npz"  # left for load_dataset to name
