"""System 1: step-by-step records, exits, architectures, training signal."""

import pytest
import torch

from fastslow.spiking import LIFParams, lif_init, lif_step
from fastslow.systems import System1, System1Spec
from fastslow.systems.training import system1_loss, train_classifier


def test_run_records_every_step_and_exit():
    spec = System1Spec(input_shape=(1, 8, 8), n_classes=10, hidden=(32, 16), timesteps=5, exit_heads=(0,))
    model = System1(spec)
    run = model.run(torch.rand(7, 1, 8, 8))
    assert run.logits.shape == (5, 2, 7, 10)
    assert run.synaptic_ops.shape == (model.n_components, 5, 7)
    assert run.spike_rates.shape == (2, 5, 7)
    # The answer at t is the mean of the per-step outputs up to t.
    assert torch.allclose(run.logits[2], run.step_outputs[:3].mean(0), atol=1e-6)


def test_direct_encoding_matches_a_plain_step_loop():
    torch.manual_seed(0)
    spec = System1Spec(
        input_shape=(6,), n_classes=3, hidden=(5,), timesteps=4, encoding="direct", lif=LIFParams(beta=0.8, threshold=0.5)
    )
    model = System1(spec)
    x = torch.rand(2, 6)
    run = model.run(x)
    state = lif_init(torch.zeros(2, 5))
    total = torch.zeros(2, 3)
    for t in range(4):
        spikes, state = lif_step(model.layers[0].op(x), state, spec.lif)
        total = total + model.heads[0](spikes)
        assert torch.allclose(run.logits[t, 0], total / (t + 1), atol=1e-6)


def test_conv_network_matches_a_plain_nchw_step_loop():
    """Conv layers run channels-last (heads read their spikes with reordered weight columns): every
    exit's answers and the synaptic ops are a plain NCHW loop's, with fan-out counted per input
    spike; exits on both conv layers and on a hidden linear layer after them."""
    torch.manual_seed(0)
    spec = System1Spec(
        input_shape=(1, 10, 10),
        n_classes=3,
        arch="conv",
        conv_channels=(4, 6),
        hidden=(5,),
        timesteps=3,
        encoding="direct",
        exit_heads=(0, 1),
        lif=LIFParams(beta=0.9, threshold=0.3),
    )
    model = System1(spec).eval()
    x = torch.rand(2, 1, 10, 10)
    pool = torch.nn.functional.max_pool2d
    with torch.no_grad():
        run = model.run(x)
        stepwise = model.run(x, mode="stepwise")
        # The same spikes; a conv-fed head's membrane readout is one BLAS product over all steps in
        # multistep mode, whose rounding may differ by shape in the last bit (see the README).
        assert torch.equal(run.spike_rates, stepwise.spike_rates) and torch.equal(run.synaptic_ops, stepwise.synaptic_ops)
        torch.testing.assert_close(run.logits, stepwise.logits, rtol=1e-6, atol=1e-7)
        conv0, conv1, hidden = (layer.op for layer in model.layers)
        v0, v1, v2 = lif_init(torch.zeros(2, 4, 10, 10)), lif_init(torch.zeros(2, 6, 5, 5)), lif_init(torch.zeros(2, 5))
        totals, layer1_ops = torch.zeros(3, 2, 3), []
        fanout = torch.nn.functional.conv_transpose2d(torch.ones(1, 1, 5, 5), torch.ones(1, 1, 3, 3), padding=1)[0, 0] * 6
        for t in range(3):
            spikes0, v0 = lif_step(conv0(x), v0, spec.lif)
            pooled0 = pool(spikes0, 2)
            layer1_ops.append((pooled0 * fanout).sum((1, 2, 3)))
            spikes1, v1 = lif_step(conv1(pooled0), v1, spec.lif)
            pooled1 = pool(spikes1, 2).flatten(1)
            spikes2, v2 = lif_step(hidden(pooled1), v2, spec.lif)
            totals = totals + torch.stack([model.heads[0](pooled0.flatten(1)), model.heads[1](pooled1), model.heads[2](spikes2)])
            torch.testing.assert_close(run.logits[t], totals / (t + 1), rtol=1e-5, atol=1e-5)
    assert torch.equal(run.synaptic_ops[1], torch.stack(layer1_ops))


def test_conv_system1_runs_on_images():
    spec = System1Spec(input_shape=(1, 12, 12), n_classes=4, arch="conv", conv_channels=(4, 8), hidden=(16,), timesteps=2)
    model = System1(spec)
    run = model.run(torch.rand(3, 1, 12, 12))
    assert run.final_logits.shape == (3, 4)
    assert run.synaptic_ops.shape[0] == 3 + 1  # two conv + one fc layer, one exit


def test_wrong_input_shape_is_a_clear_error():
    model = System1(System1Spec(input_shape=(4,), n_classes=2))
    with pytest.raises(ValueError, match="expects inputs of shape"):
        model.run(torch.rand(3, 5))


