"""Event-camera data (tonic:NMNIST:ROOT, tonic:DVSGesture:ROOT) from synthetic recordings written in
each dataset's own on-disk format, as tonic's own tests do: frames against a binning written here,
the layouts, the errors (nothing is ever downloaded), and a tiny fit end to end."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("tonic")

from load_errors import load_error  # this folder is on sys.path (rootdir import mode)

from fastslow.cli import main  # noqa: E402
from fastslow.data import load_dataset, load_inputs, resolved_data  # noqa: E402

NMNIST_CLASSES = (0, 1, 2)


def nmnist_events(rng: np.random.Generator, label: int, count: int = 120) -> np.ndarray:
    """[count, 4] events (x, y, t µs, p), time-sorted, placed by class so that a network can tell them apart."""
    x = rng.integers(3 + 10 * label, 10 + 10 * label, count)
    y = rng.integers(8, 26, count)
    t = np.sort(rng.integers(0, 300_000, count))
    p = rng.integers(0, 2, count)
    return np.stack([x, y, t, p], axis=1)


def write_nmnist_file(path: Path, events: np.ndarray) -> None:
    """N-MNIST's binary format: 5 bytes per event — x, y, then polarity (bit 7) and a 23-bit timestamp in µs."""
    x, y, t, p = events.T
    raw = np.zeros((len(events), 5), dtype=np.uint8)
    raw[:, 0], raw[:, 1] = x, y
    raw[:, 2] = (p << 7) | ((t >> 16) & 0x7F)
    raw[:, 3], raw[:, 4] = (t >> 8) & 0xFF, t & 0xFF
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw.tobytes())


def write_nmnist(root: Path, per_class=(6, 3), folders=("Train", "Test"), seed: int = 0) -> dict[str, list]:
    """ROOT/NMNIST/<Train|Test>/<digit>/<n>.bin, as tonic extracts N-MNIST; returns each folder's (path, events, label)."""
    rng = np.random.default_rng(seed)
    written = {}
    for folder, n in zip(folders, per_class):
        written[folder] = []
        for label in NMNIST_CLASSES:
            for i in range(n):
                events = nmnist_events(rng, label)
                path = root / "NMNIST" / folder / str(label) / f"{i:05d}.bin"
                write_nmnist_file(path, events)
                written[folder].append((path, events, label))
    return written


def write_dvsgesture(root: Path, users=(1, 2, 3), test_users=(4, 5), labels=(0, 1, 2), seed: int = 0) -> None:
    """ROOT/DVSGesture/ibmGesture<Train|Test>/userNN_<lighting>/<label>.npy, each [N, 4] (x, y, p, t in ms),
    tonic's preprocessed DVS Gesture."""
    rng = np.random.default_rng(seed)
    for folder, group in (("ibmGestureTrain", users), ("ibmGestureTest", test_users)):
        for user in group:
            where = root / "DVSGesture" / folder / f"user{user:02d}_fluorescent"
            where.mkdir(parents=True, exist_ok=True)
            for label in labels:
                count = 400
                x = rng.integers(40 * label, 40 * label + 40, count)
                y = rng.integers(0, 128, count)
                p = rng.integers(0, 2, count)
                t = np.sort(rng.integers(0, 6000, count))
                np.save(where / f"{label}.npy", np.stack([x, y, p, t], axis=1).astype(np.int64))


def reference_frames(x, y, t, p, timesteps: int, size: int) -> np.ndarray:
    """Binary frames [T, 2, size, size] by tonic's n_time_bins rule, written out here: bins of
    (t_last − t_first) // T from the first event, half-open (events past the last whole bin are dropped)."""
    frames = np.zeros((timesteps, 2, size, size), dtype=np.float32)
    width = (t[-1] - t[0]) // timesteps
    for xi, yi, ti, pi in zip(x, y, t, p):
        step = (ti - t[0]) // width
        if step < timesteps:
            frames[step, pi, yi, xi] = 1.0
    return frames


@pytest.fixture
def no_download(monkeypatch):
    """Any attempt of tonic to download fails the test."""
    import tonic.dataset

    def refuse(*args, **kwargs):
        raise AssertionError("tonic tried to download")

    monkeypatch.setattr(tonic.dataset, "download_and_extract_archive", refuse)


# --------------------------------------------------------------------------- N-MNIST


