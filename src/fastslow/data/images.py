"""Folders of images: ``folder:ROOT`` with one subfolder per class (torchvision's ImageFolder layout).

ROOT/<class>/**/*.png|jpg|… (class labels 0..K-1 in the sorted order of the class names), or
ROOT/train/<class>/… with ROOT/test/<class>/… for a given split. Pillow reads the images; grey
images stay one channel and colour ones become RGB (a folder mixing both is RGB throughout, the
grey images replicated to 3 channels); an alpha channel is dropped. ``image_size`` S resizes every
image to S×S (bilinear; the aspect ratio is not kept); without it every image must have one size.
An image that cannot be read is an error naming it, or, with ``skip_bad``, left out and counted.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from fastslow.data.datasets import Dataset, _one_line, _stratified_split, _validated
from fastslow.errors import DataError

# Those torchvision's ImageFolder takes (Pillow reads them all); other files in the folders are ignored.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
LAYOUT = "ROOT/<class>/*.png|jpg (or ROOT/train/<class>/ and ROOT/test/<class>/)"


def load_folder(root: Path, seed: int, test_fraction: float, image_size: int | None, skip_bad: bool) -> Dataset:
    """The images under ``root`` as [N, C, H, W] float32 in [0, 1] (uint8 divided by 255), labelled by
    class folder; a stratified ``test_fraction`` split (seeded) unless ROOT/train and ROOT/test give one."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - matplotlib requires Pillow
        raise DataError("folder: data needs Pillow: pip install pillow") from None
    if not root.exists():
        raise DataError(f"image folder {root} does not exist: check ROOT in folder:ROOT ({LAYOUT})")
    if not root.is_dir():
        raise DataError(f"{root} is a file, not a folder of images: pass folder:ROOT with {LAYOUT}")
    train_dir, test_dir = root / "train", root / "test"
    if train_dir.is_dir() != test_dir.is_dir():
        given, missing = (train_dir, test_dir) if train_dir.is_dir() else (test_dir, train_dir)
        raise DataError(
            f"{root} has {given.name}/ but no {missing.name}/: add {missing} with the same class folders, or put the class folders directly in {root}"
        )
    split_given = train_dir.is_dir()
    classes = _class_folders(train_dir if split_given else root)
    skipped: list[str] = []
    reader = _Reader(Image, image_size, skip_bad, skipped)
    x_test = None
    if split_given:
        x, y = reader.read(_files(train_dir, classes, every_class=True))
        test_classes = _class_folders(test_dir, at_least=1)
        unknown = sorted(set(test_classes) - set(classes))
        if unknown:
            raise DataError(
                f"{test_dir / unknown[0]} is no class of {train_dir} (its classes: {', '.join(classes)}): give train/ and test/ the same class folders"
            )
        x_test, y_test = reader.read(_files(test_dir, classes, every_class=False))
        if not x_test:
            raise DataError(
                f"{test_dir} holds no readable images: add some to its class folders, or remove train/ and test/ for a split"
            )
    else:
        x, y = reader.read(_files(root, classes, every_class=True))
    _same_size(reader.sizes)
    x, x_test, channels = _common_channels(x, x_test)
    skipped_note = f"; {_count(len(skipped), 'unreadable image')} skipped (e.g. {skipped[0]})" if skipped else ""
    resized = f", resized to {image_size}×{image_size}" if image_size is not None else ""
    described = f"{len(classes)} classes, {channels}{resized}"
    if split_given:
        note = f"{root.name}/: {described}, given train/test split ({len(x)}/{len(x_test)}){skipped_note}"
    else:
        x, x_test, y, y_test = _stratified_split(x, y, test_fraction, seed, f"image folder {root}")
        percent = f"{100 * (1 - test_fraction):g}/{100 * test_fraction:g}"
        note = f"{root.name}/: {described}, stratified {percent} split, seed {seed}{skipped_note}"
    scale = lambda a: a.astype(np.float32) / 255.0  # noqa: E731
    dataset = _validated(root.name or "folder", scale(x), y, scale(x_test), y_test, note)
    return replace(dataset, classes=tuple(classes), skipped=tuple(skipped))


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}" + ("" if n == 1 else "s")


