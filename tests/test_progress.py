"""Progress off a terminal: plain lines at an interval (CI logs, nohup, a pipe), none with --quiet;
tables printed off a terminal keep every column."""

import io
import re
import shutil
import time

import numpy as np
import pytest
from rich.console import Console
from rich.progress import Progress

from fastslow.cli import main
from fastslow.errors import ConfigError
from fastslow.progress import PLAIN_WIDTH, output_console, plain_interval, progress_bars, progress_line


def test_a_progress_line_names_the_task_its_epoch_count_and_time():
    now = [100.0]
    progress = Progress(get_time=lambda: now[0], disable=True)
    training = progress.add_task("System 1 (SNN, BPTT)", total=60, epoch_batches=20)
    other = progress.add_task("policies (3 families)", total=3)
    now[0] += 12.4
    progress.advance(training, 45)
    progress.advance(other, 1)
    assert progress_line(progress.tasks[0]) == "System 1 (SNN, BPTT): epoch 3/3, batch 45/60 (12 s)"
    assert progress_line(progress.tasks[1]) == "policies (3 families): 1/3 (12 s)"
    progress.advance(training, 15)
    now[0] += 30.0  # a finished task keeps the time it took
    assert progress_line(progress.tasks[0]) == "System 1 (SNN, BPTT): done, 60/60 (12 s)"


def test_off_a_terminal_lines_come_at_the_interval_and_once_when_a_task_ends():
    file = io.StringIO()
    console = Console(file=file, width=100)
    assert not console.is_terminal
    with progress_bars(console, True, interval=0.02) as bars:
        task = bars.add_task("work", total=3)
        for _ in range(3):
            time.sleep(0.15)
            bars.advance(task)
    lines = file.getvalue().splitlines()
    running = [line for line in lines if re.fullmatch(r"work: [0-2]/3 \(\d+ s\)", line)]
    assert len(running) >= 3, lines  # several ticks while it ran, without any advance needed
    assert lines.count("work: done, 3/3 (0 s)") == 1 and lines[-1] == "work: done, 3/3 (0 s)"
    assert set(lines) <= set(running) | {"work: done, 3/3 (0 s)"}
    quiet = io.StringIO()
    with progress_bars(Console(file=quiet), False, interval=0.01) as bars:
        task = bars.add_task("work", total=1)
        time.sleep(0.05)
        bars.advance(task)
    assert quiet.getvalue() == ""


def test_the_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("FASTSLOW_PROGRESS_INTERVAL", raising=False)
    assert plain_interval() == 10.0
    monkeypatch.setenv("FASTSLOW_PROGRESS_INTERVAL", "0.5")
    assert plain_interval() == 0.5
    for bad in ("0", "-1", "soon", "nan"):
        monkeypatch.setenv("FASTSLOW_PROGRESS_INTERVAL", bad)
        with pytest.raises(ConfigError, match="FASTSLOW_PROGRESS_INTERVAL"):
            plain_interval()


def test_fit_with_stdout_piped_prints_progress_lines_and_quiet_prints_none(tmp_path, capsys, monkeypatch, tiny_config):
    rng = np.random.default_rng(0)
    y = np.arange(120) % 3
    data = tmp_path / "small.npz"
    np.savez(data, X=rng.random((120, 16)).astype(np.float32), y=y)
    config = tmp_path / "few.toml"
    config.write_text('policies = ["confidence"]\n' + tiny_config.read_text())  # top-level keys before the tables
    monkeypatch.setenv("FASTSLOW_PROGRESS_INTERVAL", "0.05")
    args = ["fit", "--data", str(data), "--config", str(config), "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "loud")]) == 0
    out = capsys.readouterr().out
    for done in ("System 1 (SNN, BPTT): done, 4/4", "System 2 (ANN): done, 4/4", "System 1 and 2 on the test split: done"):
        assert done in out, out
    # (Whether a timed line falls within this tiny fit's milliseconds is up to the scheduler: the timed
    # lines' text and cadence are checked with a fake clock above.)
    lines = out.splitlines()
    before_table = lines[: next(i for i, line in enumerate(lines) if "test inputs, profile" in line)]
    plain = re.compile(r".+: ((epoch \d+/\d+, batch )?\d+/\d+|done, \d+/\d+) \(\d+ s\)|working \(\d+ s\)")
    assert before_table and all(plain.fullmatch(line) for line in before_table), before_table  # plain lines, no bars
    assert "report:" in out
    assert main([*args, "--out", str(tmp_path / "quiet"), "--quiet"]) == 0
    assert capsys.readouterr().out == ""


def test_the_table_off_a_terminal_keeps_every_column(fitted_folder, tmp_path, capsys, monkeypatch):
    from fastslow.pipeline import evaluate_folder

    monkeypatch.delenv("COLUMNS", raising=False)
    assert output_console().width == PLAIN_WIDTH
    monkeypatch.setenv("COLUMNS", "123")
    assert output_console().width == 123
    monkeypatch.delenv("COLUMNS")
    copy = tmp_path / "run"
    shutil.copytree(fitted_folder, copy)
    results, _ = evaluate_folder(copy, progress=False)  # the Python API's own console: stdout is captured here
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "strategy" in line)
    for column in ("strategy", "pick", "acc %", "esc %", "T run", "µJ/in", "×S2"):
        assert column in header, header
    assert "…" not in out and max(len(line) for line in out.splitlines()) > 80
    assert "router@exits,budget=0.05uJ" in out
