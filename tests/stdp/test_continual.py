"""The continual protocol end to end, and the CLI's checks."""

import json

import numpy as np
import pytest

from fastslow.cli import main
from fastslow.data.datasets import load_dataset
from fastslow.errors import ConfigError
from fastslow.stdp import SPIKEDYN_MECHANISMS, SpikeDynRules, STDPSpec
from fastslow.stdp.continual import parse_tasks, run_continual


def test_two_task_toy_runs_end_to_end():
    data = load_dataset("digits")
    spec = STDPSpec(model="spikedyn", n_inputs=64, n_neurons=10, presentation_ms=50)
    result = run_continual(data, spec, [[0], [1]], samples_per_task=4, test_per_task=6)
    assert len(result.accuracy) == 2 and result.accuracy[0][1] is None
    assert all(0.0 <= a <= 1.0 for a in (result.accuracy[0][0], *result.accuracy[1]))
    for phase in result.training_energy_uj:
        assert phase["synaptic"] > 0 and phase["neuron"] > 0 and phase["learning"] > 0
    assert all("learning" not in phase for phase in result.inference_energy_uj)
    # Each neuron's class after each task: a class seen so far, or −1 (answered none).
    assert [len(c) for c in result.neuron_classes] == [10, 10]
    assert set(result.neuron_classes[0]) <= {-1, 0} and set(result.neuron_classes[1]) <= {-1, 0, 1}
    assert max(result.neuron_classes[1]) >= 0


def test_cli_writes_continual_json_and_png(tmp_path):
    out = tmp_path / "run"
    code = main(
        [
            "continual",
            "--data",
            "digits",
            "--model",
            "diehl-cook",
            "--out",
            str(out),
            "--neurons",
            "8",
            "--tasks",
            "0;1",
            "--samples-per-task",
            "3",
            "--test-per-task",
            "5",
            "--presentation-ms",
            "40",
            "--bits",
            "8",
            "--s2-epochs",
            "1",
            "--quiet",
        ]
    )
    assert code == 0
    payload = json.loads((out / "continual.json").read_text())
    assert payload["model"] == "diehl-cook" and payload["tasks"] == [[0], [1]]
    assert len(payload["accuracy"]) == 2 and len(payload["accuracy"][1]) == 2
    assert payload["spec"]["bits"] == 8 and payload["config"]["seed"] == 0 and "numpy" in payload["versions"]
    assert payload["samples_used"] == {"train_per_task": [3, 3], "test_per_task": [5, 5]}
    assert len(payload["neuron_classes"]) == 2 and set(payload["neuron_classes"][-1]) <= {-1, 0, 1}
    assert (out / "continual.png").read_bytes()[:4] == b"\x89PNG"
    results = json.loads((out / "results.json").read_text())
    by_name = {r["name"]: r for r in results["strategies"]}
    assert {"system1", "system2", "confidence@0.5"} <= set(by_name)
    s1, s2 = by_name["system1"], by_name["system2"]
    assert s1["escalation_rate"] == 0 and s2["escalation_rate"] == 1 and s1["training_energy_uj"] > 0
    for row in results["strategies"]:  # energy is charged for what ran: S1 always, S2 for the escalated share
        terms = row["energy_terms_uj"]
        assert row["energy_uj"] == pytest.approx(sum(terms.values()))
        assert terms["s2"] == pytest.approx(row["escalation_rate"] * s2["energy_terms_uj"]["s2"])


def test_cli_switches_spikedyn_mechanisms_off_and_records_it(tmp_path, capsys):
    out = tmp_path / "run"
    tiny = ["--neurons", "8", "--tasks", "0;1", "--samples-per-task", "2", "--test-per-task", "3", "--presentation-ms", "40"]
    argv = ["continual", "--data", "digits", "--model", "spikedyn", "--out", str(out), *tiny, "--s2-epochs", "1", "--quiet"]
    assert main([*argv, "--spikedyn-off", "rest_relative_commitment", "weight_decay"]) == 0
    payload = json.loads((out / "continual.json").read_text())
    rules = payload["spec"]["rules"]
    assert rules["rest_relative_commitment"] is False and rules["weight_decay"] is False
    assert all(rules[m] for m in SPIKEDYN_MECHANISMS if m not in ("rest_relative_commitment", "weight_decay"))
    assert payload["config"]["spikedyn_off"] == ["rest_relative_commitment", "weight_decay"]
    # The saved spec rebuilds the same rules.
    assert STDPSpec.from_dict(payload["spec"]).rules == SpikeDynRules(rest_relative_commitment=False, weight_decay=False)
    # Diehl & Cook has no such mechanisms: refused before any work, one line, exit 2.
    capsys.readouterr()
    other = tmp_path / "dc"
    assert main([*argv[:4], "diehl-cook", "--out", str(other), "--quiet", "--spikedyn-off", "weight_decay"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --spikedyn-off switches SpikeDyn's mechanisms") and "\n" not in err and not other.exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--bits", "12"], "4, 8, 16, 32"),
        (["--tasks", "0;;1"], "empty task"),
        (["--tasks", "0;11"], "outside 0..9"),
        (["--samples-per-task", "0"], "at least 1"),
        (["--spikedyn-off", "lateral_magic"], "no such mechanism; choose from direct_inhibition"),
    ],
)
def test_cli_refuses_bad_options_with_exit_2(tmp_path, capsys, extra, message):
    code = main(["continual", "--data", "digits", "--model", "spikedyn", "--out", str(tmp_path / "x"), "--quiet", *extra])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and "Traceback" not in err
    assert not (tmp_path / "x" / "continual.json").exists()


def test_a_task_without_samples_is_an_error(tmp_path):
    x = np.random.default_rng(0).random((40, 16)).astype(np.float32)
    y = np.array([0, 1] * 20)
    path = tmp_path / "two.npz"
    np.savez(path, X=x, y=y)
    data = load_dataset(str(path))
    with pytest.raises(ConfigError, match="empty"):
        run_continual(
            data,
            STDPSpec(n_inputs=16, n_neurons=2, presentation_ms=10),
            parse_tasks("0;2", 3),
            samples_per_task=2,
            test_per_task=2,
        )


def test_asking_for_more_samples_than_a_task_has_records_and_notes_what_was_used(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(
            [
                "continual",
                "--data",
                "digits",
                "--model",
                "diehl-cook",
                "--out",
                str(out),
                "--neurons",
                "4",
                "--tasks",
                "0",
                "--samples-per-task",
                "100000",
                "--test-per-task",
                "2",
                "--presentation-ms",
                "20",
                "--s2-epochs",
                "1",
            ]
        )
        == 0
    )
    used = json.loads((out / "continual.json").read_text())["samples_used"]["train_per_task"][0]
    assert 100 < used < 200 and f"tasks 0 ({used})" in capsys.readouterr().out.replace("\n", " ")
