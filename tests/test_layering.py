"""Lower layers never import upper ones: the simulation, the STDP networks, the energy model and
the data import nothing from the pipeline, the evaluation, the serving or the command line."""

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "fastslow"
LOWER = ("spiking", "systems", "stdp", "energy", "data", "policies")
UPPER = ("fastslow.pipeline", "fastslow.cli", "fastslow.evaluation", "fastslow.serving", "fastslow.stdp_jobs", "fastslow.interop")


def _imported_modules(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):  # lazy imports inside functions too
        if isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]  # from fastslow import pipeline
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
    return names


@pytest.mark.parametrize("package", LOWER)
def test_lower_packages_import_no_upper_layer(package):
    offending = [
        f"{path.relative_to(SOURCE)}: {name}"
        for path in sorted((SOURCE / package).rglob("*.py"))
        for name in _imported_modules(path)
        if name.startswith(UPPER)
    ]
    assert not offending, offending


def test_no_private_name_crosses_a_package():
    """A name with a leading underscore is imported only inside its own package."""
    offending = []
    for path in sorted(SOURCE.rglob("*.py")):
        here = path.relative_to(SOURCE).parts
        package = here[0] if len(here) > 1 else ""
        for name in _imported_modules(path):
            parts = name.split(".")
            if parts[0] != "fastslow" or parts[-1] == "__future__":
                continue
            owner = parts[1] if len(parts) > 2 else ""
            if any(part.startswith("_") and not part.startswith("__") for part in parts[1:]) and owner != package:
                offending.append(f"{path.relative_to(SOURCE)}: {name}")
    assert not offending, offending
