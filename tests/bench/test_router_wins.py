"""bench/router_wins.py: its settings' data and its figures, against references."""

import importlib.util
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("router_wins", BENCH / "router_wins.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_blur_is_the_gaussian_kernel_and_keeps_constants(bench):
    options = bench.Options(blur_sigma=1.0)
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 2] = 1.0
    g = np.exp(-np.array([1.0, 0.0, 1.0]) / 2)
    kernel = np.outer(g, g) / np.outer(g, g).sum()
    np.testing.assert_allclose(bench.shift_inputs(x, "blur", options, 0)[0, 0, 1:4, 1:4].numpy(), kernel, rtol=1e-6)
    flat = torch.full((2, 1, 8, 8), 0.4)
    torch.testing.assert_close(bench.shift_inputs(flat, "blur", options, 0), flat)


def test_noise_and_dim_shifts(bench):
    x = torch.rand(200, 1, 8, 8)
    options = bench.Options(noise_sigma=0.3, dim=0.5)
    noisy = bench.shift_inputs(x, "noise", options, 7)
    assert noisy.min() >= 0 and noisy.max() <= 1 and 0.15 < float((noisy - x).abs().mean()) < 0.3
    torch.testing.assert_close(noisy, bench.shift_inputs(x, "noise", options, 7))  # seeded
    torch.testing.assert_close(bench.shift_inputs(x, "dim", options, 0), 0.5 * x)
    with pytest.raises(ValueError, match="images"):
        bench.shift_inputs(torch.rand(3, 64), "dim", options, 0)


def test_symmetric_noise_flips_to_another_class_at_the_rate(bench):
    y = torch.arange(20000) % 10
    noisy = bench.symmetric_noise(y, 0.2, 10, 0)
    flipped = noisy != y
    assert abs(float(flipped.float().mean()) - 0.2) < 0.01
    # A flipped label is uniform over the other nine classes.
    offsets = ((noisy[flipped] - y[flipped]) % 10).numpy()
    assert set(offsets) == set(range(1, 10)) and np.bincount(offsets)[1:].min() > 0.8 * flipped.sum() / 9


def test_specialist_subset_keeps_the_strong_classes_and_a_share_of_the_rest(bench):
    y = torch.arange(100) % 4  # 25 of each class
    index = bench.specialist_subset(y, [1, 3], 0.2, 0)
    counts = np.bincount(y[index].numpy(), minlength=4)
    assert list(counts) == [5, 25, 5, 25] and len(set(index.tolist())) == len(index)


def test_curve_mean_accuracy_is_the_area_over_the_rates(bench):
    points = [
        {"family": "router", "escalation_rate": 0.5, "accuracy": 1.0},
        {"family": "other", "escalation_rate": 0.2, "accuracy": 0.0},
    ]
    # From (0, 0.5) to (0.5, 1.0): a line whose mean over [0, 0.5] is 0.75; over [0, 0.25] 0.625.
    assert bench.curve_mean_accuracy(points, "router", 0.5, 0.5) == pytest.approx(0.75)
    assert bench.curve_mean_accuracy(points, "router", 0.5, 0.25) == pytest.approx(0.625)


def test_the_clean_setting_is_what_fit_reports(bench):
    from fastslow.pipeline import fit

    args = bench.argparse.Namespace(epochs=1, timesteps=2, hidden=[16, 8], policy_epochs=2, data="digits", threads=None)
    config = bench.bench_config(args).model_copy(update={"seed": 3})
    mine = bench.run_seed(config, bench.Options(), ("clean",), None)["clean"]["test"]
    with tempfile.TemporaryDirectory() as folder:
        reference = bench.compact(fit(config, folder, progress=False, show_table=False).results)
    assert mine == reference


def test_seed_stats_pick_the_cheapest_points_and_the_deployed_ones(bench):
    def s(name, family, acc, ratio, rate=0.0):
        return {
            "name": name,
            "family": family,
            "accuracy": acc,
            "energy_uj": ratio,
            "energy_ratio_vs_s2": ratio,
            "escalation_rate": rate,
        }

    test = [
        s("system1", "system1", 0.90, 0.1),
        s("system2", "system2", 0.98, 1.0, 1.0),
        s("confidence@0.9", "confidence", 0.978, 0.3, 0.2),
        s("confidence@0.5", "confidence", 0.95, 0.15, 0.05),
        s("router@share=0.2", "router", 0.98, 0.25, 0.2),
        s("router@share=0.05", "router", 0.96, 0.12, 0.05),
    ]
    val = [dict(p) for p in test]
    val[4]["accuracy"] = 0.5  # on the router split the router point misses the target: its best point is deployed
    stats = bench.seed_stats({"test": test, "val": val, "select": test, "held": val})
    assert stats["targets"][0.003] == {
        "learned": {"name": "router@share=0.2", "ratio": 0.25},
        "threshold": {"name": "confidence@0.9", "ratio": 0.3},
    }
    on_val = stats["deployed"]["router_split"]
    assert on_val["learned"]["name"] == "router@share=0.05" and not on_val["learned"]["reached"]
    assert on_val["threshold"]["name"] == "confidence@0.9" and on_val["threshold"]["drop_pt"] == pytest.approx(0.2)
    # Chosen on the select half (the test list here), met on the held half (the val list): 50 points down.
    on_half = stats["deployed"]["clean_half"]["learned"]
    assert on_half["name"] == "router@share=0.2" and on_half["reached"] and on_half["drop_pt"] == pytest.approx(48.0)
    assert stats["budgets"][0.2] == {"learned": 0.96, "threshold": 0.95}
    assert stats["curve"]["r_max"] == 0.2
