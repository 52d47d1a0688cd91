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
