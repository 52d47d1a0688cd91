"""Folders of images (folder:ROOT, torchvision's ImageFolder layout) read with Pillow: PNG and JPEG,
grey and RGB, resizing, a given train/test split, and unreadable files refused or skipped."""

import json
from pathlib import Path

import numpy as np
import pytest
from load_errors import load_error  # this folder is on sys.path (rootdir import mode)
from PIL import Image

from fastslow.cli import main
from fastslow.data import load_dataset, resolved_data

CLASSES = ("cat", "dog", "owl")


def pattern(rng: np.random.Generator, label: int, size: int = 12) -> np.ndarray:
    """A grey image whose bright band's column tells its class."""
    image = (rng.random((size, size)) * 60).astype(np.uint8)
    image[:, 4 * label : 4 * label + 4] = 220
    return image


def write_folder(root: Path, per_class: int = 8, colour: str = "mixed", seed: int = 0) -> dict[Path, np.ndarray]:
    """ROOT/<class>/<n>.png|jpg; ``colour``: "grey" (PNG), "rgb" (PNG) or "mixed" (grey PNG and RGB JPEG).
    Returns each PNG's pixels [H, W] or [H, W, 3] (JPEG is lossy: not returned)."""
    rng = np.random.default_rng(seed)
    pixels = {}
    for label, name in enumerate(CLASSES):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            grey = pattern(rng, label)
            if colour == "grey" or colour == "mixed" and i % 2:
                Image.fromarray(grey, "L").save(folder / f"{i:03d}.png")
                pixels[folder / f"{i:03d}.png"] = grey
            elif colour == "rgb":
                rgb = np.stack([grey, 255 - grey, grey // 2], axis=-1)
                Image.fromarray(rgb, "RGB").save(folder / f"{i:03d}.png")
                pixels[folder / f"{i:03d}.png"] = rgb
            else:
                Image.fromarray(np.stack([grey] * 3, axis=-1), "RGB").save(folder / f"{i:03d}.jpg", quality=95)
    return pixels


def _find(rows: np.ndarray, image: np.ndarray) -> int:
    """How many of ``rows`` [N, C, H, W] equal ``image`` [C, H, W]."""
    return int(sum(np.array_equal(row, image) for row in rows))


def test_grey_png_folder_pixels_labels_and_split(tmp_path):
    pixels = write_folder(tmp_path, colour="grey")
    (tmp_path / "README.txt").write_text("not an image")  # other files are ignored
    (tmp_path / "dog" / ".hidden.png").write_bytes(b"junk")  # hidden files too
    data = load_dataset(f"folder:{tmp_path}", seed=0, test_fraction=0.25)
    assert data.classes == CLASSES and data.n_classes == 3
    assert data.x_train.shape == (18, 1, 12, 12) and data.x_test.shape == (6, 1, 12, 12)
    assert "3 classes, grey" in data.note and "stratified 75/25 split, seed 0" in data.note
    every = np.concatenate([data.x_train, data.x_test])
    for path, grey in pixels.items():  # uint8 / 255, each image once
        assert _find(every, grey[None] / np.float32(255)) == 1, path
    labels = np.concatenate([data.y_train, data.y_test])
    assert np.bincount(labels).tolist() == [8, 8, 8]


def test_rgb_kept_and_grey_replicated_when_mixed(tmp_path):
    pixels = write_folder(tmp_path / "rgb", colour="rgb")
    data = load_dataset(f"folder:{tmp_path / 'rgb'}")
    assert data.input_shape == (3, 12, 12) and "RGB" in data.note
    every = np.concatenate([data.x_train, data.x_test])
    path, rgb = next(iter(pixels.items()))
    assert _find(every, rgb.transpose(2, 0, 1) / np.float32(255)) == 1
    mixed = load_dataset(f"folder:{write_folder(tmp_path / 'mixed') and tmp_path / 'mixed'}")
    assert mixed.input_shape == (3, 12, 12) and "12 grey images replicated to 3 channels" in mixed.note


def test_image_size_resizes_and_differing_sizes_need_it(tmp_path):
    write_folder(tmp_path, colour="grey")
    Image.fromarray(np.zeros((20, 16), np.uint8), "L").save(tmp_path / "owl" / "big.png")
    message = load_error(f"folder:{tmp_path}")
    assert "differ in size" in message and "big.png is 16×20" in message and "--image-size" in message
    data = load_dataset(f"folder:{tmp_path}", image_size=8)
    assert data.input_shape == (1, 8, 8) and "resized to 8×8" in data.note
    expected = np.asarray(Image.open(tmp_path / "cat" / "000.png").resize((8, 8), Image.Resampling.BILINEAR)) / np.float32(255)
    assert _find(np.concatenate([data.x_train, data.x_test]), expected[None]) == 1


def test_given_train_and_test_folders(tmp_path):
    write_folder(tmp_path / "train", colour="grey")
    write_folder(tmp_path / "test", per_class=2, colour="grey", seed=1)
    data = load_dataset(f"folder:{tmp_path}")
    assert len(data.x_train) == 24 and len(data.x_test) == 6 and "given train/test split (24/6)" in data.note
    assert data.y_test.tolist() == [0, 0, 1, 1, 2, 2]  # in sorted class order
    (tmp_path / "test" / "emu").mkdir()
    Image.fromarray(np.zeros((12, 12), np.uint8)).save(tmp_path / "test" / "emu" / "0.png")
    assert "is no class of" in load_error(f"folder:{tmp_path}")


def test_layout_errors(tmp_path):
    assert "does not exist" in load_error(f"folder:{tmp_path / 'nowhere'}")
    (tmp_path / "one" / "cat").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "one" / "cat" / "a.png")
    assert "holds 1 class folder:" in load_error(f"folder:{tmp_path / 'one'}")
    loose = tmp_path / "loose"
    loose.mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(loose / "a.png")
    assert "holds 0 class folders (it holds 1 image directly: move each into its class's subfolder)" in load_error(
        f"folder:{loose}"
    )
    write_folder(tmp_path / "empty", colour="grey")
    (tmp_path / "empty" / "yak").mkdir()
    assert "yak holds no images" in load_error(f"folder:{tmp_path / 'empty'}")
    write_folder(tmp_path / "half" / "train", colour="grey")
    assert "has train/ but no test/" in load_error(f"folder:{tmp_path / 'half'}")
    assert "applies to folder: and tonic:" in load_error("digits", image_size=8)


def test_resolved_data_makes_root_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolved_data("folder:imgs") == f"folder:{tmp_path / 'imgs'}"


# --------------------------------------------------------------------------- unreadable images, and a fit

FOLDER_CONFIG = """
policies = ["confidence"]
[system1]
epochs = 2
timesteps = 3
hidden = [16]
[system2]
epochs = 2
[confidence]
thresholds = [0.5, 0.9]
"""


@pytest.fixture
def bad_folder(tmp_path):
    """A folder of PNG and JPEG images with one corrupt PNG and one truncated JPEG."""
    root = tmp_path / "images"
    write_folder(root, per_class=10)
    (root / "dog" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    jpeg = (root / "owl" / "000.jpg").read_bytes()
    (root / "owl" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    config = tmp_path / "folder.toml"
    config.write_text(FOLDER_CONFIG)
    return root, config


def test_unreadable_image_is_exit_2_naming_it(bad_folder, tmp_path, capsys):
    root, config = bad_folder
    code = main(["fit", "--data", f"folder:{root}", "--out", str(tmp_path / "run"), "--config", str(config), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: cannot read the image ") and len(err.strip().splitlines()) == 1
    assert str(root / "dog" / "corrupt.png") in err and "--skip-bad-images" in err
    assert not (tmp_path / "run" / "results.json").exists()


def test_fit_on_an_image_folder_skipping_bad_images(bad_folder, tmp_path, capsys):
    root, config = bad_folder
    out = tmp_path / "run"
    args = ["fit", "--data", f"folder:{root}", "--out", str(out), "--config", str(config), "--image-size", "10"]
    assert main([*args, "--skip-bad-images", "--quiet", "--device", "cpu"]) == 0
    assert "skipped 2 unreadable images" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["skipped_files"] == 2 and results["classes"] == list(CLASSES)
    assert "2 unreadable images skipped" in results["data_note"] and "resized to 10×10" in results["data_note"]
    assert results["config"]["image_size"] == 10 and results["config"]["skip_bad_images"] is True
    assert {"system1", "system2", "confidence@0.9"} <= {s["name"] for s in results["strategies"]}
    assert results["split"]["train"] + results["split"]["val"] + results["split"]["test"] == 30  # 32 files, 2 bad
    # The fit's recorded options load the same data again.
    assert main(["evaluate", str(out), "--quiet"]) == 0
