"""Multi-process fits (fastslow.distributed): 2 CPU processes over gloo on loopback train the same
tiny problem as 1 process; errors are one line and leave --out as it was.

Tolerance: the gradients are summed over the processes weighted by each share of the batch, so a
2-process step is the 1-process step up to float rounding (summation order), which Adam carries
through the steps. With direct encoding (no random draws) the weights after training agree within
``WEIGHT_ATOL`` (measured: about 4e-5) and every strategy's accuracy within ``ACCURACY_POINTS``.
"""

import json
import os
import time

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from fastslow import distributed, runtime
from fastslow.cli import main
from fastslow.config import load_config
from fastslow.errors import ConfigError, WorkerError
from fastslow.pipeline import fit

WEIGHT_ATOL = 1e-3
ACCURACY_POINTS = 1.0
# Each worker imports torch and fastslow; on a busy 2-core machine a tiny 2-process fit takes well under this.
BOUND_S = 120

SMALL = """
policies = ["confidence"]
[system1]
epochs = 2
timesteps = 3
hidden = [32, 16]
exit_heads = [0]
encoding = "direct"
[system2]
epochs = 2
[confidence]
thresholds = [0.5, 0.9]
"""

needs_two_cpus = pytest.mark.skipif(runtime.usable_cpus() < 2, reason="2 processes need 2 CPUs")


@pytest.fixture
def small_config(tmp_path):
    path = tmp_path / "small.toml"
    path.write_text(SMALL)
    return path


def _fit_cli(config, out, *extra) -> int:
    return main(["fit", "--data", "digits", "--out", str(out), "--config", str(config), "--device", "cpu", "--quiet", *extra])


@needs_two_cpus
def test_two_processes_train_what_one_does(tmp_path, small_config):
    assert _fit_cli(small_config, tmp_path / "one") == 0
    started = time.perf_counter()
    assert _fit_cli(small_config, tmp_path / "two", "--processes", "2") == 0
    assert time.perf_counter() - started < BOUND_S
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert one["distributed"]["world_size"] == 1 and one["distributed"]["backend"] is None
    assert (two["distributed"]["world_size"], two["distributed"]["backend"], two["distributed"]["launcher"]) == (
        2,
        "gloo",
        "fastslow",
    )
    assert two["distributed"]["global_batch"] == {"system1": 64, "system2": 64}
    assert set(two["distributed"]["train_seconds"]) == set(two["distributed"]["train_cpu_seconds"]) == {"system1", "system2"}
    # Each process its share of the fit's threads ("auto": one in all).
    assert (two["runtime"]["processes"], two["runtime"]["per_process"], two["runtime"]["intra_op"]) == (2, 1, 1)
    assert two["config"]["runtime"]["processes"] == 2
    assert "2 processes, data-parallel (gloo" in (tmp_path / "two" / "report.md").read_text()
    assert "1 process" in (tmp_path / "one" / "report.md").read_text()
    for system in ("system1", "system2"):
        a = load_file(tmp_path / "one" / "checkpoints" / f"{system}.safetensors")
        b = load_file(tmp_path / "two" / "checkpoints" / f"{system}.safetensors")
        assert a.keys() == b.keys()
        for name in a:
            assert torch.allclose(a[name], b[name], atol=WEIGHT_ATOL, rtol=0), (system, name)
    acc_one = {s["name"]: s["accuracy"] for s in one["strategies"]}
    acc_two = {s["name"]: s["accuracy"] for s in two["strategies"]}
    assert acc_one.keys() == acc_two.keys()
    for name in acc_one:
        assert abs(acc_one[name] - acc_two[name]) * 100 <= ACCURACY_POINTS, name
    # The folder reloads like any fit's, and a re-evaluation keeps the record of how it was trained.
    assert main(["evaluate", str(tmp_path / "two"), "--quiet"]) == 0
    again = json.loads((tmp_path / "two" / "results.json").read_text())
    assert again["distributed"]["world_size"] == 2


