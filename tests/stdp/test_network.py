"""STDP networks: the learning rule's direction and size, competition, thresholds, memory."""

import math

import numpy as np
import pytest

from fastslow.errors import ConfigError
from fastslow.stdp import STDPNetwork, STDPSpec, memory_bytes
from fastslow.stdp.network import membrane_step, potentiation_scale, stdp_depress, stdp_potentiate, uncommitted


def test_stdp_on_a_hand_made_two_neuron_case():
    # One input → one neuron, w = 0.5. A pre spike while post1 = 0.6 depresses by nu_pre·post1;
    # a post spike while pre = 0.8 and post2 (before its reset) = 0.5 potentiates by nu_post·pre·post2.
    weights = np.array([[0.5]], np.float32)
    depressed = stdp_depress(weights, np.array([0]), np.array([0.6], np.float32), nu_pre=0.0001)
    assert depressed[0, 0] == pytest.approx(0.5 - 0.0001 * 0.6)
    potentiated = stdp_potentiate(weights, np.array([0]), np.array([0.8], np.float32), np.array([0.5], np.float32), nu_post=0.01)
    assert potentiated[0, 0] == pytest.approx(0.5 + 0.01 * 0.8 * 0.5)


def test_learning_strengthens_the_inputs_that_drive_the_neuron():
    # Inputs 0–7 always bright, 8–15 always dark: after learning, the neuron's weight mass moves to 0–7
    # (potentiation needs a pre trace, which only the bright inputs have).
    spec = STDPSpec(n_inputs=16, n_neurons=1, presentation_ms=100, constants=_strong(max_rate_hz=400.0))
    net = STDPNetwork(spec, seed=0)
    before = net.weights[:8, 0].sum() / net.weights[:, 0].sum()
    net.learn(np.tile(np.array([1.0] * 8 + [0.0] * 8, np.float32), (20, 1)))
    after = net.weights[:8, 0].sum() / net.weights[:, 0].sum()
    assert after > before + 0.3


@pytest.mark.parametrize("model", ["diehl-cook", "spikedyn"])
def test_lateral_inhibition_makes_one_winner(model):
    spec = STDPSpec(model=model, n_inputs=16, n_neurons=6, presentation_ms=200, constants=_strong())
    net = STDPNetwork(spec, seed=1)
    net.weights[:] = 0.2
    net.weights[:, 3] = 0.3  # neuron 3 is the best match for every input
    responses, _ = net.respond(np.full((4, 16), 0.8, np.float32))
    winners = responses.argmax(1)
    assert (winners == 3).all()
    others = np.delete(responses, 3, axis=1)
    assert responses[:, 3].min() > 3 * others.max(1).max()  # the others are nearly silent


def test_without_inhibition_the_neurons_fire_alike():
    spec = STDPSpec(n_inputs=16, n_neurons=6, presentation_ms=200, constants=_strong(w_inh_exc=0.0))
    net = STDPNetwork(spec, seed=1)
    net.weights[:] = 0.2
    net.weights[:, 3] = 0.3
    responses, _ = net.respond(np.full((4, 16), 0.8, np.float32))
    assert np.delete(responses, 3, axis=1).min() > 0  # inhibition, not the weights, silenced them above


def test_adaptive_threshold_rises_with_firing_and_decays():
    spec = STDPSpec(n_inputs=16, n_neurons=3, presentation_ms=100, constants=_strong())
    net = STDPNetwork(spec, seed=0)
    start = net.theta.copy()
    counts = net.learn(np.full((1, 16), 0.9, np.float32))
    rise = net.theta - start
    assert counts.exc_spikes > 0
    assert rise.max() > 0  # the neuron that fired raised its threshold
    assert rise.sum() <= 0.05 * counts.exc_spikes + 1e-4  # by at most theta_plus per spike
    silent = STDPSpec(model="spikedyn", n_inputs=16, n_neurons=3, presentation_ms=100, rest_ms=150)
    quiet = STDPNetwork(silent, seed=0)
    theta = quiet.theta.copy()
    quiet.learn(np.zeros((1, 16), np.float32))  # nothing fires: θ only decays, with τ_θ
    steps_ms = (silent.presentation_ms + silent.rest_ms) * (1 + silent.constants.max_repeats)
    expected = theta * math.exp(-steps_ms / silent.constants.tau_theta)
    assert np.allclose(quiet.theta, expected, rtol=1e-4)


