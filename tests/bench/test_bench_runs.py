"""Benchmarks are not tests, but they must keep running: each one on a tiny size."""

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_energy_accuracy_bench_runs_on_digits(capsys, tmp_path):
    bench = _load("energy_accuracy")
    assert bench.main(["--data", "digits", "--epochs", "1", "--timesteps", "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "system2" in out and "µJ/input" in out and "target (≥ S2 − 0.5 pt" in out
    assert (tmp_path / "results.json").is_file()


def test_dynamic_timesteps_bench_runs_on_digits(capsys, tmp_path):
    bench = _load("dynamic_timesteps")
    assert bench.main(["--data", "digits", "--epochs", "1", "--timesteps", "3", "--hidden", "32", "16", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "SEENN-I" in out and "router, all exits" in out and "target S1-only" in out


def test_simulation_speed_bench_runs_tiny_without_peers(capsys, tmp_path):
    bench = _load("simulation_speed")
    report = tmp_path / "speed.json"
    assert bench.main(["--no-peers", "--rounds", "1", "--iterations", "1", "--batch-scale", "0.05", "--networks", "mlp",
                       "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "LIF overhead" in out and "early stopping with compaction" in out
    import json

    data = json.loads(report.read_text())
    assert data["mlp"]["fastslow"]["forward_ms"] > 0 and data["mlp"]["snntorch"] is None
    assert data["mlp"]["spikes"]["fastslow"] == data["mlp"]["spikes"]["fastslow_stepwise"]
