"""Progress for long jobs (training, evaluation, the STDP protocols), shared by every command: rich
bars on a terminal; elsewhere (a log file, a pipe, CI, ``nohup``) a plain line at least every
``interval`` seconds. Also the console every command prints to."""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, Task, TextColumn, TimeElapsedColumn

from fastslow.errors import ConfigError

PLAIN_INTERVAL_S = 10.0  # seconds between plain progress lines off a terminal
INTERVAL_ENV = "FASTSLOW_PROGRESS_INTERVAL"  # overrides it (seconds)
PLAIN_WIDTH = 200  # columns off a terminal without COLUMNS: wide enough that no table column is cut


def output_console() -> Console:
    """A rich console on stdout. Off a terminal it is ``COLUMNS`` wide, or :data:`PLAIN_WIDTH`
    (rich's own default there, 80, cuts the results table's columns)."""
    console = Console()
    if not (console.is_terminal or console.is_jupyter) and not os.environ.get("COLUMNS", "").strip().isdigit():
        console.width = PLAIN_WIDTH
    return console


def plain_interval() -> float:
    """Seconds between plain progress lines: ``FASTSLOW_PROGRESS_INTERVAL`` if set, else 10."""
    text = os.environ.get(INTERVAL_ENV)
    if text is None:
        return PLAIN_INTERVAL_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{INTERVAL_ENV}={text!r} is not a positive number of seconds: set e.g. {INTERVAL_ENV}=10")
    return value


def progress_line(task: Task) -> str:
    """One plain line for a task: ``System 1 (SNN, BPTT): epoch 3/20, batch 412/1380 (12 s)``, or
    ``…: done, 1380/1380 (41 s)``. A task added with ``epoch_batches=B`` counts batches, B an epoch."""
    done, total = int(task.completed), None if task.total is None else int(task.total)
    elapsed = f"{(task.finished_time if task.finished else task.elapsed) or 0.0:.0f} s"
    count = f"{done}/{total}" if total is not None else str(done)
    if task.finished:
        return f"{task.description}: done, {count} ({elapsed})"
    per_epoch = task.fields.get("epoch_batches")
    if per_epoch and total:
        epochs = -(-total // per_epoch)
        return f"{task.description}: epoch {min(done // per_epoch + 1, epochs)}/{epochs}, batch {count} ({elapsed})"
    return f"{task.description}: {count} ({elapsed})"


class _PlainReporter:
    """Prints every ``interval`` s a line per running task (or that work goes on), and once a line for
    each task that finished; reads the tasks of a (not drawn) rich Progress."""

    def __init__(self, progress: Progress, console: Console, interval: float) -> None:
        self.progress, self.console, self.interval = progress, console, interval
        self.reported_done: set[int] = set()
        self.started = time.monotonic()
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="fastslow-progress", daemon=True)

    def _print(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False, emoji=False, soft_wrap=True)

    def report(self, final: bool = False) -> None:
        lines = []
        running = False
        for task in list(self.progress.tasks):
            if task.finished and task.id not in self.reported_done:
                self.reported_done.add(task.id)
                lines.append(progress_line(task))
            elif not task.finished and task.started and not final:
                running = True
                lines.append(progress_line(task))
        if not lines and not running and not final:
            lines.append(f"working ({time.monotonic() - self.started:.0f} s)")
        for line in lines:
            self._print(line)

    def _run(self) -> None:
        while not self.stop_event.wait(self.interval):
            self.report()

    def __enter__(self) -> _PlainReporter:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        self.thread.join()
        if exc[0] is None:
            self.report(final=True)


@contextmanager
def progress_bars(console: Console, enabled: bool, interval: float | None = None) -> Iterator[Progress]:
    """A rich :class:`~rich.progress.Progress` on ``console`` for the ``with`` block: on a terminal it
    draws bars (description, bar, done/total, elapsed time) that stay on screen; elsewhere it prints
    :func:`progress_line` for each running task every ``interval`` seconds (default
    :func:`plain_interval`) and one for each task when it finishes. ``enabled=False`` prints nothing
    but takes the same calls."""
    live = enabled and (console.is_terminal or console.is_jupyter)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not live,
        transient=False,
    )
    if not enabled or live:
        with progress:
            yield progress
        return
    with progress, _PlainReporter(progress, console, plain_interval() if interval is None else interval):
        yield progress
