"""Datasets: scikit-learn's digits, MNIST IDX files, a user's .npz, a folder of images
(:mod:`fastslow.data.images`) or event-camera recordings (:mod:`fastslow.data.events`) — loaded,
validated, split.

Every problem with user data raises :class:`~fastslow.errors.DataError` with one line
naming the problem and the fix; no raw numpy, zipfile, gzip or OS error escapes.
"""

from __future__ import annotations

import gzip
import math
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from fastslow.errors import DataError

KNOWN = (
    "known data: `digits`, `mnist:ROOT` (ROOT/MNIST/raw/*-ubyte[.gz]), `folder:ROOT` (ROOT/<class>/*.png|jpg), "
    "`tonic:NMNIST:ROOT`, `tonic:DVSGesture:ROOT`, or a path to an .npz holding X and y"
)
DEFAULT_TIMESTEPS = 8  # event frames per recording when none are asked for (System 1's default T)
MNIST_TEST_ONLY_SPLIT = (8000, 2000)
MAX_LABEL = 2**31 - 1  # labels must be 0..K-1 with every class present, so anything larger is a mistake
_READ_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error, KeyError, RuntimeError)


@dataclass(frozen=True)
class Dataset:
    """Inputs as float32 in [0, 1], [N, C, H, W] for images, [N, F] flat, or [N, T, C, H, W] binary
    event frames (``frames``: frame t is System 1's input at step t); labels int64 0..K-1.
    ``classes``: the class names where the data name them; ``skipped``: files left out as unreadable."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    note: str
    frames: bool = False
    classes: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def load_dataset(
    spec: str,
    seed: int = 0,
    test_fraction: float = 0.2,
    *,
    timesteps: int = DEFAULT_TIMESTEPS,
    image_size: int | None = None,
    skip_bad_images: bool = False,
) -> Dataset:
    """Load ``digits``, ``mnist:ROOT``, ``folder:ROOT``, ``tonic:NAME:ROOT`` or an ``.npz`` path (see
    docs/data.md). ``timesteps``: event frames per recording (System 1's T); ``image_size`` S: folder
    images resized to S×S, an event sensor downscaled to S×S; ``skip_bad_images``: leave out (and
    count) the unreadable images of a folder instead of refusing them."""
    if not (isinstance(test_fraction, (int, float)) and 0.0 < test_fraction < 1.0):
        raise DataError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction!r}: pass e.g. 0.2")
    spec = str(spec)
    if spec.startswith("folder:"):
        from fastslow.data.images import load_folder

        return load_folder(Path(spec[len("folder:") :] or "."), seed, test_fraction, image_size, skip_bad_images)
    if spec.startswith("tonic:"):
        from fastslow.data.events import load_events

        return load_events(spec[len("tonic:") :], seed, test_fraction, timesteps, image_size)
    if image_size is not None:
        raise DataError(
            f"an image size ({image_size}) applies to folder: and tonic: data, not to {spec!r}: leave --image-size (config image_size) out"
        )
    if spec == "digits":
        return _digits(seed, test_fraction)
    if spec.startswith("mnist:"):
        return _mnist(Path(spec[len("mnist:") :] or "."), seed)
    path = Path(spec)
    if path.is_dir():
        raise DataError(f"{path} is a folder, not an .npz file: {KNOWN}")
    if path.exists():
        return _npz(path, seed, test_fraction)
    if path.suffix.lower() == ".npz" or len(path.parts) > 1:
        raise DataError(f"data file {path} does not exist: check the path; {KNOWN}")
    raise DataError(f"unknown dataset {spec!r} (not a name and no such file): {KNOWN}")


@dataclass
class Inputs:
    """Inputs to answer [N, ...] float32 in [0, 1], their labels [N] where known, and where they came from."""

    x: np.ndarray
    y: np.ndarray | None
    note: str


def load_inputs(spec: str, seed: int = 0, test_fraction: float = 0.2, **options) -> Inputs:
    """What ``fastslow predict --data`` answers: for ``digits``, ``mnist:ROOT``, ``folder:ROOT`` and
    ``tonic:NAME:ROOT`` their test split (as a fit with ``seed``, ``test_fraction`` and the
    :func:`load_dataset` ``options`` splits them); for an ``.npz`` every input in ``X`` (with ``y`` if
    it holds one: labels are optional), uint8 divided by 255, floats already in [0, 1]."""
    spec = str(spec)
    path = Path(spec)
    if spec == "digits" or spec.startswith(("mnist:", "folder:", "tonic:")) or not path.is_file():
        dataset = load_dataset(spec, seed=seed, test_fraction=test_fraction, **options)
        return Inputs(dataset.x_test, dataset.y_test, f"{dataset.name} test split ({dataset.note})")
    arrays = _load_npz(path)
    if "X" not in arrays:
        found = ", ".join(sorted(arrays)) or "none"
        raise DataError(f"{path} has no array 'X' (found: {found}): save the inputs with numpy.savez(path, X=...) (y optional)")
    x = _as_inputs(arrays["X"], f"{path}: X")
    y = _as_labels(arrays["y"], len(x), f"{path}: y") if "y" in arrays else None
    if x.dtype == np.uint8:
        x, scaling = x.astype(np.float32) / 255.0, "uint8 inputs divided by 255"
    else:
        check_inputs(x, f"{path}: the inputs in X")
        x, scaling = x.astype(np.float32), "inputs in [0, 1]"
    labels = f"{len(x)} labelled inputs" if y is not None else f"{len(x)} inputs without labels"
    return Inputs(np.ascontiguousarray(x), y, f"{path.name}: {labels}; {scaling}")


def resolved_data(spec: str) -> str:
    """``spec`` with its path made absolute (the ROOT of ``mnist:``, ``folder:`` and ``tonic:NAME:``,
    an .npz path), so that a fit's recorded data still names the same files when ``evaluate`` runs
    from another folder."""
    spec = str(spec)
    if spec == "digits":
        return spec
    for prefix in ("mnist:", "folder:"):
        if spec.startswith(prefix):
            return prefix + str(Path(spec[len(prefix) :] or ".").absolute())
    if spec.startswith("tonic:"):
        name, _, root = spec[len("tonic:") :].partition(":")
        return f"tonic:{name}:{Path(root or '.').absolute()}"
    return str(Path(spec).absolute()) if Path(spec).exists() else spec  # absolute(), not resolve(): a symlink keeps its name


def _one_line(err: BaseException) -> str:
    """An exception's text squeezed to one short line, for quoting inside a DataError."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _stratified_split(x: np.ndarray, y: np.ndarray, test_size: float | int, seed: int, what: str):
    if len(y) == 0:
        raise DataError(f"{what} holds no samples: give at least 2 samples per class")
    counts = np.bincount(y)
    smallest = int(counts[counts > 0].min())
    if smallest < 2:
        cls = int(np.flatnonzero(counts == smallest)[0])
        raise DataError(
            f"{what}: class {cls} has {smallest} sample, too few for a stratified split: give every class at least 2 samples or pass X_test/y_test"
        )
    try:
        return train_test_split(x, y, test_size=test_size, stratify=y, random_state=seed)
    except ValueError as err:
        raise DataError(
            f"{what}: cannot make a stratified split ({_one_line(err)}): give every class more samples, change test_fraction, or pass X_test/y_test"
        ) from None


def _percent_note(test_fraction: float, seed: int) -> str:
    train = round(100 * (1 - test_fraction), 1)
    test = round(100 * test_fraction, 1)
    fmt = lambda v: f"{v:g}"  # noqa: E731
    return f"stratified {fmt(train)}/{fmt(test)} split, seed {seed}"


# --------------------------------------------------------------------------- digits


def _digits(seed: int, test_fraction: float) -> Dataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = _stratified_split(x, y, test_fraction, seed, "digits")
    note = f"scikit-learn digits (8×8), {_percent_note(test_fraction, seed)}"
    return Dataset("digits", x_train, y_train, x_test, y_test, 10, note)


# --------------------------------------------------------------------------- MNIST (IDX)


def _find_idx(raw: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (raw / name).is_file():
            return raw / name
    return None


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse one IDX file (optionally gzip'd): big-endian magic and sizes, then uint8 data."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"cannot read {path} ({_one_line(err)}): replace it with an intact IDX file") from None
    dims = magic & 0xFF
    header = 4 + 4 * dims
    if len(data) < 4 or int.from_bytes(data[:4], "big") != magic:
        found = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
        raise DataError(
            f"{path} is not an IDX file of the expected kind (magic number {found}, expected {magic}): replace it with the original MNIST file"
        )
    if len(data) < header:
        raise DataError(
            f"{path} is truncated ({len(data)} bytes, header needs {header}): replace it with the original MNIST file"
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    expected = math.prod(shape)
    if len(data) - header != expected:
        problem = "truncated" if len(data) - header < expected else "corrupt (extra bytes)"
        raise DataError(
            f"{path} is {problem}: {len(data) - header} bytes of data for shape {shape}: replace it with the original MNIST file"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _mnist_pair(raw: Path, prefix: str) -> tuple[np.ndarray, np.ndarray] | None:
    stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    images, labels = (_find_idx(raw, stem) for stem in stems)
    if images is None and labels is None:
        return None
    if images is None or labels is None:
        have, missing = (labels, stems[0]) if images is None else (images, stems[1])
        raise DataError(f"{raw} has {have.name} but no {missing}[.gz]: add the missing file (or remove both)")
    x, y = _read_idx(images, 2051), _read_idx(labels, 2049)
    if len(x) != len(y):
        raise DataError(
            f"{images} holds {len(x)} images but {labels} holds {len(y)} labels: replace them with matching MNIST files"
        )
    if len(x) == 0:
        raise DataError(f"{images} holds 0 images: replace it with the original MNIST file")
    return (x.astype(np.float32) / 255.0)[:, None], y.astype(np.int64)


def _mnist(root: Path, seed: int) -> Dataset:
    raw = root / "MNIST" / "raw"
    test = _mnist_pair(raw, "t10k")
    train = _mnist_pair(raw, "train")
    if test is None and train is None:
        raise DataError(
            f"no MNIST files under {raw}: put t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz] (optionally train-*) there, as torchvision lays them out, or fix ROOT in mnist:ROOT"
        )
    if test is None:
        raise DataError(
            f"only the MNIST train files were found under {raw}: add t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz]"
        )
    if train is not None:
        if train[0].shape[1:] != test[0].shape[1:]:
            raise DataError(
                f"MNIST train images under {raw} are {train[0].shape[2:]} but test images {test[0].shape[2:]}: replace them with matching files"
            )
        note = f"MNIST, official split ({len(train[0])} train / {len(test[0])} test)"
        return _validated("mnist", *train, *test, note)
    x, y = test
    total = sum(MNIST_TEST_ONLY_SPLIT)
    test_size = MNIST_TEST_ONLY_SPLIT[1] if len(x) == total else MNIST_TEST_ONLY_SPLIT[1] / total
    x_train, x_test, y_train, y_test = _stratified_split(x, y, test_size, seed, f"MNIST under {raw}")
    note = (
        f"only the MNIST test files were found under {raw}: split {len(x_train)} train / {len(x_test)} test, "
        f"stratified, seed {seed}"
    )
    return _validated("mnist", x_train, y_train, x_test, y_test, note)


# --------------------------------------------------------------------------- .npz


def check_inputs(x: torch.Tensor | np.ndarray, what: str = "the inputs") -> None:
    """Raise :class:`DataError` unless every value of ``x`` (a tensor or array of any shape) is finite
    and in [0, 1], the range every System 1 and System 2 here is fitted on. The one range check of
    every way in: ``fastslow predict``, :meth:`~fastslow.serving.Deployment.predict`, serving, the evaluation."""
    if isinstance(x, torch.Tensor):
        if x.numel() == 0 or x.dtype == torch.bool:
            return
        # One pass and no mask (an isfinite mask of the batch cost 10–20× more, on every served batch):
        # a NaN anywhere makes both extremes NaN, and an infinity is one of them. One read back (a sync on a GPU).
        low, high = torch.stack(torch.aminmax(x)).tolist()
    else:
        x = np.asarray(x)
        if x.size == 0 or x.dtype == np.bool_:
            return
        low, high = float(x.min()), float(x.max())
    if not (math.isfinite(low) and math.isfinite(high)):
        bad = int((~torch.isfinite(x)).sum()) if isinstance(x, torch.Tensor) else int(np.count_nonzero(~np.isfinite(x)))
        raise DataError(f"{what} hold {bad} NaN/inf values: clean or impute them first")
    if low < 0.0 or high > 1.0:
        raise DataError(
            f"{what} hold values in [{low:g}, {high:g}], outside [0, 1] where the systems were fitted: "
            "scale them as the fit's data was (uint8 images divided by 255, other data into [0, 1])"
        )


def check_batch(x: torch.Tensor, y: torch.Tensor | None = None, n_classes: int | None = None) -> None:
    """Raise :class:`DataError` for a batch given through the Python API that no model should see:
    no samples, inputs outside [0, 1] or NaN/inf (:func:`check_inputs`); labels ``y`` [N] that are not
    integers 0..``n_classes``-1, one per input. (Types, dtypes and shapes are the model's to check:
    :meth:`System1.run`.)"""
    if len(x) == 0:
        raise DataError("the batch is empty (0 inputs): pass at least one input")
    check_inputs(x)
    if y is None:
        return
    if (
        not isinstance(y, torch.Tensor)
        or y.dim() != 1
        or y.dtype.is_floating_point
        or y.dtype.is_complex
        or y.dtype == torch.bool
    ):
        raise DataError(
            f"labels must be a 1-D integer tensor, got {type(y).__name__} {getattr(y, 'dtype', '')} "
            f"{list(getattr(y, 'shape', []))}: pass torch.as_tensor(labels, dtype=torch.long)"
        )
    if len(y) != len(x):
        raise DataError(f"{len(y)} labels for {len(x)} inputs: give one label per input")
    if n_classes is not None and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise DataError(
            f"labels must lie in 0..{n_classes - 1} (the model's {n_classes} classes), got {int(y.min())}..{int(y.max())}"
        )


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    fix = "save it with numpy.savez(path, X=..., y=...)"
    try:
        with path.open("rb") as handle:
            head = handle.read(6)
    except OSError as err:
        raise DataError(f"cannot read {path} ({_one_line(err)}): check the file's permissions") from None
    if head.startswith(b"\x93NUMPY"):
        raise DataError(f"{path} is a single-array .npy file, not an .npz: {fix}")
    if not head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        raise DataError(f"{path} is not an .npz archive (not a zip file): {fix}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except ValueError as err:
        if "pickle" in str(err).lower() or "object" in str(err).lower():
            raise DataError(
                f"{path} holds an object (pickled) array, which is not loaded for safety: store X and y as numeric arrays and {fix}"
            ) from None
        raise DataError(f"{path} is not a readable .npz ({_one_line(err)}): {fix}") from None
    except _READ_ERRORS as err:
        raise DataError(f"{path} is not a readable .npz, it may be corrupt or truncated ({_one_line(err)}): {fix}") from None


def _npz(path: Path, seed: int, test_fraction: float) -> Dataset:
    arrays = _load_npz(path)
    for key in ("X", "y"):
        if key not in arrays:
            found = ", ".join(sorted(arrays)) or "none"
            raise DataError(f"{path} has no array {key!r} (found: {found}): save it with numpy.savez(path, X=..., y=...)")
    if ("X_test" in arrays) != ("y_test" in arrays):
        given, absent = ("X_test", "y_test") if "X_test" in arrays else ("y_test", "X_test")
        raise DataError(
            f"{path} holds only one of X_test/y_test ({given} without {absent}): give both, or neither for a stratified split"
        )
    x = _as_inputs(arrays["X"], f"{path}: X")
    y = _as_labels(arrays["y"], len(x), f"{path}: y")
    if "X_test" in arrays:
        x_test = _as_inputs(arrays["X_test"], f"{path}: X_test")
        y_test = _as_labels(arrays["y_test"], len(x_test), f"{path}: y_test")
        if x_test.shape[1:] != x.shape[1:]:
            raise DataError(f"{path}: X_test samples have shape {x_test.shape[1:]} but X samples {x.shape[1:]}: make them match")
        if (x.dtype == np.uint8) != (x_test.dtype == np.uint8):
            raise DataError(
                f"{path}: X is {x.dtype} but X_test is {x_test.dtype}, so they would be scaled differently: store both with the same dtype"
            )
        note = f"{path.name}: given train/test split ({len(x)}/{len(x_test)})"
    else:
        _check_classes(y, f"{path}: y")
        x, x_test, y, y_test = _stratified_split(x, y, test_fraction, seed, f"{path}")
        note = f"{path.name}: {_percent_note(test_fraction, seed)}"
    x, x_test, scaling = _to_unit_range(x, x_test)
    return _validated(path.name, x, y, x_test, y_test, f"{note}; {scaling}")


def _as_inputs(x: np.ndarray, what: str) -> np.ndarray:
    if x.dtype.kind not in "uif":
        raise DataError(f"{what} has dtype {x.dtype}, not numbers: store inputs as float or uint8")
    if x.ndim < 2 or x.ndim > 4:
        raise DataError(f"{what} has shape {x.shape}: inputs must be N×F, N×H×W or N×C×H×W")
    if len(x) == 0:
        raise DataError(f"{what} is empty (0 samples): give at least 2 samples per class")
    if 0 in x.shape[1:]:
        raise DataError(f"{what} has shape {x.shape}: each sample holds no values; store at least one feature per sample")
    if x.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(x)))
        if bad:
            raise DataError(f"{what} holds {bad} NaN/inf values: clean or impute them before training")
    if x.ndim == 3:
        x = x[:, None]
    return x


def _as_labels(y: np.ndarray, n: int, what: str) -> np.ndarray:
    if y.dtype.kind not in "uif":
        raise DataError(f"{what} has dtype {y.dtype}, not numbers: labels must be integers 0..K-1")
    if y.ndim != 1:
        raise DataError(f"{what} has shape {y.shape}: labels must be a 1-D array of N integers")
    if len(y) != n:
        raise DataError(f"{what} has {len(y)} labels for {n} inputs: give one label per input")
    if len(y) == 0:
        return y.astype(np.int64)
    if y.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(y) | (np.mod(y, 1) != 0)))
        if bad:
            raise DataError(f"{what} holds {bad} non-integer labels (e.g. 1.5 or NaN): labels must be integers 0..K-1")
    if y.min() < 0:
        raise DataError(f"{what} holds negative labels (min {int(y.min())}): labels must be integers 0..K-1")
    if y.max() > MAX_LABEL:
        raise DataError(
            f"{what} holds label {int(y.max())}, far too large: labels must be integers 0..K-1 with every class present"
        )
    return y.astype(np.int64)


def _check_classes(y: np.ndarray, what: str) -> None:
    present = np.unique(y)
    if len(present) < 2:
        raise DataError(f"{what} holds {len(present)} class: classification needs at least 2 classes")


def _to_unit_range(x: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """uint8 → /255; float already in [0, 1] kept; otherwise min-max with the training range. Test clipped to [0, 1]."""
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0, x_test.astype(np.float32) / 255.0, "uint8 inputs divided by 255"
    low, high = float(x.min()), float(x.max())
    if low >= 0.0 and high <= 1.0:
        x_test = x_test.astype(np.float32)
        outside = int(np.count_nonzero((x_test < 0) | (x_test > 1)))
        extra = f" ({outside} test values outside [0, 1] clipped)" if outside else ""
        return x.astype(np.float32), np.clip(x_test, 0.0, 1.0), f"inputs already in [0, 1]{extra}"
    # Work in float64 when values would overflow float32 arithmetic; float32 otherwise (memory).
    extreme = max(abs(low), abs(high), abs(float(x_test.min())), abs(float(x_test.max())))
    work = np.float64 if extreme >= 1e37 or x.dtype.kind in "iu" and x.dtype.itemsize > 2 else np.float32
    span = high - low if high > low else 1.0

    def scale(a: np.ndarray) -> np.ndarray:
        out = (a.astype(work) - work(low)) / work(span)
        return np.clip(out, 0.0, 1.0).astype(np.float32)

    return scale(x), scale(x_test), f"inputs min-max scaled with the training range [{low:g}, {high:g}]"


def _validated(name: str, x_train, y_train, x_test, y_test, note: str) -> Dataset:
    _check_classes(y_train, f"{name}: training labels")
    train_classes = np.unique(y_train)
    unseen = np.setdiff1d(np.unique(y_test), train_classes)
    if len(unseen):
        shown = ", ".join(str(int(c)) for c in unseen[:10]) + (", ..." if len(unseen) > 10 else "")
        raise DataError(
            f"{name}: test labels hold classes [{shown}] never seen in training: labels must be 0..K-1 with every class present in the training split"
        )
    n_classes = int(train_classes[-1]) + 1
    if len(train_classes) != n_classes:
        # The first missing labels lie below len(train_classes) + 11; never build arange(n_classes) itself.
        missing = np.setdiff1d(np.arange(min(n_classes, len(train_classes) + 11)), train_classes)
        shown = ", ".join(str(int(c)) for c in missing[:10]) + (", ..." if n_classes - len(train_classes) > 10 else "")
        raise DataError(
            f"{name}: classes [{shown}] never occur in the training split (labels go up to {n_classes - 1}): labels must be 0..K-1 with every class present in the training split"
        )
    return Dataset(
        name,
        np.ascontiguousarray(x_train, dtype=np.float32),
        y_train.astype(np.int64),
        np.ascontiguousarray(x_test, dtype=np.float32),
        y_test.astype(np.int64),
        n_classes,
        note,
    )
