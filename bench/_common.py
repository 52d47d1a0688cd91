"""Shared by the benchmarks: where the benchmark data lives, and a wide console."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def console() -> Console:
    return Console(width=max(Console().width, 120))


def default_data(out: Console) -> str | None:
    """``mnist:../shared/data`` where the benchmark data is present; else say so and return None."""
    if not (SHARED / "MNIST" / "raw").is_dir():
        out.print(f"skipped: benchmark data not found at {SHARED / 'MNIST' / 'raw'} (see ../shared/data/README.md)")
        return None
    return f"mnist:{SHARED}"