def test_nmnist_frames_match_the_binning_and_the_official_split(tmp_path, no_download):
    written = write_nmnist(tmp_path)
    data = load_dataset(f"tonic:NMNIST:{tmp_path}", timesteps=4)
    assert data.name == "nmnist" and data.frames and data.n_classes == 3
    assert data.x_train.shape == (18, 4, 2, 34, 34) and data.x_test.shape == (9, 4, 2, 34, 34)
    assert data.input_shape == (4, 2, 34, 34) and data.x_train.dtype == np.float32
    assert set(np.unique(data.x_train)) <= {0.0, 1.0}
    assert data.classes == ("0 - zero", "1 - one", "2 - two")
    assert "official split (18 train / 9 test)" in data.note
    # tonic lists each class folder's files in sorted order: the dataset keeps that order.
    for index, (_, events, label) in enumerate(written["Train"]):
        x, y, t, p = events.T
        assert data.y_train[index] == label
        np.testing.assert_array_equal(data.x_train[index], reference_frames(x, y, t, p, 4, 34))
    read = sum(len(e) for folder in written.values() for _, e, _ in folder)
    assert f"{read} events read" in data.note


def test_nmnist_downscaled_sensor(tmp_path, no_download):
    written = write_nmnist(tmp_path, per_class=(3, 2))
    data = load_dataset(f"tonic:NMNIST:{tmp_path}", timesteps=3, image_size=17)
    assert data.input_shape == (3, 2, 17, 17) and "downscaled" in data.note
    _, events, _ = written["Train"][0]
    x, y, t, p = events.T
    # tonic's Downsample scales coordinates by 17/34 and truncates them to integers.
    np.testing.assert_array_equal(data.x_train[0], reference_frames(x // 2, y // 2, t, p, 3, 17))


def test_nmnist_only_one_folder_is_split(tmp_path, no_download):
    write_nmnist(tmp_path, per_class=(6,), folders=("Test",))
    data = load_dataset(f"tonic:NMNIST:{tmp_path}", timesteps=2, seed=0, test_fraction=0.5)
    assert len(data.x_train) == 9 and len(data.x_test) == 9
    assert "only" in data.note and "stratified, seed 0" in data.note


def test_missing_recordings_say_where_to_put_them_and_never_download(tmp_path, no_download):
    message = load_error(f"tonic:NMNIST:{tmp_path}")
    assert str(tmp_path / "NMNIST") in message and "Train/<digit>/*.bin" in message
    assert "tonic.datasets.NMNIST" in message  # how to fetch them once, on purpose
    message = load_error(f"tonic:DVSGesture:{tmp_path}")
    assert "ibmGestureTrain/userNN_<lighting>/<label>.npy" in message


def test_unknown_tonic_name_and_too_large_a_size(tmp_path, no_download):
    assert "tonic:NMNIST:ROOT or tonic:DVSGesture:ROOT" in load_error(f"tonic:CIFAR10DVS:{tmp_path}")
    write_nmnist(tmp_path, per_class=(2, 2))
    assert "--image-size 34 or less" in load_error(f"tonic:NMNIST:{tmp_path}", image_size=64)


def test_bad_layout_and_corrupt_recording_name_the_file(tmp_path, no_download):
    write_nmnist(tmp_path, per_class=(2, 2))
    stray = tmp_path / "NMNIST" / "Train" / "digits" / "00000.bin"  # tonic reads the label from the folder name
    write_nmnist_file(stray, nmnist_events(np.random.default_rng(0), 0))
    assert "Train/<digit>/*.bin" in load_error(f"tonic:NMNIST:{tmp_path}")
    stray.unlink()
    bad = tmp_path / "NMNIST" / "Test" / "1" / "00000.bin"
    bad.write_bytes(b"\x01\x02\x03")  # not whole 5-byte events
    message = load_error(f"tonic:NMNIST:{tmp_path}")
    assert str(bad) in message and "replace it" in message


def test_resolved_data_and_inputs_for_predict(tmp_path, no_download, monkeypatch):
    write_nmnist(tmp_path, per_class=(2, 2))
    monkeypatch.chdir(tmp_path)
    assert resolved_data("tonic:NMNIST:.") == f"tonic:NMNIST:{tmp_path}"
    inputs = load_inputs("tonic:NMNIST:.", timesteps=2)
    assert inputs.x.shape == (6, 2, 2, 34, 34) and inputs.y is not None


# --------------------------------------------------------------------------- DVS Gesture


def test_dvsgesture_frames_downscaled(tmp_path, no_download):
    write_dvsgesture(tmp_path)
    data = load_dataset(f"tonic:DVSGesture:{tmp_path}", timesteps=4, image_size=32)
    assert data.name == "dvsgesture" and data.input_shape == (4, 2, 32, 32)
    assert len(data.x_train) == 9 and len(data.x_test) == 6 and data.n_classes == 3
    assert data.classes == ("Hand clapping", "Right hand wave", "Left hand wave")
    # tonic walks the user folders in the file system's order: match each sample to its recording.
    references = []
    for path in sorted((tmp_path / "DVSGesture" / "ibmGestureTrain").rglob("*.npy")):
        x, y, p, t = np.load(path).T
        references.append((int(path.stem), reference_frames(x // 4, y // 4, t * 1000, p, 4, 32)))
    for frames, label in zip(data.x_train, data.y_train):
        assert sum(label == ref_label and np.array_equal(frames, ref) for ref_label, ref in references) == 1


# --------------------------------------------------------------------------- a fit end to end

EVENT_CONFIG = """
policies = ["confidence", "seenn2"]
[system1]
epochs = 2
timesteps = 4
conv_channels = [4]
hidden = [16]
[system2]
epochs = 2
[seenn2]
betas = [0.05]
pretrain_epochs = 10
rl_epochs = 10
[confidence]
thresholds = [0.5, 0.9]
"""


@pytest.fixture(scope="module")
def event_fit(tmp_path_factory):
    """A tiny fit on synthetic N-MNIST (2-channel 34×34 frames, a conv System 1), via the CLI."""
    root = tmp_path_factory.mktemp("events")
    write_nmnist(root / "data", per_class=(8, 4))
    config = root / "events.toml"
    config.write_text(EVENT_CONFIG)
    out = root / "run"
    code = main(
        [
            "fit",
            "--data",
            f"tonic:NMNIST:{root / 'data'}",
            "--out",
            str(out),
            "--config",
            str(config),
            "--device",
            "cpu",
            "--quiet",
        ]
    )
    assert code == 0
    return out


def test_fit_on_synthetic_nmnist_end_to_end(event_fit):
    results = json.loads((event_fit / "results.json").read_text())
    assert results["dataset"] == "nmnist" and results["classes"][0] == "0 - zero"
    assert results["config"]["system1"]["encoding"] == "events"  # chosen for event data
    s1 = results["systems"]["system1"]
    assert "events encoding" in s1["description"] and "conv3×3 2→4" in s1["description"]
    # The first layer is fed by spikes: synaptic accumulates, no dense MACs.
    assert s1["mean_dense_macs"] == 0.0 and s1["mean_synaptic_ops"] > 0
    names = {s["name"] for s in results["strategies"]}
    assert {"system1", "system2", "seenn2@beta=0.05"} <= names
    for strategy in results["strategies"]:
        assert strategy["energy_terms_uj"]["s1_dense"] == 0.0


def test_event_fit_reloads_and_predicts(event_fit, tmp_path):
    import fastslow
    from fastslow.data import load_dataset

    deployment = fastslow.load(event_fit)
    assert deployment.system1.spec.encoding == "events" and deployment.system1.spec.input_shape == (4, 2, 34, 34)
    config = json.loads((event_fit / "config.json").read_text())
    data = load_dataset(config["data"], timesteps=4)
    answer = deployment.predict(torch.as_tensor(data.x_test), "system2")
    assert answer.predictions.shape == (len(data.x_test),)
    # System 2 reads the frames averaged over T.
    assert deployment.system2[0].__class__.__name__ == "FrameMean"
    out = tmp_path / "pred"
    assert main(["predict", str(event_fit), "--strategy", "seenn2@beta=0.05", "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["inputs"] == len(data.x_test) and summary["energy_terms_uj"]["s1_dense"] == 0.0


def test_encoding_and_data_must_agree(tmp_path, capsys, no_download):
    write_nmnist(tmp_path / "data", per_class=(5, 2))
    config = tmp_path / "rate.toml"
    config.write_text('[system1]\nencoding = "rate"\n')
    args = ["fit", "--data", f"tonic:NMNIST:{tmp_path / 'data'}", "--out", str(tmp_path / "a"), "--config", str(config)]
    assert main([*args, "--quiet"]) == 2
    assert 'encoding = "events"' in capsys.readouterr().err
    config.write_text('[system1]\nencoding = "events"\n')
    assert main(["fit", "--data", "digits", "--out", str(tmp_path / "b"), "--config", str(config), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "takes event data" in err and len(err.strip().splitlines()) == 1


def test_stdp_commands_refuse_event_frames(tmp_path, capsys, no_download):
    write_nmnist(tmp_path / "data", per_class=(2, 2))
    args = ["continual", "--data", f"tonic:NMNIST:{tmp_path / 'data'}", "--model", "diehl-cook", "--out", str(tmp_path / "c")]
    assert main([*args, "--quiet"]) == 2
    assert "rate-code images" in capsys.readouterr().err
