"""Operation counts against hand counts; profiles; energy terms."""

import pytest
import torch
from torch import nn

from fastslow.energy import OpCounts, count_macs, load_profile, memory_bytes, s1_op_counts
from fastslow.errors import ProfileError
from fastslow.spiking import LIFParams
from fastslow.systems import System1, System1Spec


def _hand_built_mlp() -> System1:
    # 4 inputs → 3 hidden LIF → 2 outputs; weights chosen so the spikes are known.
    spec = System1Spec(
        input_shape=(4,),
        n_classes=2,
        arch="mlp",
        hidden=(3,),
        timesteps=3,
        encoding="rate",
        lif=LIFParams(beta=1.0, threshold=1.0),
    )
    model = System1(spec)
    with torch.no_grad():
        model.layers[0].op.weight.copy_(torch.tensor([[2.0, 0, 0, 0], [0, 2.0, 0, 0], [0.0, 0, 0, 0]]))
        model.layers[0].op.bias.zero_()
        model.heads[0].weight.fill_(0.1)
        model.heads[0].bias.zero_()
    return model


def test_synaptic_ops_match_hand_count():
    model = _hand_built_mlp()
    # Rate encoding with x ∈ {0, 1} is deterministic: inputs 0 and 1 spike every step.
    x = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    run = model.run(x)
    # Layer 0: input spikes × fan-out 3. Sample A: 2 spikes/step × 3 steps × 3 = 18; B: 1 × 3 × 3 = 9.
    # Hidden neurons 0 and 1 get current 2 > 1 → spike every step for A (2 spikes/step), B: 1.
    # Head: hidden spikes × fan-out 2 → A: 2 × 3 × 2 = 12; B: 1 × 3 × 2 = 6.
    syn, dense, neurons = s1_op_counts(
        run.synaptic_ops, run.dense_macs, run.neuron_updates, model.exit_layers, torch.tensor([3, 3]), torch.tensor([0, 0])
    )
    assert syn.tolist() == [18 + 12, 9 + 6]
    assert dense.tolist() == [0.0, 0.0]
    # 3 hidden + 2 output neurons updated per step.
    assert neurons.tolist() == [15.0, 15.0]
    # Stopping after 1 step charges one step only; never running charges nothing.
    syn1, _, neurons1 = s1_op_counts(
        run.synaptic_ops, run.dense_macs, run.neuron_updates, model.exit_layers, torch.tensor([1, 0]), torch.tensor([0, 0])
    )
    assert syn1.tolist() == [6 + 4, 0.0]
    assert neurons1.tolist() == [5.0, 0.0]


def test_direct_encoding_charges_dense_macs_per_step():
    spec = System1Spec(input_shape=(4,), n_classes=2, hidden=(3,), timesteps=5, encoding="direct")
    run = System1(spec).run(torch.rand(2, 4))
    _, dense, _ = s1_op_counts(
        run.synaptic_ops, run.dense_macs, run.neuron_updates, (0,), torch.tensor([5, 2]), torch.tensor([0, 0])
    )
    assert dense.tolist() == [4 * 3 * 5, 4 * 3 * 2]


def test_conv_fanout_counts_border_synapses():
    # One input spike in a corner of a 4×4 map through a 3×3, padding-1 conv with 2 output
    # channels reaches 2×2 output positions × 2 channels = 8 synapses; in the centre 9 × 2 = 18.
    spec = System1Spec(
        input_shape=(1, 4, 4), n_classes=2, arch="conv", conv_channels=(2,), hidden=(), timesteps=1, encoding="rate"
    )
    model = System1(spec)
    corner = torch.zeros(1, 1, 4, 4)
    corner[0, 0, 0, 0] = 1.0
    centre = torch.zeros(1, 1, 4, 4)
    centre[0, 0, 1, 2] = 1.0
    assert model.run(corner).synaptic_ops[0, 0, 0].item() == 8
    assert model.run(centre).synaptic_ops[0, 0, 0].item() == 18


def test_count_macs_matches_analytic_lenet():
    from fastslow.systems import System2Spec, build_system2

    lenet = build_system2(System2Spec((1, 28, 28), 10))
    macs = count_macs(lenet, (1, 28, 28))
    expected = 6 * 28 * 28 * 25 + 16 * 10 * 10 * 6 * 25 + 400 * 120 + 120 * 84 + 84 * 10
    assert sum(macs.values()) == expected
    assert expected == pytest.approx(416_520)


def test_energy_terms_use_profile_in_microjoules():
    counts = OpCounts(*(torch.tensor([1e6]) for _ in range(5)))
    terms = counts.energy_terms_uj(load_profile("cmos45nm"))
    assert terms["s1_synaptic"].item() == pytest.approx(0.9)
    assert terms["s2"].item() == pytest.approx(4.6)
    int8 = counts.energy_terms_uj(load_profile("cmos45nm_int8"))
    assert int8["s2"].item() == pytest.approx(0.23)


def test_every_shipped_profile_states_its_sources():
    from fastslow.energy import available_profiles

    names = available_profiles()
    assert {"cmos45nm", "cmos45nm_int8", "loihi", "truenorth"} <= set(names)
    for name in names:
        profile = load_profile(name)
        assert {"E_MAC_pJ", "E_AC_pJ", "E_NEURON_pJ"} <= set(profile.sources)


def test_user_profile_file_and_bad_profiles(tmp_path):
    good = tmp_path / "mine.toml"
    good.write_text('name = "mine"\nE_MAC_pJ = 1.0\nE_AC_pJ = 0.1\nE_NEURON_pJ = 0.5\nweight_bits = 16\nstate_bits = 16\n')
    assert load_profile(good).E_AC_pJ == 0.1
    with pytest.raises(ProfileError, match="unknown energy profile"):
        load_profile("nonexistent45nm")
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\nE_MAC_pJ = -1\n')
    with pytest.raises(ProfileError, match="malformed"):
        load_profile(bad)


def test_memory_footprint_uses_bit_widths():
    assert memory_bytes(1000, 100, load_profile("cmos45nm")) == 4400
    assert memory_bytes(1000, 100, load_profile("cmos45nm_int8")) == 1100


def test_count_macs_counts_custom_module():
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 3))
    assert sum(count_macs(model, (2, 4)).values()) == 8 * 5 + 5 * 3
