"""Progress bars for long jobs (training, the STDP protocols), shared by every command."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


@contextmanager
def progress_bars(console: Console, enabled: bool) -> Iterator[Progress]:
    """A rich :class:`~rich.progress.Progress` on ``console`` (description, bar, done/total, elapsed
    time) for the ``with`` block; ``enabled=False`` draws nothing but takes the same calls. The bars
    stay on screen when the block ends."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not enabled,
        transient=False,
    )
    with progress:
        yield progress
