"""Shared by the benchmarks: where the benchmark data lives, a wide console, peers' virtual environments."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
VENVS = ROOT / ".bench-venvs"
SHARED = ROOT.parent / "shared" / "data"


def console() -> Console:
    return Console(width=max(Console().width, 150))


def default_data(out: Console) -> str | None:
    """``mnist:../shared/data`` where the benchmark data is present; else say so and return None."""
    if not (SHARED / "MNIST" / "raw").is_dir():
        out.print(f"skipped: benchmark data not found at {SHARED / 'MNIST' / 'raw'} (see ../shared/data/README.md)")
        return None
    return f"mnist:{SHARED}"


def peer_python(library: str, requirements: list[str], out) -> str | None:
    """The peer's venv python, creating the venv on first use; None (after saying why) if it cannot."""
    venv = VENVS / library
    python = venv / "bin" / "python"
    if (venv / ".ready").exists():
        return str(python)
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, capture_output=True)
        base = subprocess.run(
            [sys.executable, "-c", "import site; print(site.getsitepackages()[0])"], capture_output=True, text=True, check=True
        ).stdout.strip()
        own = subprocess.run(
            [str(python), "-c", "import site; print(site.getsitepackages()[0])"], capture_output=True, text=True, check=True
        ).stdout.strip()
        Path(own, "fastslow-bench-base.pth").write_text(base + "\n")
        subprocess.run([str(python), "-m", "pip", "install", "-q", "setuptools", "wheel"], check=True, capture_output=True)
        # Download first, then install the files: Norse's sdist reports version 0.0.0 when built
        # outside git, which a `norse==1.1.0` requirement would reject.
        downloads = venv / "downloads"
        for command in (
            lambda: [str(python), "-m", "pip", "download", "-q", "--no-deps", "-d", str(downloads), *requirements],
            lambda: [
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                "--no-deps",
                "--no-build-isolation",
                *map(str, sorted(downloads.iterdir())),
            ],
        ):  # the install line is built only after the download has filled the folder
            result = subprocess.run(command(), capture_output=True, text=True)
            if result.returncode != 0:
                lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("WARNING")]
                raise RuntimeError(lines[-1] if lines else "pip failed")
        (venv / ".ready").write_text("ok\n")
        return str(python)
    except (subprocess.CalledProcessError, RuntimeError, OSError) as err:
        out.print(f"[yellow]{library}: could not be installed here ({err}); going on without it[/yellow]")
        return None
