"""The CLI end to end: fit → report → evaluate, reproducibility, and bad input."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from fastslow.cli import main


def _results(folder):
    return json.loads((folder / "results.json").read_text())


def _accuracies(payload):
    return {s["name"]: s["accuracy"] for s in payload["strategies"]}


def test_fit_writes_a_complete_report(fitted_folder):
    for name in ("results.json", "report.md", "pareto.png", "timesteps.png", "config.json"):
        assert (fitted_folder / name).is_file(), name
    for name in ("system1.safetensors", "system1.json", "system2.safetensors", "system2.json", "manifest.json"):
        assert (fitted_folder / "checkpoints" / name).is_file(), name
    manifest = json.loads((fitted_folder / "checkpoints" / "manifest.json").read_text())
    saved = {entry["name"]: entry for entry in manifest["policies"]}
    for name in (
        "router@share=0.2",
        "router@exits,share=0.2",
        "router@exits,budget=0.05uJ",
        "router@steps,share=0.1",
        "router@steps,budget=0.05uJ",
        "seenn2@beta=0.05",
        "ponder@lambda_p=0.5",
        "seenn1@0.8+s2",
        "system2",
    ):
        stem = fitted_folder / "checkpoints" / saved[name]["file"]
        assert stem.with_suffix(".json").is_file(), name
        assert stem.with_suffix(".safetensors").is_file() == saved[name]["weights"], name
    assert saved["router@share=0.2"]["weights"] and not saved["seenn1@0.8+s2"]["weights"]
    payload = _results(fitted_folder)
    assert payload["dataset"] == "digits" and payload["seed"] == 0
    assert payload["split"] == {"train": 1149, "val": 288, "test": 360}
    assert payload["profile"]["name"] == "cmos45nm" and payload["profile"]["E_MAC_pJ"] == 4.6
    assert {"fastslow", "torch"} <= set(payload["versions"])
    assert payload["config"]["system1"]["timesteps"] == 3
    names = [s["name"] for s in payload["strategies"]]
    for expected in (
        "system1",
        "system2",
        "oracle",
        "aet_oracle",
        "confidence@0.8",
        "router@share=0.2",
        "router@share=0.4",
        "seenn1@0.8",
        "seenn1@0.8+s2",
        "exits@0.8",
        "exits@0.8+s2",
        "seenn2@beta=0.05",
        "ponder@lambda_p=0.5",
        "ponder@lambda_p=0.5+s2",
        "router@exits,share=0.2",
        "router@exits,budget=0.05uJ",
        "router@steps,share=0.1",
        "router@steps,budget=0.05uJ",
    ):
        assert expected in names
    assert any(n.startswith("random@rate=") for n in names)
    for strategy in payload["strategies"]:
        assert 0 <= strategy["accuracy"] <= 1 and 0 <= strategy["escalation_rate"] <= 1
        assert strategy["energy_uj"] == pytest.approx(sum(strategy["energy_terms_uj"].values()))
        assert set(strategy["energy_terms_uj"]) == {"s1_synaptic", "s1_dense", "s1_neuron", "policy", "s2"}
    by_name = {s["name"]: s for s in payload["strategies"]}
    # Exits taken are recorded, and an S1-only policy that stops early is charged less than the full run.
    assert sum(by_name["seenn1@0.5"]["exits"].values()) == 360
    assert by_name["seenn1@0.5"]["mean_timesteps"] <= 3
    assert by_name["seenn1@0.5"]["energy_terms_uj"]["s1_neuron"] <= by_name["system1"]["energy_terms_uj"]["s1_neuron"]
    assert by_name["system2"]["energy_terms_uj"]["s1_synaptic"] == 0 and by_name["system2"]["escalation_rate"] == 1
    assert by_name["system1"]["energy_terms_uj"]["s2"] == 0 and by_name["system1"]["mean_timesteps"] == 3
    assert by_name["router@exits,budget=0.05uJ"]["knob"] == {"energy_budget_uj": 0.05}
    assert by_name["router@steps,budget=0.05uJ"]["knob"] == {"energy_budget_uj": 0.05}
    assert by_name["router@steps,share=0.1"]["ops_per_input"]["policy_macs"] > 0
    report = (fitted_folder / "report.md").read_text()
    assert "![accuracy vs energy](pareto.png)" in report and "router@share=0.2" in report
    assert (fitted_folder / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_reproduces_fit_accuracies(fitted_folder, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(fitted_folder, copy)
    before = _results(copy)
    assert main(["evaluate", str(copy), "--quiet"]) == 0
    after = _results(copy)
    assert _accuracies(after) == _accuracies(before)
    assert [s["energy_uj"] for s in after["strategies"]] == [s["energy_uj"] for s in before["strategies"]]


def test_other_profile_changes_energy_not_accuracy(fitted_folder, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(fitted_folder, copy)
    before = _results(copy)
    assert main(["evaluate", str(copy), "--profile", "loihi", "--quiet"]) == 0
    after = _results(copy)
    assert after["profile"]["name"] == "loihi"
    assert _accuracies(after) == _accuracies(before)
    s1_before = next(s for s in before["strategies"] if s["name"] == "system1")
    s1_after = next(s for s in after["strategies"] if s["name"] == "system1")
    assert s1_after["energy_uj"] > s1_before["energy_uj"]  # 23.6 pJ vs 0.9 pJ per synaptic op


def test_calibrate_writes_its_choice_and_bound(fitted_folder, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(fitted_folder, copy)
    assert main(["calibrate", str(copy), "--max-accuracy-drop", "0.05", "--delta", "0.1", "--quiet"]) == 0
    payload = json.loads((copy / "calibration.json").read_text())
    assert "Learn-then-Test" in payload["method"] and payload["calibration_size"] == 180
    assert payload["max_accuracy_drop"] == 0.05 and payload["delta"] == 0.1
    assert (
        payload["seed"] == payload["config"]["seed"]
        and "torch" in payload["versions"]
        and payload["profile_figures"]["name"] == payload["profile"]
    )
    assert {"confidence", "seenn1+s2", "router"} <= set(payload["families"])
    for family, entry in payload["families"].items():
        if entry["chosen"] is not None:
            assert entry["chosen"] in entry["certified"] and "held_out_accuracy" in entry and "held_out_energy_uj" in entry


def test_same_seed_gives_same_numbers(fitted_folder, tmp_path, tiny_config):
    out = tmp_path / "again"
    assert main(["fit", "--data", "digits", "--out", str(out), "--config", str(tiny_config), "--quiet"]) == 0
    assert _results(out)["strategies"] == _results(fitted_folder)["strategies"]


def _fail(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_bad_data_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    message = _fail(capsys, ["fit", "--data", str(tmp_path / "missing.npz"), "--out", str(out), "--quiet"])
    assert "missing.npz" in message
    assert not out.exists()

    nan = tmp_path / "nan.npz"
    x = np.random.rand(40, 5)
    x[0, 0] = np.nan
    np.savez(nan, X=x, y=np.arange(40) % 2)
    assert "NaN" in _fail(capsys, ["fit", "--data", str(nan), "--out", str(out), "--quiet"])

    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file")
    _fail(capsys, ["fit", "--data", str(garbage), "--out", str(out), "--quiet"])

    negative = tmp_path / "neg.npz"
    np.savez(negative, X=np.random.rand(40, 5), y=np.arange(40) % 2 - 1)
    _fail(capsys, ["fit", "--data", str(negative), "--out", str(out), "--quiet"])
    assert not out.exists()


def test_unknown_dataset_profile_and_bad_config(tmp_path, capsys):
    out = tmp_path / "out"
    _fail(capsys, ["fit", "--data", "imagenet", "--out", str(out), "--quiet"])
    assert "profile" in _fail(capsys, ["fit", "--data", "digits", "--out", str(out), "--profile", "cmos3nm", "--quiet"])
    config = tmp_path / "bad.toml"
    config.write_text("[system1]\ntimesteps = 0\n")
    assert "system1.timesteps" in _fail(
        capsys, ["fit", "--data", "digits", "--out", str(out), "--config", str(config), "--quiet"]
    )
    config.write_text("[system1\n")
    _fail(capsys, ["fit", "--data", "digits", "--out", str(out), "--config", str(config), "--quiet"])
    assert not out.exists()


@pytest.mark.parametrize(
    "text, named",
    [
        ("[system1]\nhidden = []\n", "at least one hidden layer"),
        ("[system1]\nhidden = [-5]\n", "system1.hidden"),
        ("[system1]\nhidden = [16]\nexit_heads = [5]\n", "exit_heads"),
        ("[system1]\nexit_heads = [-1]\n", "system1.exit_heads"),
        ("seed = -1\n", "seed"),
    ],
)
def test_config_values_the_data_makes_impossible_are_one_line_errors(tmp_path, capsys, text, named):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    assert named in _fail(capsys, ["fit", "--data", "digits", "--out", str(tmp_path / "out"), "--config", str(config), "--quiet"])


def test_a_json_config_that_is_no_table_and_a_folder_as_config_are_refused(tmp_path, capsys):
    config = tmp_path / "list.json"
    config.write_text("[1, 2]")
    assert "not a table of options" in _fail(
        capsys, ["fit", "--data", "digits", "--out", str(tmp_path / "o"), "--config", str(config)]
    )
    assert "is a folder" in _fail(capsys, ["fit", "--data", "digits", "--out", str(tmp_path / "o"), "--config", str(tmp_path)])


def test_seeds_out_of_range_are_refused_by_the_parser(tmp_path, capsys):
    for command in (["demo"], ["fit", "--data", "digits", "--out", str(tmp_path / "o")]):
        with pytest.raises(SystemExit) as exit_:
            main([*command, "--seed", "-1"])
        assert exit_.value.code == 2 and "outside 0..4294967295" in capsys.readouterr().err


def test_an_out_path_that_is_a_file_is_refused_before_any_work(tmp_path, capsys):
    existing = tmp_path / "afile"
    existing.write_text("keep me")
    for command in (
        ["fit", "--data", "digits"],
        ["continual", "--data", "digits", "--model", "spikedyn"],
        ["search", "--data", "digits", "--max-memory-kb", "100", "--max-energy-uj", "1"],
    ):
        assert "is a file, not a folder" in _fail(capsys, [*command, "--out", str(existing), "--quiet"])
    assert existing.read_text() == "keep me"
    assert "at least 1 training epoch" in _fail(
        capsys,
        ["continual", "--data", "digits", "--model", "spikedyn", "--out", str(tmp_path / "c"), "--s2-epochs", "0", "--quiet"],
    )


def test_evaluate_names_a_file_an_empty_folder_and_nan_weights(fitted_folder, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    (tmp_path / "afile").write_text("")
    assert "is a file, not a report folder" in _fail(capsys, ["evaluate", str(tmp_path / "afile"), "--quiet"])
    (tmp_path / "empty").mkdir()
    assert "holds no config.json" in _fail(capsys, ["evaluate", str(tmp_path / "empty"), "--quiet"])
    copy = tmp_path / "nan"
    shutil.copytree(fitted_folder, copy)
    weights = copy / "checkpoints" / "system1.safetensors"
    tensors = load_file(weights)
    name = next(iter(tensors))
    tensors[name][..., 0] = float("nan")
    save_file(tensors, weights)
    assert f"NaN/inf values in {name}" in _fail(capsys, ["evaluate", str(copy), "--quiet"])


def test_bad_knobs_are_clear_errors(fitted_folder, tmp_path, capsys):
    out = tmp_path / "out"
    config = tmp_path / "bad.toml"
    config.write_text("[confidence]\nthresholds = [0.5, 1.5]\n")
    assert "thresholds" in _fail(capsys, ["fit", "--data", "digits", "--out", str(out), "--config", str(config), "--quiet"])
    assert "delta" in _fail(capsys, ["calibrate", str(fitted_folder), "--delta", "1.5", "--quiet"])
    assert "drop" in _fail(capsys, ["calibrate", str(fitted_folder), "--max-accuracy-drop", "0", "--quiet"])
    assert not (fitted_folder / "calibration.json").exists()


def test_broken_checkpoints_are_clear_errors(fitted_folder, tmp_path, capsys):
    missing = tmp_path / "missing"
    shutil.copytree(fitted_folder, missing)
    (missing / "checkpoints" / "system2.safetensors").unlink()
    assert "system2.safetensors" in _fail(capsys, ["evaluate", str(missing), "--quiet"])

    corrupt = tmp_path / "corrupt"
    shutil.copytree(fitted_folder, corrupt)
    (corrupt / "checkpoints" / "system1.safetensors").write_bytes(b"\x00" * 10)
    assert "corrupt" in _fail(capsys, ["evaluate", str(corrupt), "--quiet"])
    results_before = (corrupt / "results.json").read_bytes()
    assert (corrupt / "results.json").read_bytes() == results_before  # the old report is untouched

    assert "does not exist" in _fail(capsys, ["evaluate", str(tmp_path / "nowhere"), "--quiet"])


@pytest.mark.parametrize(
    "edit, named",
    [
        ({"timesteps": 4}, "decides over 3 timesteps but system1.json runs 4"),
        ({"encoding": "bogus"}, "unknown encoding 'bogus'"),
        ({"lif": {"beta": 5.0, "threshold": -1.0}}, "beta"),
        ({"hidden": [40, 16]}, "size mismatch for layers.0.op.weight"),
    ],
)
def test_an_edited_spec_is_a_one_line_error_naming_what_differs(fitted_folder, tmp_path, capsys, edit, named):
    copy = tmp_path / "edited"
    shutil.copytree(fitted_folder, copy)
    spec_file = copy / "checkpoints" / "system1.json"
    saved = json.loads(spec_file.read_text())
    for key, value in edit.items():
        saved["spec"][key] = {**saved["spec"][key], **value} if isinstance(value, dict) else value
    spec_file.write_text(json.dumps(saved))
    assert named in _fail(capsys, ["evaluate", str(copy), "--quiet"])


def test_evaluate_on_mismatched_data_is_a_clear_error(fitted_folder, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(fitted_folder, copy)
    other = tmp_path / "flat.npz"
    np.savez(other, X=np.random.rand(60, 5).astype("float32"), y=np.arange(60) % 3)
    assert "expect" in _fail(capsys, ["evaluate", str(copy), "--data", str(other), "--quiet"])


def test_entry_point_exit_code_and_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "fastslow.cli", "fit", "--data", str(tmp_path / "nope.npz"), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.startswith("error: ")


def test_demo_runs_and_routes(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quiet"]) == 0
    payload = _results(out)
    by_name = {s["name"]: s for s in payload["strategies"]}
    assert by_name["system1"]["energy_uj"] < by_name["system2"]["energy_uj"]
    assert by_name["system1"]["accuracy"] > 0.85 and by_name["system2"]["accuracy"] > 0.9
    # Escalating exactly System 1's mistakes can only help.
    assert by_name["oracle"]["accuracy"] >= by_name["system1"]["accuracy"]


def test_calibrate_skips_a_family_whose_knob_has_no_safest_first_order(fitted_folder, tmp_path, monkeypatch):
    from fastslow import pipeline
    from fastslow.policies import RouterPolicy

    class TargetRouter(RouterPolicy):
        """A router point as one trained for a target distribution reports itself: no knob order."""

        knob_order = None

        @property
        def name(self):
            return "router@steps,target#0"

        @property
        def family(self):
            return "router_steps_target"

        @property
        def knob(self):
            return {"target_distribution": [0.5, 0.5]}

    real = pipeline.load_fit

    def with_a_target_distribution_router(*args, **kwargs):
        loaded = real(*args, **kwargs)
        router = next(p for p in loaded.policies if p.kind == "router")
        loaded.policies.append(TargetRouter(router.module))
        return loaded

    monkeypatch.setattr(pipeline, "load_fit", with_a_target_distribution_router)
    copy = tmp_path / "copy"
    shutil.copytree(fitted_folder, copy)
    payload = pipeline.calibrate_folder(copy, max_accuracy_drop=0.05, delta=0.1, show_table=False)
    assert payload["families"]["router_steps_target"]["chosen"] is None
    assert "no safest-first order" in payload["families"]["router_steps_target"]["note"] and "router" in payload["families"]
    assert "for each family on its own" in payload["guarantee"]


def test_version_prints_the_package_version(capsys):
    from importlib import metadata

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"fastslow {metadata.version('fastslow')}"


def test_every_option_of_every_command_has_help_seed_and_device_included():
    import argparse

    from fastslow.cli import _parser

    parser = _parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    seen = set()
    for name, command in commands.items():
        for action in command._actions:
            assert action.help, (name, action.option_strings or action.dest)
            seen.update(action.option_strings)
    assert {"--seed", "--device"} <= seen
    assert "0..2**32-1" in commands["fit"].format_help() and "CUDA when available" in commands["fit"].format_help()


def test_a_bad_option_value_names_the_flag_typed_and_a_bad_file_value_the_file(tmp_path, capsys):
    message = _fail(capsys, ["fit", "--data", "digits", "--out", str(tmp_path / "o"), "--epochs", "0", "--quiet"])
    assert message.startswith("error: option --epochs 0: ") and "system1.epochs and system2.epochs" in message
    config = tmp_path / "bad.toml"
    config.write_text("[system2]\nepochs = 0\n")
    message = _fail(capsys, ["fit", "--data", "digits", "--out", str(tmp_path / "o"), "--config", str(config), "--quiet"])
    assert f"config option system2.epochs in {config}: " in message and "--epochs" not in message
    config.write_text("system1 = 5\n")  # no table for --epochs to go in: the file's error, not a traceback
    assert "config option system1 in" in _fail(
        capsys, ["fit", "--data", "digits", "--out", str(tmp_path / "o"), "--config", str(config), "--epochs", "2", "--quiet"]
    )
    assert not (tmp_path / "o").exists()


def test_calibrate_says_what_to_loosen_when_nothing_is_certified(fitted_folder, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(fitted_folder, copy)
    assert main(["calibrate", str(copy), "--max-accuracy-drop", "0.005", "--delta", "0.1"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "none certified" in out
    assert "needs at least 460 calibration inputs, there are 180" in out  # docs/calibration.md: 460 for α = 0.005, δ = 0.1
    for hint in ("--max-accuracy-drop, now 0.005", "--delta, now 0.1", "--calibration-fraction, now 0.5"):
        assert hint in out, out
    notes = {entry["note"] for entry in json.loads((copy / "calibration.json").read_text())["families"].values()}
    assert all("larger drop" in note and "delta" in note for note in notes if note.startswith("no knob certified"))


def test_the_nan_weights_message_names_the_first_bad_tensor_by_name(fitted_folder, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    copy = tmp_path / "nan"
    shutil.copytree(fitted_folder, copy)
    weights = copy / "checkpoints" / "system1.safetensors"
    tensors = load_file(weights)
    for tensor in tensors.values():
        tensor.view(-1)[0] = float("nan")
    save_file(tensors, weights)
    first = sorted(tensors)[0]
    message = _fail(capsys, ["evaluate", str(copy), "--quiet"])
    assert f"NaN/inf values in {first} (and {len(tensors) - 1} more tensors)" in message
    # The loaded dict's order differs between processes: a fresh process names the same one.
    run = subprocess.run(
        [sys.executable, "-m", "fastslow.cli", "evaluate", str(copy), "--quiet"], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 2 and run.stderr.strip() == message


def test_labels_in_messages_print_as_integers(tmp_path, capsys):
    data = tmp_path / "huge.npz"
    np.savez(data, X=np.random.rand(40, 5), y=np.r_[np.arange(39) % 2, 5e9].astype(np.float64))
    message = _fail(capsys, ["fit", "--data", str(data), "--out", str(tmp_path / "o"), "--quiet"])
    assert "label 5000000000," in message and "e+09" not in message
    np.savez(data, X=np.random.rand(40, 5), y=np.r_[np.arange(39) % 2, -3e10])
    assert "(min -30000000000)" in _fail(capsys, ["fit", "--data", str(data), "--out", str(tmp_path / "o"), "--quiet"])