class _DiesOnRankOne(nn.Module):
    """A System 2 whose process of rank 1 dies (no exception, no word) at its first batch."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        if torch.distributed.is_initialized() and torch.distributed.get_rank() == 1:
            os._exit(3)
        return self.fc(x.flatten(1))


@needs_two_cpus
def test_a_dead_worker_stops_the_fit_with_one_error_and_out_untouched(tmp_path, small_config):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("{}\n")  # an earlier fit's
    config = load_config(small_config, data="digits", device="cpu", processes=2)
    started = time.perf_counter()
    with pytest.raises(WorkerError, match=r"^process 1 of 2 exited with code 3 before the fit ended; .*--processes 1$"):
        fit(config, out, progress=False, show_table=False, system2=_DiesOnRankOne())
    assert time.perf_counter() - started < BOUND_S
    assert sorted(p.name for p in out.iterdir()) == ["results.json"] and (out / "results.json").read_text() == "{}\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no half-built generation left


@needs_two_cpus
def test_a_workers_data_error_is_one_line_exit_2(tmp_path, small_config, capsys):
    out = tmp_path / "out"
    code = main(["fit", "--data", str(tmp_path / "missing.npz"), "--out", str(out), "--config", str(small_config)]
                + ["--device", "cpu", "--quiet", "--processes", "2"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "missing.npz" in lines[0], err
    assert not out.exists()


def test_more_processes_than_cpus_is_refused_before_any_work(tmp_path, small_config, capsys):
    many = runtime.usable_cpus() + 1
    assert _fit_cli(small_config, tmp_path / "out", "--processes", str(many)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --processes {many} is more than the") and "pass --processes" in err
    assert "\n" not in err and not (tmp_path / "out").exists()


def test_processes_below_one_and_nccl_without_gpus_are_refused(tmp_path, small_config, capsys):
    with pytest.raises(SystemExit) as exit_info:  # argparse: exit 2, one line
        _fit_cli(small_config, tmp_path / "out", "--processes", "0")
    assert exit_info.value.code == 2
    with pytest.raises(ConfigError, match="runtime.processes"):
        load_config(None, processes=0)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="one process per GPU but 0 GPUs are visible"):
            distributed.check_processes(2, "cuda")
    with pytest.raises(ConfigError, match="at least one process"):
        distributed.check_processes(0, "cpu")


def test_under_torchrun_the_world_comes_from_its_environment(tmp_path, small_config, monkeypatch):
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    assert distributed.from_torchrun(env) == distributed.World(1, 2, 1, launcher="torchrun", local_size=2)
    on_two_machines = distributed.from_torchrun({**env, "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"})
    assert (on_two_machines.size, on_two_machines.local_size) == (4, 2)
    assert distributed.from_torchrun({}) is None
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # --processes that disagrees with torchrun's count is refused before joining any group.
    config = load_config(small_config, data="digits", device="cpu", processes=3)
    with pytest.raises(ConfigError, match="torchrun started 2 processes"):
        fit(config, tmp_path / "out", progress=False, show_table=False)


def test_rank_seeds_keep_rank_0_and_repeat():
    assert distributed.rank_seed(7, 0) == 7
    assert distributed.rank_seed(7, 1) == distributed.rank_seed(7, 1) != distributed.rank_seed(7, 2)
    assert distributed.rank_seed(7, 1) != distributed.rank_seed(8, 1)
    assert 0 <= distributed.rank_seed(2**32 - 1, 3) < 2**32


def test_thread_share_per_process():
    assert [runtime.per_process(t, p) for t, p in ((1, 1), (1, 2), (4, 2), (5, 2), (16, 4))] == [1, 1, 2, 2, 4]


@needs_two_cpus
def test_a_given_world_size_repeats_with_random_draws(tmp_path):
    """Rate encoding draws spikes while System 1 trains, each rank its own (seeded by the fit's seed
    and its rank): two 2-process fits with one seed give the same weights, bit for bit."""
    config = tmp_path / "rate.toml"
    config.write_text(SMALL.replace('encoding = "direct"', 'encoding = "rate"').replace("epochs = 2", "epochs = 1"))
    for name in ("a", "b"):
        assert _fit_cli(config, tmp_path / name, "--processes", "2") == 0
    for system in ("system1", "system2"):
        a = (tmp_path / "a" / "checkpoints" / f"{system}.safetensors").read_bytes()
        b = (tmp_path / "b" / "checkpoints" / f"{system}.safetensors").read_bytes()
        assert a == b, system


def test_the_rank_that_failed_is_named_not_the_one_that_lost_it(tmp_path):
    """Rank 1 fails on its own; rank 0 then loses its peer in a collective: rank 1 is the cause."""
    import pickle
    from types import SimpleNamespace

    from fastslow.errors import WorkerError

    (tmp_path / "0.pickle").write_bytes(pickle.dumps(WorkerError(f"process 0 {distributed.LOST_PEERS} (…): RuntimeError: x")))
    (tmp_path / "1.pickle").write_bytes(pickle.dumps(WorkerError("process 1 failed: RuntimeError: boom")))
    err = distributed._failure(SimpleNamespace(failures={0: None, 1: None}), tmp_path, 2)
    assert "process 1 failed: RuntimeError: boom" in str(err)


def test_a_rank_that_died_unrecorded_is_named_not_the_one_that_lost_it(tmp_path):
    """The race a CI run hit: rank 1 dies without a word, rank 0 loses it and exits too, and the
    launcher records rank 0's exit only. Rank 1, neither heard nor recorded, is the cause."""
    import pickle
    from types import SimpleNamespace

    (tmp_path / "0.pickle").write_bytes(pickle.dumps(WorkerError(f"process 0 {distributed.LOST_PEERS} (…): RuntimeError: x")))
    err = distributed._failure(SimpleNamespace(failures={0: SimpleNamespace(exitcode=-6)}), tmp_path, 2)
    assert str(err).startswith("process 1 of 2 ended without a word before the fit ended;"), err
    assert str(err).endswith("--processes 1")


def _share_rank_0s_word(world: distributed.World) -> str:
    """Each rank offers its own word; every rank must get rank 0's."""
    import dataclasses

    world = dataclasses.replace(world, backend="gloo")
    with distributed.process_group(world):
        got = distributed.from_main(world, f"rank {world.rank}")
    if got != "rank 0":
        raise ConfigError(f"process {world.rank} got {got!r} from process 0")
    return got


@needs_two_cpus
def test_every_rank_hears_rank_0s_verdict(tmp_path):
    assert distributed.from_main(distributed.World(), "alone") == "alone"
    assert distributed.launch(_share_rank_0s_word, (), 2) == "rank 0"


def test_under_torchrun_the_other_ranks_stop_with_rank_0s_out_error(tmp_path, small_config, monkeypatch):
    """Only rank 0 checks --out; rank 1 stops with rank 0's reason before it trains anything."""
    from fastslow import pipeline

    monkeypatch.setattr(distributed, "from_main", lambda world, value: "--out x is a file: choose another --out")
    config = load_config(small_config, data="digits", seed=0, device="cpu")
    rank_1 = distributed.World(1, 2, 1, launcher="torchrun", local_size=2)  # no group: from_main is replaced
    with pytest.raises(ConfigError, match="process 0 cannot write the fit: --out x is a file"):
        pipeline._fit(config, tmp_path / "out", console=None, progress=False, show_table=False, system2=None, world=rank_1)
    assert not (tmp_path / "out").exists()