def test_the_dominance_rule_raises_theta_faster_for_a_dominating_neuron():
    images = np.full((1, 16), 0.9, np.float32)
    from dataclasses import replace

    from fastslow.stdp import SpikeDynRules

    rises = {}
    for name, model, rules in (
        ("diehl-cook", "diehl-cook", SpikeDynRules()),
        ("off", "spikedyn", replace(SpikeDynRules(), adaptive_threshold=False)),
        ("dominance", "spikedyn", replace(SpikeDynRules(), committed_dominance=False)),
    ):
        spec = STDPSpec(model=model, n_inputs=16, n_neurons=3, presentation_ms=100, constants=_strong(), rules=rules)
        net = STDPNetwork(spec, seed=0)
        start = net.theta.copy()
        counts = net.learn(images)
        rises[name] = (net.theta - start).sum() / counts.exc_spikes
    assert rises["diehl-cook"] == pytest.approx(0.05, rel=0.05)  # theta_plus per spike (less the slow decay)
    assert rises["off"] == pytest.approx(0.05, rel=0.05)  # as Diehl & Cook
    assert rises["dominance"] > 1.2 * rises["diehl-cook"]  # × (1 + spikes so far / 5)


def test_committed_dominance_spares_a_fresh_neuron_and_pushes_a_committed_one():
    """With ``committed_dominance`` the dominance rise is × (1 − exp(−Δθ / theta_commit)): a neuron
    at an unfired neuron's θ rises θ_plus per spike as in Diehl & Cook; one 6 mV above it nearly
    the full (1 + spikes so far / 5)."""
    from dataclasses import replace

    from fastslow.stdp import SpikeDynRules

    images = np.full((1, 16), 0.9, np.float32)
    rules = replace(SpikeDynRules(), adaptive_rates=False)  # the default: the dominance rise for committed neurons

    def rise_per_spike(offset: float, rules) -> float:
        spec = STDPSpec(model="spikedyn", n_inputs=16, n_neurons=1, presentation_ms=100, constants=_strong(), rules=rules)
        net = STDPNetwork(spec, seed=0)
        net.theta += np.float32(offset)  # offset mV above an unfired neuron's θ
        start = net.theta.copy()
        counts = net.learn(images)
        assert counts.exc_spikes >= 5
        return float((net.theta - start).sum() / counts.exc_spikes)

    fresh, committed = rise_per_spike(0.0, rules), rise_per_spike(6.0, rules)
    plain = {offset: rise_per_spike(offset, replace(rules, committed_dominance=False)) for offset in (0.0, 6.0)}
    # A fresh neuron: θ_plus per spike but for the small commitment its own rise makes (< 1 mV here).
    assert 0.05 * 0.99 < fresh < 0.05 * 1.15 and fresh < plain[0.0] - 0.01
    assert committed == pytest.approx(plain[6.0], rel=0.03)  # × (1 − e⁻³) = 0.95 of the dominance rise
    assert committed > 1.15 * fresh


def test_adaptive_rate_counts_commitment_from_an_unfired_neurons_threshold():
    # rate_min 0.5, rate_max 2, theta_commit 2 mV: scale = 0.5 + 1.5·exp(−rise / 2).
    # An unfired neuron's θ has decayed to 17 mV; neurons 2 and 4 mV above it are committed.
    from fastslow.stdp import SpikeDynRules

    theta = np.array([17.0, 19.0, 21.0], np.float32)
    scale = potentiation_scale(uncommitted(theta, 17.0, SpikeDynRules()), SpikeDynRules())
    assert scale == pytest.approx([2.0, 0.5 + 1.5 / math.e, 0.5 + 1.5 / math.e**2], rel=1e-6)
    # Measured from θ_init (20 mV), the neuron at 19 mV would learn at the uncommitted rate 2.
    assert potentiation_scale(uncommitted(theta, 20.0, SpikeDynRules()), SpikeDynRules())[1] == pytest.approx(2.0)


def test_theta_rest_tracks_a_neuron_that_never_fires():
    spec = STDPSpec(model="spikedyn", n_inputs=16, n_neurons=3, presentation_ms=100, constants=_strong())
    net = STDPNetwork(spec, seed=0)
    net.weights[:, 2] = 0.0  # no input reaches neuron 2: it never fires, so its θ only decays
    counts = net.learn(np.full((5, 16), 0.9, np.float32))
    assert counts.exc_spikes > 0 and net.theta[:2].max() > net.theta[2]
    assert net.theta_rest[0] == net.theta[2]  # the same float32 decay steps, bit for bit
    assert net.theta_rest[0] < spec.constants.theta_init


