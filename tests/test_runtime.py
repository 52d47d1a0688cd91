"""The thread policy (fastslow.runtime): the counts it chooses, the user's overrides, the OpenMP wait
policy set before torch loads, and results.json recording what ran."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastslow import runtime
from fastslow.cli import main
from fastslow.config import load_config
from fastslow.errors import ConfigError

SRC = Path(runtime.__file__).resolve().parents[1]


def test_auto_is_one_thread_unless_the_user_set_omp_num_threads():
    assert runtime.AUTO_THREADS == 1
    assert runtime.resolve_threads("auto", {}) == (1, "auto")
    assert runtime.resolve_threads("auto", {"OMP_NUM_THREADS": "3"}) == (3, "OMP_NUM_THREADS")
    # OpenMP's list form gives the outer team first; what is no count leaves auto's choice.
    assert runtime.resolve_threads("auto", {"OMP_NUM_THREADS": "4,2"}) == (4, "OMP_NUM_THREADS")
    assert runtime.resolve_threads("auto", {"OMP_NUM_THREADS": "many"}) == (1, "auto")
    assert runtime.resolve_threads("auto", {"OMP_NUM_THREADS": "0"}) == (1, "auto")


def test_a_count_overrides_auto_and_omp_num_threads():
    assert runtime.resolve_threads(2, {"OMP_NUM_THREADS": "3"}) == (2, "given")
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="auto"):
            runtime.resolve_threads(bad, {})


def test_config_key_takes_auto_or_a_count():
    assert load_config(None).runtime.threads == "auto"
    assert load_config(None, threads=3).runtime.threads == 3
    for bad in (0, "x", 2.5):
        with pytest.raises(ConfigError, match=r'option --threads .*"auto" or a whole number ≥ 1.*runtime.threads'):
            load_config(None, threads=bad)


def test_cli_rejects_a_bad_thread_count_in_one_line(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--data", "digits", "--out", str(tmp_path / "r"), "--threads", "0"])
    assert exit_.value.code == 2
    assert "--threads: '0' is neither \"auto\" nor a whole number ≥ 1" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_wait_policy_is_set_only_before_torch_and_only_if_the_user_chose_none(monkeypatch):
    monkeypatch.setattr(runtime, "_wait_policy_set_by", runtime._wait_policy_set_by)  # restored after
    environ: dict[str, str] = {}
    assert runtime.prepare_process(environ) == "too late"  # torch is loaded in this process
    assert environ == {}
    environ = {"GOMP_SPINCOUNT": "1000"}
    assert runtime.prepare_process(environ) == "user"
    assert environ == {"GOMP_SPINCOUNT": "1000"}


def test_thread_policy_sets_the_counts_and_restores_them():
    before = torch.get_num_threads()
    target = 2 if before != 2 else 1
    with runtime.thread_policy(target) as settings:
        assert torch.get_num_threads() == target
        assert settings["intra_op"] == target
        assert (settings["requested"], settings["source"]) == (target, "given")
    assert torch.get_num_threads() == before


def test_fit_records_the_threads_it_ran_on(fitted_folder):
    """The session's tiny fit ran in this process through the command line, on "auto"."""
    recorded = json.loads((fitted_folder / "results.json").read_text())["runtime"]
    threads, source = runtime.resolve_threads("auto")
    assert (recorded["requested"], recorded["source"], recorded["intra_op"]) == ("auto", source, threads)
    assert recorded["cpus"] == runtime.usable_cpus()
    assert recorded["interop"] >= 1 and set(recorded["openmp_wait"]) == {"variables", "set_by"}
    if recorded["numba"] is not None:  # numba's kernels follow torch's count, up to numba's pool
        import numba

        assert recorded["numba"] == min(threads, numba.config.NUMBA_NUM_THREADS)


def test_command_line_sets_the_wait_policy_before_torch_and_records_it(tmp_path, tiny_config):
    """In a fresh process: the command line loads no torch before it sets OMP_WAIT_POLICY, and a fit
    with --threads 2 runs and records two threads."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", *runtime.WAIT_VARIABLES)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(SRC), env.get("PYTHONPATH"))))
    light = subprocess.run(
        [sys.executable, "-c", "import sys, fastslow.cli; print('torch' in sys.modules)"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert light.stdout.split() == ["False"], light.stderr
    out = tmp_path / "run"
    command = ["fit", "--data", "digits", "--out", str(out), "--config", str(tiny_config), "--threads", "2", "--quiet"]
    result = subprocess.run(
        [sys.executable, "-m", "fastslow.cli", *command], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    recorded = json.loads((out / "results.json").read_text())["runtime"]
    assert (recorded["requested"], recorded["source"], recorded["intra_op"]) == (2, "given", 2)
    assert recorded["openmp_wait"] == {"variables": {"OMP_WAIT_POLICY": "PASSIVE"}, "set_by": "fastslow"}
    assert json.loads((out / "config.json").read_text())["runtime"] == {"threads": 2, "processes": 1}


def test_other_commands_take_threads_too_and_restore_the_count(fitted_folder, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(fitted_folder, folder)
    before = torch.get_num_threads()
    target = 2 if before != 2 else 1
    assert main(["evaluate", str(folder), "--threads", str(target), "--quiet"]) == 0
    recorded = json.loads((folder / "results.json").read_text())["runtime"]
    assert (recorded["requested"], recorded["source"], recorded["intra_op"]) == (target, "given", target)
    assert torch.get_num_threads() == before