def _class_folders(folder: Path, at_least: int = 2) -> list[str]:
    """The class subfolders of ``folder``, sorted (hidden ones left out)."""
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(names) < at_least:
        loose = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        extra = f" (it holds {_count(len(loose), 'image')} directly: move each into its class's subfolder)" if loose else ""
        raise DataError(
            f"{folder} holds {_count(len(names), 'class folder')}{extra}: put each class's images in its own subfolder, at least {at_least} classes ({LAYOUT})"
        )
    return names


def _files(folder: Path, classes: list[str], every_class: bool) -> list[tuple[Path, int]]:
    """Every image file (by suffix, hidden files left out) under each class folder of ``folder``, in
    sorted order, with its class index; with ``every_class``, a class folder with none is an error."""
    files = []
    for label, name in enumerate(classes):
        found = sorted(
            p
            for p in (folder / name).rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
        )
        if not found and every_class:
            raise DataError(
                f"class folder {folder / name} holds no images ({', '.join(IMAGE_SUFFIXES)}): add some or remove the folder"
            )
        files += [(p, label) for p in found]
    return files


class _Reader:
    """Reads images as uint8 [H, W, C] arrays; records each one's size, and skips (into ``skipped``)
    or refuses the unreadable ones."""

    def __init__(self, image_module, image_size: int | None, skip_bad: bool, skipped: list[str]) -> None:
        self.Image = image_module
        self.image_size = image_size
        self.skip_bad = skip_bad
        self.skipped = skipped
        self.sizes: dict[tuple[int, int], Path] = {}  # each size seen → the first image of that size
        # Pillow's errors for a file it cannot identify, a truncated or corrupt one, an absurd size.
        self.errors = (OSError, ValueError, SyntaxError, EOFError, image_module.DecompressionBombError)

    def read(self, files: list[tuple[Path, int]]) -> tuple[list[np.ndarray], np.ndarray]:
        images, labels = [], []
        for path, label in files:
            try:
                with self.Image.open(path) as image:
                    image.load()  # decode now: a truncated file fails here, with its name at hand
                    image = image.convert("L" if image.mode in _GREY_MODES else "RGB")
                    if self.image_size is not None:
                        image = image.resize((self.image_size, self.image_size), self.Image.Resampling.BILINEAR)
                    array = np.asarray(image, dtype=np.uint8)
            except self.errors as err:
                if not self.skip_bad:
                    raise DataError(
                        f"cannot read the image {path} ({_one_line(err)}): replace or remove it, or pass --skip-bad-images to leave such files out"
                    ) from None
                self.skipped.append(str(path))
                continue
            self.sizes.setdefault(array.shape[:2], path)
            images.append(array if array.ndim == 3 else array[:, :, None])
            labels.append(label)
        if not images and files:
            raise DataError(f"none of the {len(files)} images could be read (e.g. {files[0][0]}): replace them")
        return images, np.asarray(labels, dtype=np.int64)


def _same_size(sizes: dict[tuple[int, int], Path]) -> None:
    if len(sizes) > 1:
        (first, a), (second, b) = list(sizes.items())[:2]
        raise DataError(
            f"the images differ in size ({a} is {first[1]}×{first[0]}, {b} is {second[1]}×{second[0]}): pass --image-size S to resize them all to S×S"
        )


def _common_channels(x: list[np.ndarray], x_test: list[np.ndarray] | None) -> tuple[np.ndarray, np.ndarray | None, str]:
    """The images as [N, C, H, W] uint8: all grey (C = 1), or all RGB (grey ones replicated) if any is colour."""
    every = x + (x_test or [])
    colour = any(a.shape[2] == 3 for a in every)
    grey_count = sum(a.shape[2] == 1 for a in every)

    def stack(arrays: list[np.ndarray]) -> np.ndarray:  # (one size: checked before)
        if colour:
            arrays = [np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a for a in arrays]
        return np.ascontiguousarray(np.stack(arrays).transpose(0, 3, 1, 2))

    described = (
        "grey" if not colour else ("RGB" if not grey_count else f"RGB ({grey_count} grey images replicated to 3 channels)")
    )
    return stack(x), None if x_test is None else stack(x_test), described
