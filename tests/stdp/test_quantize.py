"""Low-precision weights: on the grid, and small STDP updates kept on average."""

import numpy as np
import pytest

from fastslow.errors import ConfigError
from fastslow.stdp import STDPNetwork, STDPSpec
from fastslow.stdp.quantize import grid_step, on_grid, quantize_array


@pytest.mark.parametrize("bits", [4, 8, 16])
def test_learned_weights_stay_on_their_grid(bits):
    spec = STDPSpec(model="spikedyn", n_inputs=16, n_neurons=4, bits=bits, presentation_ms=50)
    net = STDPNetwork(spec, seed=0)
    net.learn(np.random.default_rng(0).random((5, 16), dtype=np.float32))
    assert on_grid(net.weights, bits, spec.constants.w_max)


def test_small_updates_survive_stochastic_rounding():
    # A twentieth of a 4-bit level, added 100 times: deterministic rounding would keep none of it.
    rng = np.random.default_rng(0)
    step = grid_step(4, 1.0)
    weights = np.full(2000, 5 * step, np.float32)
    for _ in range(100):
        weights = quantize_array(weights + np.float32(0.05 * step), 4, 1.0, rng)
    assert np.round((5 * step + 0.05 * step) / step) == 5  # the deterministic grid would not move
    assert weights.mean() == pytest.approx(10 * step, rel=0.05)


def test_float32_is_not_rounded_and_everything_is_clipped():
    rng = np.random.default_rng(0)
    out = quantize_array(np.array([-0.5, 0.123456, 1.7], np.float32), 32, 1.0, rng)
    assert out.tolist() == pytest.approx([0.0, 0.123456, 1.0])


def test_unsupported_precision_is_refused():
    with pytest.raises(ConfigError, match="4, 8, 16, 32"):
        grid_step(12, 1.0)
