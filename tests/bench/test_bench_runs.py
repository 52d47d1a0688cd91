"""Benchmarks are not tests, but they must keep running: each one on a tiny size."""

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_energy_accuracy_bench_runs_on_digits(capsys, tmp_path):
    bench = _load("energy_accuracy")
    argv = ["--data", "digits", "--epochs", "1", "--timesteps", "2", "--seeds", "2", "--out", str(tmp_path)]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "system2" in out and "× S2 µJ" in out and "target (≥ S2 − 0.5 pt" in out and "on 2 seeds" not in out
    assert "learned router − best threshold cascade" in out and "seeds 0–1" in out and "±" in out
    assert (tmp_path / "seed-0" / "results.json").is_file() and (tmp_path / "seed-1" / "results.json").is_file()


def test_dynamic_timesteps_bench_runs_on_digits(capsys, tmp_path):
    bench = _load("dynamic_timesteps")
    assert (
        bench.main(
            [
                "--data",
                "digits",
                "--epochs",
                "1",
                "--timesteps",
                "3",
                "--hidden",
                "32",
                "16",
                "--seeds",
                "2",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "SEENN-I" in out and "router, one-shot" in out and "router, sequential" in out and "seed 1: target S1-only" in out
    assert "seeds 0–1 (mean ± 95% t interval over 2 seeds)" in out and "learned router − best threshold cascade" in out
    assert (tmp_path / "seed-1" / "results.json").is_file()
    # The same two seeds joined from their folders (as when fitted in parts) give the same table.
    assert bench.main(["--report", str(tmp_path), "--timesteps", "3"]) == 0
    assert capsys.readouterr().out == out


def test_simulation_speed_bench_runs_tiny_without_peers(capsys, tmp_path):
    import numpy as np

    bench = _load("simulation_speed")
    report = tmp_path / "speed.json"
    images = tmp_path / "images.npz"  # 28×28 images for the served System 1 (the benchmark data may be absent)
    rng = np.random.default_rng(0)
    np.savez(
        images,
        X=rng.random((64, 1, 28, 28), dtype=np.float32),
        y=np.arange(64) % 10,
        X_test=rng.random((60, 1, 28, 28), dtype=np.float32),
        y_test=np.arange(60) % 10,
    )
    assert (
        bench.main(
            [
                "--no-peers",
                "--rounds",
                "1",
                "--iterations",
                "1",
                "--batch-scale",
                "0.05",
                "--networks",
                "mlp",
                "--memory-timesteps",
                "4",
                "--json",
                str(report),
                "--data",
                str(images),
                "--serving-train-images",
                "64",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "LIF overhead" in out and "early stopping with compaction" in out
    import json

    data = json.loads(report.read_text())
    assert data["mlp"]["fastslow"]["forward_ms"] > 0 and data["mlp"]["snntorch"] is None
    assert data["mlp"]["spikes"]["fastslow"] == data["mlp"]["spikes"]["fastslow_stepwise"]
    assert set(data["mlp"]["peak_train_mib"]["T4"]) == {"multistep", "stepwise", "checkpoint_4"}
    assert data["meta"]["seed"] == 0 and data["meta"]["config"]["rounds"] == 1 and "torch" in data["meta"]["versions"]
    curve = {p["schedule"]: p["mean_timesteps"] for p in data["mlp"]["wall_vs_mean_timesteps"]}
    assert [curve[f"all stop at {t}"] for t in (1, 2, 4, 8)] == [1.0, 2.0, 4.0, 8.0] and "mixed, mean T/4" in curve
    assert "thirds, mean T/4" in curve and 0.25 < data["mlp"]["early_stop_bound"] < 1 and "0.25 + 0.75" in out
    assert [row["batch"] for row in data["mlp"]["early_stop_by_batch"]] == [6, 24, 48] and "at larger batches" in out
    assert all(
        row["early_stop_T4_ms"] > 0 and row["ratio"] > 0 and row["doubling_ms"] > 0 and sum(row["chunks"]) == 8
        for row in data["mlp"]["early_stop_by_batch"]
    )
    assert (
        sum(data["mlp"]["early_stop_chunks"]) == 8 and data["mlp"]["early_stop_doubling_ms"] > 0 and "in doubling chunks" in out
    )
    assert "wall time against escalation rate" in out
    escalation = data["mlp"]["wall_vs_escalation"]
    assert [p["escalation_rate"] for p in escalation] == [0.0, 0.1, 0.25, 0.5, 1.0]
    assert escalation[0]["system2_ms"] == 0.0 and all(
        p["system2_ms"] > 0 and p["ratio_to_all_escalated"] > 0 for p in escalation[1:]
    )
    serving = data["mlp"]["serving"]  # the served System 1's own stops, at 6 and 48 test images
    assert serving["train_images"] == 64 and [row["batch"] for row in serving["rows"]] == [6, 48] and "FastSlow.predict" in out
    for row in serving["rows"]:
        assert [p["threshold"] for p in row["thresholds"]] == list(bench.SERVING_THRESHOLDS)
        assert all(
            1 <= p["mean_timesteps"] <= 8
            and p["compaction_ms"] > 0
            and p["doubling_ms"] > 0
            and p["records_ratio"] > 0
            and p["planned_ms"] > 0
            and sum(p["chunks"]) == 8
            for p in row["thresholds"]
        )
    assert "compiled" in out and "planned chunks" in out  # the MLP served in one compiled call, and in serving's chunks


def test_cuda_host_overhead_bench_runs_its_side_by_side_on_cpu(capsys):
    import torch

    bench = _load("cuda_host_overhead")
    bench.side_by_side("mlp", rounds=1, runs=1, device="cpu")  # the GPU-only part's table, on the CPU
    out = capsys.readouterr().out
    assert "side by side in one process" in out and "fastslow " in out and "matmul_floor" in out
    if not torch.cuda.is_available():
        bench.main([])
        assert "no CUDA device here" in capsys.readouterr().out


def test_continual_bench_runs_tiny_on_digits_over_seeds(capsys, tmp_path):
    import json

    bench = _load("continual")
    report = tmp_path / "continual.json"
    argv = ["--data", "digits", "--seeds", "2", "--neurons", "8", "--samples-per-task", "2", "--test-per-task", "4"]
    argv += ["--tasks", "0;1;2", "--presentation-ms", "20", "--json", str(report)]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "old after last task" in out and "paired differences" in out and "claimed" in out
    assert "spikedyn − weight_decay" in out and "before the commitment fix − diehl-cook" in out
    assert "spikedyn − before the threshold fix" in out and "neurons kept" in out
    runs = json.loads(report.read_text())["datasets"]["digits"]["runs"]
    assert set(runs) == {"diehl-cook", "spikedyn", *(f"spikedyn − {m}" for m in bench.MECHANISMS)}
    for rs in runs.values():
        assert len(rs) == 2  # one record per seed
        for r in rs:
            # final retention: the mean over the old tasks of the last phase's accuracies
            assert r["final_old_pct"] == sum(r["final_per_task_pct"][:2]) / 2
            assert r["final_per_task_pct"] == [100 * a for a in r["accuracy"][-1]]
            assert 0 <= r["neurons_free_pct"] <= 100 and r["neurons_kept_pct"] >= 0
    # Seeds run in two parts and joined give the tables (and records) of one run.
    part = tmp_path / "part.json"
    second = ["--first-seed", "1", "--seeds", "1", "--variants", "diehl-cook", "spikedyn", "--json", str(part)]
    assert bench.main([*argv[:-2], *second[:-2], "--json", str(part)]) == 0
    joined = tmp_path / "joined.json"
    capsys.readouterr()
    assert bench.main(["--report", str(part), str(part), "--tasks", "0;1;2", "--json", str(joined)]) == 0
    assert "3 tasks × 2 samples, 8 neurons, 2 seeds" in capsys.readouterr().out  # the runs' size, not the defaults
    both = json.loads(joined.read_text())["datasets"]["digits"]["runs"]
    timeless = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    assert [timeless(r) for r in both["spikedyn"]] == [timeless(runs["spikedyn"][1])] * 2  # seed 1 again: the same run
    other = json.loads(part.read_text())
    other["config"]["neurons"] = 9
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="join runs of one size"):
        bench.main(["--report", str(part), str(tmp_path / "other.json"), "--tasks", "0;1;2"])


def test_binarised_16_averages_2x2_areas_and_thresholds():
    import numpy as np

    bench = _load("continual")
    x = np.zeros((1, 1, 28, 28), np.float32)
    x[0, 0, 0:2, 0:2] = 1.0  # padded by 2: one whole 2×2 area at (1, 1) → 1
    x[0, 0, 4, 4] = 1.0  # a quarter of the area at (3, 3): mean 0.25 → 0
    x[0, 0, 6:8, 6] = 1.0  # half of the area at (4, 4): mean 0.5 → 1
    from fastslow.data.datasets import Dataset

    out = bench.binarised_16(Dataset("m", x, np.zeros(1, np.int64), x, np.zeros(1, np.int64), 10, "n"))
    expected = np.zeros((16, 16), np.float32)
    expected[1, 1] = expected[4, 4] = 1.0
    assert out.x_train.shape == (1, 1, 16, 16)
    assert (out.x_train[0, 0] == expected).all()


def test_stdp_peer_bench_runs_tiny_without_the_peer(capsys, tmp_path):
    import numpy as np

    x = np.random.default_rng(0).integers(0, 256, (60, 28, 28), dtype=np.uint8)
    y = np.arange(60) % 10
    data = tmp_path / "tiny.npz"
    np.savez(data, X=x, y=y)
    bench = _load("stdp_peer")
    assert (
        bench.main(["--data", str(data), "--train", "3", "--test", "5", "--neurons", "4", "--presentation-ms", "10", "--no-peer"])
        == 0
    )
    out = capsys.readouterr().out
    assert "fastslow (dt 0.5 ms)" in out and "train samples/s" in out


def test_serve_load_bench_runs_tiny(capsys, tmp_path, fitted_folder):
    import json

    import pytest

    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    bench = _load("serve_load")
    report = tmp_path / "load.json"
    argv = ["--dir", str(fitted_folder), "--clients", "2", "--inputs", "10", "--down-s", "0.2", "--cooldown-s", "0.2"]
    assert bench.main([*argv, "--time-limit", "180", "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "inputs/s" in out and "ok" in out
    data = json.loads(report.read_text())
    load, fault = data["load"], data["fault"]
    assert load["inputs"] == 20 and load["errors"] == 0 and load["degraded"] == 0 and load["answers_equal_local"]
    assert fault["errors"] == 0 and fault["every_call_answered"] and fault["clients_recovered"] == 2
    assert fault["degraded"] == fault["escalations_while_down"] > 0 and fault["degraded_outside_window"] == 0


def test_oversubscription_bench_runs_tiny(capsys, tmp_path):
    import json

    import pytest

    bench = _load("oversubscription")
    report = tmp_path / "over.json"
    assert bench.main(["--tiny", "--rounds", "1", "--variants", "after", "--json", str(report)]) == 0
    assert "loaded / alone" in capsys.readouterr().out
    rows = json.loads(report.read_text())["rows"]
    assert [(row["round"], row["variant"]) for row in rows] == [(0, "after")]
    row = rows[0]
    assert row["alone"]["finished"] and row["loaded"]["finished"]
    assert row["ratio"] == pytest.approx(row["loaded"]["wall_s"] / row["alone"]["wall_s"])
    assert len(row["competitor_rate_share"]) == 1 and row["competitor_rate_share"][0] > 0
    # The old policy, forced: every usable CPU and libgomp's default spinning.
    assert bench.variant("before", 4) == (["--threads", "4"], {"GOMP_SPINCOUNT": "300000"})
    assert bench.variant("threads=2", 4) == (["--threads", "2"], {})
    with pytest.raises(ValueError, match="unknown variant"):
        bench.variant("threads=0", 4)


def test_deep_gpu_script_runs_on_cpu_at_tiny_size(capsys, tmp_path):
    """bench/deep_gpu.py's CPU part (its CUDA-only checks skipped) on tiny networks; SpikingJelly's
    column only where it is installed."""
    bench = _load("deep_gpu")
    bench.main(["--device", "cpu", "--tiny", "--only", "resnet19", "--rounds", "1", "--json", str(tmp_path / "deep.json")])
    out = capsys.readouterr().out
    assert "ok   inference records, numba = torch" in out and "skip mixed precision" in out
    assert "| resnet19 | fastslow |" in out and "System 2 ResNet-18" in out
    assert (tmp_path / "deep.json").is_file()


def test_router_wins_bench_runs_tiny_on_digits(capsys, tmp_path):
    import json

    bench = _load("router_wins")
    report = tmp_path / "wins.json"
    tiny = ["--epochs", "1", "--timesteps", "2", "--hidden", "32", "16", "--policy-epochs", "3"]
    assert bench.main(["--seeds", "2", *tiny, "--json", str(report), "--raw"]) == 0
    out = capsys.readouterr().out
    assert "S2 − 0.3 pt" in out and "S2 − 1 pt" in out and "router − confidence curve" in out
    data = json.loads(report.read_text())
    assert data["settings"] == list(bench.SETTINGS) and len(data["runs"]) == 2
    for run in data["runs"]:
        assert set(run) == set(bench.SETTINGS)
        # The shifts change the test inputs only: the router split is the clean fit's.
        assert all(run[s]["val"] == run["clean"]["val"] and run[s]["select"] == run["clean"]["select"] for s in bench.SHIFTS)
        assert all(run[s]["test"] != run["clean"]["test"] and run[s]["held"] != run["clean"]["held"] for s in bench.SHIFTS)
        assert 0.1 < run["label_noise"]["flipped"]["train"] < 0.3 and run["router_label_noise"]["flipped"]["train"] == 0
        assert run["router_label_noise"]["test"] != run["clean"]["test"]  # the policies learnt from other labels
        assert len(run["specialist"]["strong_classes"]) == 5
    assert all(len(data["per_seed"][s]) == 2 for s in bench.SETTINGS)
    # The figures again from the raw file, without a run: the same tables.
    again = tmp_path / "again.json"
    assert bench.main(["--summarize", str(report), "--json", str(again)]) == 0
    assert capsys.readouterr().out.strip() == out[out.index("| setting") :].strip()
    assert json.loads(again.read_text())["per_seed"] == data["per_seed"]


def test_processes_bench_runs_tiny(capsys, tmp_path):
    import json

    from fastslow.runtime import usable_cpus

    if usable_cpus() < 2:
        import pytest

        pytest.skip("2 processes need 2 CPUs")
    bench = _load("processes")
    report = tmp_path / "processes.json"
    assert bench.main(["--sizes", "tiny", "--rounds", "1", "--fit-timeout-s", "300", "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "speed-up median" in out and "training" in out
    data = json.loads(report.read_text())
    fits = data["fits"]["tiny"][0]
    assert fits["1"]["world_size"] == 1 and fits["2"]["world_size"] == 2
    assert data["summary"]["tiny"]["rounds"] == 1 and data["summary"]["tiny"]["wall_s"]["ratio_median"] > 0


def test_router_data_bench_runs_tiny_on_digits(capsys, tmp_path):
    import json

    from conftest import TINY_CONFIG

    config = tmp_path / "tiny.toml"
    config.write_text(TINY_CONFIG)
    report = tmp_path / "router_data.json"
    argv = ["--config", str(config), "--seeds", "2", "--folds", "2", "--epochs", "1", "--within", "1", "--json", str(report)]
    assert _load("router_data").main(argv) == 0
    out = capsys.readouterr().out
    assert "paired differences" in out and "crossfit − split" in out
    data = json.loads(report.read_text())
    rows = {(row["seed"], row["mode"]): row for row in data["rows"]}
    assert set(rows) == {(0, "split"), (0, "crossfit"), (1, "split"), (1, "crossfit")}
    # Cross-fit routers learn from every training input, the split's from the held-out fifth.
    assert rows[0, "crossfit"]["router_records"] == rows[0, "crossfit"]["split"]["train"] == 1437
    assert rows[0, "split"]["router_records"] == rows[0, "split"]["split"]["val"] == 288
    # Within 1 (100 points) of System 2 every family reaches: two paired seeds for every difference.
    assert all(diff["n"] == 2 and "verdict" in diff for diff in data["summary"]["differences"])


def test_demo_seeds_bench_runs_tiny(capsys, tmp_path):
    import json

    bench = _load("demo_seeds")
    report = tmp_path / "demo.json"
    assert bench.main(["--seeds", "2", "--epochs", "1", "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "| `system2` |" in out and "| `system1` |" in out and "best threshold cascade" in out
    data = json.loads(report.read_text())
    assert len(data["strategies"]) == 2 and data["config"]["seed"] == 0
    # The rows are means over the seeds: System 1's accuracy row is the mean of the two runs'.
    s1 = [next(s for s in run if s["name"] == "system1")["accuracy"] for run in data["strategies"]]
    assert f"| `system1` | {50 * (s1[0] + s1[1]):.2f} ± " in out


def test_s1_search_bench_runs_tiny_on_digits(capsys, tmp_path):
    bench = _load("s1_search")
    rows = tmp_path / "rows.jsonl"
    argv = ["--quick", "--designs", "default", "mlp32-T4-direct", "--rows", str(rows), "--pair", "mlp32-T4-direct", "default"]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "front over seeds [0], 2 designs" in out and "pair mlp32-T4-direct − default" in out
    lines = bench.read_rows(rows)
    assert [r["design"] for r in lines] == ["default", "mlp32-T4-direct"]
    for r in lines:
        # The oracle bound is System 1's full run plus its errors at System 2's energy (≥ S1 alone).
        assert r["oracle_ratio"] >= r["s1_uj"] / r["s2_uj"] - 1e-9
        if r["best"] is not None:
            assert r["best"]["accuracy"] >= r["s2_accuracy"] - 0.003 - 1e-12
            assert abs(r["best"]["s1_part"] + r["best"]["s2_part"] - r["best"]["ratio"]) < 1e-9
    assert bench.main(["--summarise", "--rows", str(rows), "--designs", "nope"]) == 2


def test_seenn2_digits_bench_runs_tiny(capsys):
    bench = _load("seenn2_digits")
    assert bench.main(["--quick", "--seeds", "0"]) == 0
    out = capsys.readouterr().out
    assert "SEENN-II new recipe" in out and "SEENN-II old recipe" in out and "new − old" in out