@pytest.mark.parametrize("readout", ["membrane", "spike_count"])
@pytest.mark.parametrize("loss", ["tet", "cumulative", "final"])
def test_every_parameter_gets_a_gradient(readout, loss):
    torch.manual_seed(0)
    spec = System1Spec(
        input_shape=(8,),
        n_classes=3,
        hidden=(16,),
        timesteps=3,
        readout=readout,
        exit_heads=(),
        encoding="direct",
        lif=LIFParams(threshold=0.3),
    )
    model = System1(spec)
    system1_loss(model, torch.rand(16, 8), torch.randint(0, 3, (16,)), loss).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_training_learns_a_separable_problem():
    torch.manual_seed(0)
    x = torch.rand(256, 10)
    y = (x[:, 0] > x[:, 1]).long()
    model = System1(System1Spec(input_shape=(10,), n_classes=2, hidden=(32,), timesteps=4, encoding="direct"))
    history = train_classifier(model, x, y, system1_loss, epochs=15, lr=1e-2, batch_size=32, seed=0)
    assert history[-1] < history[0]
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean()
    assert accuracy > 0.85


def test_exit_heads_must_be_hidden_layers_in_order():
    with pytest.raises(ValueError, match="exit_heads"):
        System1(System1Spec(input_shape=(4,), n_classes=2, hidden=(3, 3), exit_heads=(1,)))


@pytest.mark.parametrize(
    "change, named",
    [
        ({"n_classes": 0}, "n_classes"),
        ({"hidden": (0,)}, "hidden"),
        ({"input_shape": ()}, "input_shape"),
        ({"conv_channels": (8, -1)}, "conv_channels"),
        ({"timesteps": 0}, "timesteps"),
        ({"arch": "rnn"}, "arch"),
        ({"encoding": "poisson"}, "encoding"),
        ({"readout": "foo"}, "readout"),
        ({"event_density": 1.5}, "event_density"),
        ({"checkpoint_steps": -1}, "checkpoint_steps"),
        ({"lif": LIFParams(beta=2.0, threshold=-1.0)}, "beta"),
    ],
)
def test_an_impossible_spec_is_refused_when_built_naming_the_field(change, named):
    with pytest.raises(ValueError, match=named):
        System1Spec(**{"input_shape": (64,), "n_classes": 10, **change})


def test_exit_heads_out_of_range_says_which_indices_are_allowed():
    with pytest.raises(ValueError, match=r"from 0 to 0 \(layer 1, the last, always has the final exit\), got \[5\]"):
        System1(System1Spec(input_shape=(64,), n_classes=10, hidden=(16, 8), exit_heads=(5,)))


def test_run_refuses_inputs_it_cannot_read_before_any_arithmetic():
    model = System1(System1Spec(input_shape=(6,), n_classes=3, hidden=(8,), timesteps=2))
    x = torch.rand(4, 6)
    for bad, named in ((x.double(), "torch.float32 inputs"), ((x * 255).to(torch.uint8), "/ 255"), (x.numpy(), "torch.Tensor")):
        with pytest.raises(TypeError, match=named):
            model.run(bad)
    for mode in ("multistep", "stepwise"):
        with pytest.raises(ValueError, match="timesteps must be at least 1"):
            model.run(x, timesteps=0, mode=mode)


def test_exit_heads_are_checked_when_built_and_explained_for_one_layer():
    for heads in ((-1,), (0.0,)):
        with pytest.raises(ValueError, match="exit_heads must be hidden-layer indices"):
            System1Spec(input_shape=(64,), n_classes=10, hidden=(16, 8), exit_heads=heads)
    with pytest.raises(ValueError, match="none: its only layer has the final exit"):
        System1(System1Spec(input_shape=(64,), n_classes=10, hidden=(16,), exit_heads=(0,)))


def test_an_empty_batch_runs_to_empty_records():
    model = System1(System1Spec(input_shape=(12,), n_classes=3, hidden=(5,), timesteps=4)).eval()
    with torch.no_grad():
        assert model.run(torch.rand(0, 12)).logits.shape == (4, 1, 0, 3)


def test_float64_models_and_autocast_runs_keep_exact_records():
    """A float64 System 1 runs (its records in float64, the same in both modes), and under bfloat16
    autocast the records stay float32 (spike counts and operation totals exact)."""
    torch.manual_seed(0)
    for spec in (
        System1Spec(input_shape=(20,), n_classes=3, hidden=(8, 6), exit_heads=(0,), timesteps=3, encoding="direct"),
        System1Spec(input_shape=(1, 8, 8), n_classes=3, arch="conv", conv_channels=(3, 4), hidden=(5,), timesteps=3),
    ):
        model = System1(spec).double()
        x = torch.rand(2, *spec.input_shape, dtype=torch.float64)
        run = model.run(x, generator=torch.Generator().manual_seed(1))
        stepwise = model.run(x, mode="stepwise", generator=torch.Generator().manual_seed(1))
        assert run.synaptic_ops.dtype == run.spike_rates.dtype == torch.float64
        assert torch.equal(run.synaptic_ops, stepwise.synaptic_ops) and torch.equal(run.spike_rates, stepwise.spike_rates)
        model.float()
        with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
            cast = model.run(x.float(), generator=torch.Generator().manual_seed(1))
        assert cast.synaptic_ops.dtype == cast.spike_rates.dtype == torch.float32
        assert torch.equal(cast.synaptic_ops, cast.synaptic_ops.round())  # whole numbers of operations