def test_memory_estimate_matches_a_hand_count():
    # 784 × 100 weights at 8 bits = 78,400 B; 100 excitatory neurons × (7 float32 states + an int32
    # label) = 3,200 B; 100 inhibitory × 3 float32 = 1,200 B; 784 pre traces × 4 B = 3,136 B.
    assert memory_bytes(STDPSpec(n_inputs=784, n_neurons=100, bits=8)) == 78_400 + 3_200 + 1_200 + 3_136
    # SpikeDyn's direct inhibition has no inhibitory neurons to store.
    assert memory_bytes(STDPSpec(model="spikedyn", n_inputs=784, n_neurons=100, bits=8)) == 78_400 + 3_200 + 3_136


def test_spikedyn_simulates_fewer_neurons():
    images = np.full((2, 16), 0.8, np.float32)
    dc = STDPNetwork(STDPSpec(n_inputs=16, n_neurons=4, presentation_ms=50, constants=_strong()), seed=0).respond(images)[1]
    sd = STDPNetwork(
        STDPSpec(model="spikedyn", n_inputs=16, n_neurons=4, presentation_ms=50, constants=_strong()), seed=0
    ).respond(images)[1]
    assert sd.neuron_updates == dc.neuron_updates / 2


def test_membrane_holds_during_refractory_period():
    v = np.array([-60.0], np.float32)
    refractory = np.array([3.0], np.float32)
    fired = membrane_step(
        v,
        np.array([5.0], np.float32),
        np.zeros(1, np.float32),
        refractory,
        -52.0,
        v_rest=-65.0,
        v_reset=-65.0,
        tau=100.0,
        e_exc=0.0,
        e_inh=-100.0,
        refractory_ms=5.0,
        dt=0.5,
    )
    assert not fired.any() and v[0] == -60.0 and refractory[0] == 2.5


@pytest.mark.parametrize("bad", [dict(bits=5), dict(bits=0), dict(model="bindsnet"), dict(n_neurons=0), dict(dt_ms=0.0)])
def test_bad_specs_are_refused(bad):
    with pytest.raises(ConfigError):
        STDPSpec(**bad)


def test_empty_or_misshaped_inputs_are_refused():
    net = STDPNetwork(STDPSpec(n_inputs=4, n_neurons=2, presentation_ms=10), seed=0)
    with pytest.raises(ConfigError, match="empty"):
        net.learn(np.zeros((0, 4), np.float32))
    with pytest.raises(ConfigError, match="values each"):
        net.respond(np.zeros((3, 5), np.float32))
    with pytest.raises(ConfigError, match="in \\[0, 1\\]"):
        net.respond(np.full((3, 4), np.nan, np.float32))


def test_same_seed_same_network():
    images = np.random.default_rng(0).random((3, 16), dtype=np.float32)
    nets = [
        STDPNetwork(STDPSpec(model="spikedyn", n_inputs=16, n_neurons=4, presentation_ms=50, constants=_strong()), seed=7)
        for _ in range(2)
    ]
    for net in nets:
        net.learn(images)
    assert np.array_equal(nets[0].weights, nets[1].weights) and np.array_equal(nets[0].theta, nets[1].theta)


def _strong(**changes):
    """Reference constants with a drive strong enough for 16-input toy networks."""
    from dataclasses import replace

    from fastslow.stdp import DiehlCookConstants

    return replace(DiehlCookConstants(), **({"column_sum": 6.0} | changes))


def test_assign_labels_refuses_labels_it_cannot_use():
    net = STDPNetwork(STDPSpec(n_inputs=4, n_neurons=3))
    responses = np.array([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]])
    assert list(net.assign_labels(responses, np.array([0, 1]), n_classes=2)) == [0, 1, 0]
    for labels, named in (
        (np.array([0, 2]), r"0\.\.1"),
        (np.array([-1, 0]), r"0\.\.1"),
        (np.array([0]), "2 integers"),
        (np.array([0.0, 1.0]), "integers"),
    ):
        with pytest.raises(ValueError, match=named):
            net.assign_labels(responses, labels, n_classes=2)
    with pytest.raises(ValueError, match=r"\[S, 3\]"):
        net.assign_labels(responses[:, :2], np.array([0, 1]), n_classes=2)
