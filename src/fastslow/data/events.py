"""Event-camera data through tonic: N-MNIST and DVS Gesture recordings as T binary frames.

``tonic:NMNIST:ROOT`` and ``tonic:DVSGesture:ROOT`` read what tonic's own classes read once its
archives are extracted under ROOT (see :data:`SOURCES` for the layout). Nothing is downloaded here:
where the files are missing the error says where to put them, and how to have tonic fetch them once.

Each recording becomes T frames [T, P, H, W] (P = 2 polarities) with tonic's
``ToFrame(n_time_bins=T)``, after tonic's ``Downsample`` to S×S where an image size S is asked for.
A frame counts, per pixel and polarity, the events of its time bin; counts are clipped to 1, so
System 1 receives one spike wherever a bin holds at least one event (the ``events`` encoding feeds
frame t at step t) and is charged for exactly those spikes. The note says how many events were read,
binned (tonic's bins drop the few events past the last whole bin) and fed as spikes after merging.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from fastslow.data.datasets import Dataset, _one_line, _stratified_split, _validated
from fastslow.errors import DataError


@dataclass(frozen=True)
class Source:
    """One tonic dataset: its class, the folders its archives extract to under ROOT/<cls>, its files."""

    cls: str
    title: str
    folders: tuple[str, str]  # train, test
    suffix: str
    layout: str


SOURCES: dict[str, Source] = {
    "nmnist": Source("NMNIST", "N-MNIST", ("Train", "Test"), ".bin", "ROOT/NMNIST/Train/<digit>/*.bin and ROOT/NMNIST/Test/..."),
    "dvsgesture": Source(
        "DVSGesture",
        "DVS Gesture",
        ("ibmGestureTrain", "ibmGestureTest"),
        ".npy",
        "ROOT/DVSGesture/ibmGestureTrain/userNN_<lighting>/<label>.npy and ROOT/DVSGesture/ibmGestureTest/...",
    ),
}
KNOWN_EVENTS = "tonic:NMNIST:ROOT or tonic:DVSGesture:ROOT"
# What reading one recording may raise (tonic's readers and transforms): each becomes a DataError naming the file.
_RECORDING_ERRORS = (OSError, EOFError, ValueError, IndexError, TypeError, AssertionError)


def parse_spec(rest: str) -> tuple[Source, Path]:
    """``NAME:ROOT`` (what follows ``tonic:``) as its source and ROOT; DataError for an unknown NAME."""
    name, _, root = rest.partition(":")
    source = SOURCES.get(name.lower())
    if source is None:
        raise DataError(f"unknown tonic dataset {name!r}: use {KNOWN_EVENTS}")
    return source, Path(root or ".")


def load_events(rest: str, seed: int, test_fraction: float, timesteps: int, image_size: int | None) -> Dataset:
    """The recordings of ``tonic:NAME:ROOT`` (``rest`` is ``NAME:ROOT``) as T = ``timesteps`` binary
    frames each, [N, T, P, S, S] float32 in {0, 1}; the official train/test split where both are
    present, else a stratified ``test_fraction`` split (seeded) of the one that is."""
    source, root = parse_spec(rest)
    try:
        import tonic.datasets
        from tonic import transforms
    except ImportError:
        raise DataError("tonic: data needs the tonic package: pip install 'fastslow[tonic]'") from None
    base = getattr(tonic.datasets, source.cls)
    where = root / source.cls
    fetch = f"python -c \"import tonic; [tonic.datasets.{source.cls}('{root}', train=t) for t in (True, False)]\" (downloads)"
    present = {
        train: where / folder
        for train, folder in zip((True, False), source.folders)
        if (where / folder).is_dir() and next((where / folder).rglob("*" + source.suffix), None) is not None
    }
    if not present:
        raise DataError(
            f"no {source.title} recordings under {where}: put them there as tonic lays them out ({source.layout}), or fetch them once with {fetch}"
        )
    width, height, polarities = base.sensor_size
    if image_size is not None and image_size > min(width, height):
        raise DataError(
            f"image size {image_size} is larger than the {source.title} sensor ({width}×{height}): pass --image-size {min(width, height)} or less"
        )
    size = (width, height) if image_size is None else (image_size, image_size)
    downsample = None if size == (width, height) else transforms.Downsample(sensor_size=base.sensor_size, target_size=size)
    to_frame = transforms.ToFrame(sensor_size=(size[0], size[1], polarities), n_time_bins=timesteps)
    reader = _offline(base, source)
    parts, counts = {}, np.zeros(3, dtype=np.int64)
    for train, folder in present.items():
        try:
            recordings = reader(str(root), train=train)
        except ValueError as err:  # tonic parses labels (and DVS Gesture's users) from the names
            raise DataError(f"{folder} is not laid out as tonic reads it ({_one_line(err)}): use {source.layout}") from None
        parts[train] = _frames(recordings, downsample, to_frame, (timesteps, polarities, size[1], size[0]), counts)
    read, binned, spikes = (int(c) for c in counts)
    shape = f"{polarities}×{size[1]}×{size[0]}" + ("" if downsample is None else f" (sensor {width}×{height} downscaled)")
    events_note = (
        f"{timesteps} binary frames {shape} per recording: {read} events read, {binned} binned, "
        f"{spikes} spikes after merging each pixel's events within one bin"
    )
    if len(parts) == 2:
        note = (
            f"{source.title} via tonic, official split ({len(parts[True][0])} train / {len(parts[False][0])} test); {events_note}"
        )
        dataset = _validated(source.cls.lower(), *parts[True], *parts[False], note)
    else:
        ((which, (x, y)),) = parts.items()
        x_train, x_test, y_train, y_test = _stratified_split(x, y, test_fraction, seed, f"{source.title} under {present[which]}")
        split = f"only {present[which]} was found: split {len(x_train)} train / {len(x_test)} test, stratified, seed {seed}"
        dataset = _validated(
            source.cls.lower(), x_train, y_train, x_test, y_test, f"{source.title} via tonic, {split}; {events_note}"
        )
    classes = tuple(base.classes[: dataset.n_classes])
    return replace(dataset, frames=True, classes=classes)


def _offline(base: type, source: Source) -> type:
    """``base`` (a tonic dataset class) that reads what is on disk and never downloads: tonic's own
    check wants its archive and (nearly) all recordings present, else it downloads them."""

    def present(self) -> bool:
        return next(Path(self.location_on_system, self.folder_name).rglob("*" + source.suffix), None) is not None

    def download(self) -> None:
        raise DataError(
            f"no {source.title} recordings under {Path(self.location_on_system, self.folder_name)}: put them there ({source.layout})"
        )

    # tonic finds its files under ROOT/<class name>: the subclass keeps the name.
    return type(base.__name__, (base,), {"_check_exists": present, "download": download})


def _frames(
    recordings, downsample, to_frame, shape: tuple[int, int, int, int], counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Every recording as binary frames [N, *shape] (uint8) and its label [N]; ``counts`` += (events
    read, events binned, spikes after clipping)."""
    x = np.zeros((len(recordings), *shape), dtype=np.uint8)
    y = np.zeros(len(recordings), dtype=np.int64)
    for index in range(len(recordings)):
        path = recordings.data[index]
        try:
            events, label = recordings[index]
            if downsample is not None and len(events):
                events = downsample(events)
            frames = to_frame(events)
        except _RECORDING_ERRORS as err:
            raise DataError(f"cannot read the recording {path} ({_one_line(err)}): replace it with an intact one") from None
        if frames.shape != shape:
            raise DataError(f"the recording {path} gave frames {frames.shape}, not {shape}: replace it with an intact one")
        counts += (len(events), int(frames.sum()), int(np.count_nonzero(frames)))
        x[index] = frames > 0
        y[index] = label
    return x, y
