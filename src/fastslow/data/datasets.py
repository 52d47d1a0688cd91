"""Datasets: scikit-learn's digits, MNIST IDX files, or a user's .npz — loaded, validated, split.

Every problem with user data raises :class:`~fastslow.errors.DataError` with one line
naming the problem and the fix.
"""

from __future__ import annotations

import gzip
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from fastslow.errors import DataError

KNOWN = "known data: `digits`, `mnist:ROOT` (ROOT/MNIST/raw/*-ubyte[.gz]), or a path to an .npz holding X and y"
MNIST_TEST_ONLY_SPLIT = (8000, 2000)


@dataclass(frozen=True)
class Dataset:
    """Inputs as float32 in [0, 1], [N, C, H, W] for images or [N, F] flat; labels int64 0..K-1."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    note: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def load_dataset(spec: str, seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """Load ``digits``, ``mnist:ROOT`` or an ``.npz`` path; see the README for the formats."""
    if spec == "digits":
        return _digits(seed, test_fraction)
    if spec.startswith("mnist:"):
        return _mnist(Path(spec[len("mnist:"):]), seed)
    path = Path(spec)
    if path.suffix == ".npz" or path.exists():
        return _npz(path, seed, test_fraction)
    raise DataError(f"unknown dataset {spec!r}: {KNOWN}")


def _stratified_split(x: np.ndarray, y: np.ndarray, test_size: float | int, seed: int, what: str):
    counts = np.bincount(y)
    smallest = int(counts[counts > 0].min())
    if smallest < 2:
        raise DataError(f"{what}: class {int(np.flatnonzero(counts == smallest)[0])} has {smallest} sample, too few for a stratified split: give every class at least 2 samples or pass X_test/y_test")
    try:
        return train_test_split(x, y, test_size=test_size, stratify=y, random_state=seed)
    except ValueError as err:
        raise DataError(f"{what}: cannot make a stratified split ({err}): give every class more samples or pass X_test/y_test") from None


def _digits(seed: int, test_fraction: float) -> Dataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = _stratified_split(x, y, test_fraction, seed, "digits")
    note = f"scikit-learn digits (8×8), stratified {1 - test_fraction:.0%}/{test_fraction:.0%} split, seed {seed}"
    return Dataset("digits", x_train, y_train, x_test, y_test, 10, note)


def _find_idx(raw: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (raw / name).is_file():
            return raw / name
    return None


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse one IDX file (optionally gzip'd): big-endian header, then uint8 data."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read {path} ({err}): replace it with an intact IDX file") from None
    dims = magic & 0xFF
    if len(data) < 4 + 4 * dims or int.from_bytes(data[:4], "big") != magic:
        raise DataError(f"{path} is not an IDX file of the expected kind (magic number {magic}): replace it with the original MNIST file")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise DataError(f"{path} is truncated or corrupt ({body.size} bytes of data for shape {shape}): replace it with the original MNIST file")
    return body.reshape(shape)


def _mnist_pair(raw: Path, prefix: str) -> tuple[np.ndarray, np.ndarray] | None:
    images, labels = _find_idx(raw, f"{prefix}-images-idx3-ubyte"), _find_idx(raw, f"{prefix}-labels-idx1-ubyte")
    if images is None or labels is None:
        return None
    x, y = _read_idx(images, 2051), _read_idx(labels, 2049)
    if len(x) != len(y):
        raise DataError(f"{images} holds {len(x)} images but {labels} holds {len(y)} labels: replace them with matching MNIST files")
    return (x.astype(np.float32) / 255.0)[:, None], y.astype(np.int64)


def _mnist(root: Path, seed: int) -> Dataset:
    raw = root / "MNIST" / "raw"
    test = _mnist_pair(raw, "t10k")
    if test is None:
        raise DataError(f"no MNIST files under {raw}: expected t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz] (and train-*), as torchvision lays them out")
    train = _mnist_pair(raw, "train")
    if train is not None:
        note = f"MNIST, official split ({len(train[0])} train / {len(test[0])} test)"
        return _validated("mnist", *train, *test, note)
    x, y = test
    test_size = MNIST_TEST_ONLY_SPLIT[1] / sum(MNIST_TEST_ONLY_SPLIT) if len(x) != sum(MNIST_TEST_ONLY_SPLIT) else MNIST_TEST_ONLY_SPLIT[1]
    x_train, x_test, y_train, y_test = _stratified_split(x, y, test_size, seed, f"MNIST under {raw}")
    note = (f"only the MNIST test files were found under {raw}: split {len(x_train)} train / {len(x_test)} test, "
            f"stratified, seed {seed}")
    return _validated("mnist", x_train, y_train, x_test, y_test, note)


def _npz(path: Path, seed: int, test_fraction: float) -> Dataset:
    if not path.is_file():
        raise DataError(f"data file {path} does not exist: {KNOWN}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"{path} is not a readable .npz ({str(err).splitlines()[0] if str(err) else type(err).__name__}): save it with numpy.savez(X=..., y=...)") from None
    for key in ("X", "y"):
        if key not in arrays:
            raise DataError(f"{path} has no array {key!r} (found: {', '.join(sorted(arrays)) or 'none'}): save it with numpy.savez(X=..., y=...)")
    if ("X_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"{path} holds only one of X_test/y_test: give both, or neither for a stratified split")
    x = _as_inputs(arrays["X"], f"{path}: X")
    y = _as_labels(arrays["y"], len(x), f"{path}: y")
    if "X_test" in arrays:
        x_test = _as_inputs(arrays["X_test"], f"{path}: X_test")
        y_test = _as_labels(arrays["y_test"], len(x_test), f"{path}: y_test")
        if x_test.shape[1:] != x.shape[1:]:
            raise DataError(f"{path}: X_test samples have shape {x_test.shape[1:]} but X samples {x.shape[1:]}: make them match")
        note = f"{path.name}: given train/test split ({len(x)}/{len(x_test)})"
    else:
        _check_classes(y, f"{path}: y")
        x, x_test, y, y_test = _stratified_split(x, y, test_fraction, seed, f"{path}")
        note = f"{path.name}: stratified {1 - test_fraction:.0%}/{test_fraction:.0%} split, seed {seed}"
    x, x_test, scaling = _to_unit_range(x, x_test)
    return _validated(path.name, x, y, x_test, y_test, f"{note}; {scaling}")


def _as_inputs(x: np.ndarray, what: str) -> np.ndarray:
    if x.dtype.kind not in "uif" or x.dtype == np.bool_:
        raise DataError(f"{what} has dtype {x.dtype}, not numbers: store inputs as float or uint8")
    if x.ndim < 2 or x.ndim > 4:
        raise DataError(f"{what} has shape {x.shape}: inputs must be N×F, N×H×W or N×C×H×W")
    if len(x) == 0:
        raise DataError(f"{what} is empty (0 samples): give at least one sample per class")
    if x.dtype.kind == "f":
        bad = int((~np.isfinite(x)).sum())
        if bad:
            raise DataError(f"{what} holds {bad} NaN/inf values: clean or impute them before training")
    if x.ndim == 3:
        x = x[:, None]
    return x


def _as_labels(y: np.ndarray, n: int, what: str) -> np.ndarray:
    if y.ndim != 1:
        raise DataError(f"{what} has shape {y.shape}: labels must be a 1-D array of N integers")
    if len(y) != n:
        raise DataError(f"{what} has {len(y)} labels for {n} inputs: give one label per input")
    if y.dtype.kind not in "uif" or y.dtype == np.bool_:
        raise DataError(f"{what} has dtype {y.dtype}: labels must be integers 0..K-1")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or not np.equal(np.mod(y, 1), 0).all():
            raise DataError(f"{what} holds non-integer labels: labels must be integers 0..K-1")
    if (y < 0).any():
        raise DataError(f"{what} holds negative labels (min {y.min()}): labels must be integers 0..K-1")
    return y.astype(np.int64)


def _check_classes(y: np.ndarray, what: str) -> None:
    present = np.unique(y)
    if len(present) < 2:
        raise DataError(f"{what} holds {len(present)} class: classification needs at least 2 classes")


def _to_unit_range(x: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0, x_test.astype(np.float32) / 255.0, "uint8 inputs divided by 255"
    x, x_test = x.astype(np.float32), x_test.astype(np.float32)
    low, high = float(x.min()), float(x.max())
    if low >= 0.0 and high <= 1.0:
        return x, x_test, "inputs already in [0, 1]"
    span = high - low if high > low else 1.0
    scale = lambda a: np.clip((a - low) / span, 0.0, 1.0)  # noqa: E731
    return scale(x), scale(x_test), f"inputs min-max scaled with the training range [{low:g}, {high:g}]"


def _validated(name: str, x_train, y_train, x_test, y_test, note: str) -> Dataset:
    _check_classes(y_train, f"{name}: training labels")
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    missing = sorted(set(range(n_classes)) - set(np.unique(y_train).tolist()))
    if missing:
        raise DataError(f"{name}: classes {missing} never occur in the training split: labels must be 0..K-1 with every class present in the training split")
    return Dataset(name, np.ascontiguousarray(x_train, dtype=np.float32), y_train.astype(np.int64),
                   np.ascontiguousarray(x_test, dtype=np.float32), y_test.astype(np.int64), n_classes, note)
