import os
import subprocess
import sys
from pathlib import Path

import pytest

TINY_CONFIG = """
[system1]
epochs = 2
timesteps = 3
hidden = [32, 16]
exit_heads = [0]

[system2]
epochs = 2

[router]
shares = [0.2, 0.4]
epochs = 40
exit_shares = [0.2]
exit_energy_budgets_uj = [0.05]
exit_epochs = 40
step_shares = [0.1]
step_energy_budgets_uj = [0.05]
step_epochs = 40

[seenn2]
betas = [0.05]
pretrain_epochs = 20
rl_epochs = 20

[ponder]
lambda_ps = [0.5]
epochs = 40

[confidence]
thresholds = [0.5, 0.8, 0.95]
"""


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_CONFIG)
    return path


@pytest.fixture(scope="session")
def fitted_folder(tmp_path_factory):
    """One tiny fit on digits shared by the tests that only read or re-evaluate it."""
    from fastslow.cli import main

    root = tmp_path_factory.mktemp("fit")
    config = root / "tiny.toml"
    config.write_text(TINY_CONFIG)
    out = root / "run"
    # On the CPU wherever it runs: the tests that read it feed CPU tensors (a GPU test moves it itself).
    assert main(["fit", "--data", "digits", "--out", str(out), "--config", str(config), "--device", "cpu", "--quiet"]) == 0
    return out


@pytest.fixture
def in_triton_interpreter():
    """Run ``module.check(…)`` calls of a test file in a new process under ``TRITON_INTERPRET=1``
    (Triton reads it at import, so it cannot be set inside this one); fails with its stderr."""
    pytest.importorskip("triton", reason="Triton is not installed (CUDA builds of torch ship it; the test extra adds it)")

    def run(test_file: str, *calls: str) -> None:
        path = Path(test_file)
        script = f"import sys; sys.path.insert(0, {str(path.parent)!r}); import {path.stem} as t; " + "; ".join(
            f"t.{call}" for call in calls
        )
        env = {**os.environ, "TRITON_INTERPRET": "1"}
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]

    return run
