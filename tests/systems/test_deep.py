"""The deep System 1 (VGG- and ResNet-style) and the ResNet-18 System 2: shapes, operation counts
against hand counts, and a fit from a 3×32×32 .npz end to end (tiny widths, CPU)."""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from fastslow.config import System1Config, System2Config
from fastslow.energy import count_macs
from fastslow.systems import System1, System1Spec, System2Spec, build_system2
from fastslow.systems.deep import conv_fanout
from fastslow.systems.system2 import BasicBlock


def _spec(arch="resnet", shape=(3, 8, 8), **kw):
    base = dict(input_shape=shape, n_classes=5, arch=arch, stage_channels=(4, 8), stage_blocks=(1, 1), timesteps=3)
    return System1Spec(**{**base, **kw})


@pytest.mark.parametrize("arch, units", [("resnet", 5), ("vgg", 2)])
def test_shapes_exits_and_neurons(arch, units):
    torch.manual_seed(0)
    model = System1(_spec(arch, exit_heads=(0,)))
    assert len(model.layers) == units and model.n_exits == 2
    run = model.run(torch.rand(6, 3, 8, 8))
    assert run.logits.shape == (3, 2, 6, 5) and run.synaptic_ops.shape == (units + 2, 3, 6)
    assert run.spike_rates.shape == (units, 3, 6)
    if arch == "resnet":  # stem 2×8×8, stage 0 block (two units) 4×8×8, stage 1 block 8×4×4 each
        assert model.neurons_per_component() == [128, 256, 256, 128, 128, 5, 5]
        assert model.exit_layers == (2, 4)
    else:  # one unit per stage, each pooled: 4×8×8 → 4×4×4, 8×4×4 → 8×2×2
        assert model.neurons_per_component() == [256, 128, 5, 5]
        assert model.exit_layers == (0, 1)
    with pytest.raises(ValueError, match="stage indices"):
        System1(_spec(arch, exit_heads=(1,)))
    with pytest.raises(ValueError, match="checkpoint_steps"):
        _spec(arch, checkpoint_steps=2)


def _brute_fanout(conv: nn.Conv2d, height: int, width: int) -> torch.Tensor:
    """Synapses leaving each input position, by the definition: outputs whose window holds it."""
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    out_h, out_w = (height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1
    counts = torch.zeros(height, width)
    for oy in range(out_h):
        for ox in range(out_w):
            for dy in range(kh):
                for dx in range(kw):
                    y, x = oy * sh - ph + dy, ox * sw - pw + dx
                    if 0 <= y < height and 0 <= x < width:
                        counts[y, x] += 1
    return (counts * conv.out_channels).flatten()


@pytest.mark.parametrize("kernel, stride, padding, size", [(3, 1, 1, 5), (3, 2, 1, 8), (3, 2, 1, 7), (1, 2, 0, 8), (5, 1, 2, 6)])
def test_conv_fanout_is_the_definition(kernel, stride, padding, size):
    conv = nn.Conv2d(2, 3, kernel, stride=stride, padding=padding)
    assert torch.equal(conv_fanout(conv, (2, size, size)), _brute_fanout(conv, size, size))


def _constant_unit(unit, biases):
    """Make a unit's current its BN's bias, per channel (zero conv weights, eval-mode BN at rest)."""
    for branch in unit.branches:
        if hasattr(branch, "conv"):
            nn.init.zeros_(branch.conv.weight)
    unit.branches[0].bn.bias.data = torch.tensor(biases, dtype=torch.float32)


def test_residual_blocks_op_counts_by_hand():
    """A ResNet-style System 1 on 3×4×4 images, direct encoding, 2 steps: a stem (2 channels), two
    stage-0 blocks of 4 channels (the first widening through a 1×1 conv shortcut, the second with an
    identity shortcut), a stage-1 block of 8 (stride 2, 1×1 stride-2 conv shortcut). Weights are set
    so every spike is known: every neuron fires at every step, except in the identity block's first
    unit, where only channel 0 fires."""
    torch.manual_seed(0)
    spec = _spec(shape=(3, 4, 4), stage_blocks=(2, 1), timesteps=2, encoding="direct", exit_heads=(0,))
    model = System1(spec).eval()  # LIF: beta 0.9, threshold 1: a constant current of 2 fires every step
    units = list(model.layers)
    assert [u.out_shape for u in units] == [(2, 4, 4)] + [(4, 4, 4)] * 4 + [(8, 2, 2)] * 2
    for index, unit in enumerate(units):
        _constant_unit(unit, [2.0, -1.0, -1.0, -1.0] if index == 3 else [2.0] * unit.out_shape[0])
    classes, steps = 5, 2
    with torch.no_grad():
        run = model.run(torch.rand(3, 3, 4, 4))
    rates = torch.tensor([1.0, 1.0, 1.0, 0.25, 1.0, 1.0, 1.0])
    assert torch.equal(run.spike_rates, rates.view(7, 1, 1).expand(7, steps, 3))
    # A 3×3, padding-1 conv on a 4×4 map: an input row reaches 2, 3, 3, 2 output rows (10), so one
    # channel's 16 positions, all spiking, reach 10 × 10 = 100 output positions per output channel.
    # Stride 2 onto 2×2: rows reach 1, 2, 1, 1 (5) → 25; on a 2×2 map, stride 1: rows reach 2, 2 → 16.
    # A 1×1 conv reaches one output per position (stride 2: 4 of the 16 positions reach one).
    expected_per_step = [
        0,  # stem: fed by the image (dense)
        2 * 100 * 4,  # block 0, first conv: the stem's 2 channels
        4 * 100 * 4 + 2 * 16 * 4,  # block 0, second conv + 1×1 shortcut from the stem
        4 * 100 * 4,  # identity block, first conv
        1 * 100 * 4 + 4 * 16 * 1,  # identity block, second conv (1 channel fired) + identity: 1 per spike
        4 * 25 * 8,  # block 1, first conv, stride 2
        8 * 16 * 8 + 4 * 4 * 8,  # block 1, second conv on 2×2 + 1×1 stride-2 shortcut
        4 * 16 * classes,  # exit after stage 0: every spike of its last unit reaches every class
        8 * 4 * classes,  # final exit
    ]
    assert run.synaptic_ops[:, :, 0].tolist() == [[float(v)] * steps for v in expected_per_step]
    # The stem runs on real values: its MACs, zero-padding positions included, at every step.
    assert run.dense_macs[0, :, 0].tolist() == [2 * 16 * 3 * 9] * steps
    assert run.dense_macs[1:].sum() == 0
    assert run.neuron_updates.tolist() == [32, 64, 64, 64, 64, 32, 32, classes, classes]
    with torch.no_grad():
        stepwise = model.run(torch.rand(3, 3, 4, 4), mode="stepwise")
    assert torch.equal(stepwise.synaptic_ops, run.synaptic_ops)


def test_inference_multistep_equals_stepwise_and_rows():
    torch.manual_seed(0)
    model = System1(_spec("resnet", encoding="direct", exit_heads=(0,), timesteps=4)).eval()
    x = torch.rand(5, 3, 8, 8)
    with torch.no_grad():
        whole = model.run(x)
        stepwise = model.run(x, mode="stepwise")
        torch.testing.assert_close(whole.logits, stepwise.logits)
        assert torch.equal(whole.synaptic_ops, stepwise.synaptic_ops)
        # Advancing some inputs in place, step by step, gives their rows of the whole run.
        constant = model.input_current(x)
        state = model.init_state(5, x)
        rows = torch.tensor([1, 3])
        outputs = []
        for _ in range(4):
            record, state = model.advance(None, state, constant, 1, rows=rows)
            outputs.append(record.outputs[0])
        torch.testing.assert_close(torch.stack(outputs), whole.step_outputs[:, :, rows])


def test_training_batch_norm_through_time_and_gradients():
    """In training a unit's BN takes its statistics over all T·B maps: with momentum 1 its running
    mean is their mean; every parameter gets a gradient."""
    torch.manual_seed(0)
    model = System1(_spec("resnet", encoding="rate", timesteps=3))
    bn = model.layers[1].branches[0].bn
    bn.momentum = 1.0
    seen = []
    hook = model.layers[1].branches[0].conv.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    run = model.run(torch.rand(4, 3, 8, 8))
    hook.remove()
    (conv_out,) = seen
    assert conv_out.shape[0] == 3 * 4  # all steps of all inputs in one batch
    torch.testing.assert_close(bn.running_mean, conv_out.mean((0, 2, 3)))
    torch.nn.functional.cross_entropy(run.final_logits, torch.arange(4) % 5).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_resnet18_macs_and_residual_additions_by_hand():
    block = BasicBlock(4, 8, stride=2)
    macs = count_macs(block, (4, 8, 8))
    out = 8 * 4 * 4
    assert macs == {"body.0": out * 4 * 9, "body.3": out * 8 * 9, "shortcut.0": out * 4, "BasicBlock.add": out}
    model = build_system2(System2Spec((3, 32, 32), 10))
    # CIFAR ResNet-18: 0.56 G MACs (conv + fc), plus its residual additions.
    total = count_macs(model, (3, 32, 32))
    adds = sum(v for k, v in total.items() if k.endswith(".add"))
    assert adds == 2 * (64 * 32 * 32 + 128 * 16 * 16 + 256 * 8 * 8 + 512 * 4 * 4)
    assert math.isclose(sum(total.values()) - adds, 555_422_720, rel_tol=0.001)


def test_auto_arch_picks_the_deep_networks_for_32x32_colour_only():
    assert System1Config().resolved_arch((3, 32, 32)) == "resnet"
    assert System1Config().resolved_exit_heads((3, 32, 32)) == [0, 1]
    assert System1Config().resolved_arch((3, 16, 16)) == "conv"
    assert System1Config().resolved_arch((1, 32, 32)) == "conv"
    assert System1Config().resolved_arch((1, 8, 8)) == "mlp"
    assert System2Spec((3, 32, 32), 10).resolved_arch() == "resnet18"
    assert System2Spec((3, 28, 28), 10).resolved_arch() == "lenet5"
    assert System2Config().width == 64


def test_nir_refuses_a_resnet_in_one_line():
    pytest.importorskip("nir")
    from fastslow.errors import ConfigError
    from fastslow.interop.nir import system1_to_nir

    with pytest.raises(ConfigError, match="NIR export takes the mlp and conv"):
        system1_to_nir(System1(_spec()))


@pytest.mark.parametrize("arch", ["resnet", "vgg"])
def test_fit_from_a_32x32_colour_npz_end_to_end(tmp_path, arch):
    from fastslow.cli import main

    rng = np.random.default_rng(0)
    data = tmp_path / "tiny.npz"
    np.savez(data, X=rng.random((40, 3, 32, 32), dtype=np.float32), y=np.arange(40) % 2)
    config = tmp_path / "deep.toml"
    config.write_text(
        f"""policies = ["confidence"]
[system1]
arch = "{"auto" if arch == "resnet" else arch}"
stage_channels = [4, 8]
stage_blocks = [1, 1]
encoding = "direct"
timesteps = 2
epochs = 1
[system2]
width = 4
epochs = 1
[confidence]
thresholds = [0.6]
"""
    )
    out = tmp_path / "run"
    assert main(["fit", "--data", str(data), "--out", str(out), "--config", str(config), "--device", "cpu", "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    names = {s["name"] for s in results["strategies"]}
    assert {"system1", "system2"} <= names and len(names) > 2
    s1 = next(s for s in results["strategies"] if s["name"] == "system1")
    # (After one epoch BN's running statistics have barely moved, so the eval-mode network may be silent.)
    terms = s1["energy_terms_uj"]
    assert terms["s1_dense"] > 0 and terms["s1_neuron"] > 0 and terms["s1_synaptic"] >= 0
    # It reloads from its folder and evaluates again to the same numbers.
    assert main(["evaluate", str(out), "--quiet"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert next(s for s in again["strategies"] if s["name"] == "system1")["energy_uj"] == pytest.approx(s1["energy_uj"])


def check_deep_matches_torch_path(device: str) -> None:
    """The fused Triton kernels run a ResNet-style System 1 as the torch backend does: the same
    records at inference (bit for bit) and in training, gradients up to rounding."""
    torch.manual_seed(0)
    fused = System1(_spec("resnet", encoding="rate", exit_heads=(0,)), backend="triton").to(device)
    reference = System1(fused.spec, backend="torch").to(device)
    reference.load_state_dict(fused.state_dict())
    x = torch.rand(3, 3, 8, 8, device=device)
    fields = ("step_outputs", "synaptic_ops", "dense_macs", "spike_rates")
    grads, runs = [], []
    for model in (fused, reference):
        run = model.run(x, generator=torch.Generator(device).manual_seed(1))
        torch.nn.functional.cross_entropy(run.final_logits, torch.arange(3, device=device)).backward()
        grads.append([p.grad for p in model.parameters()])
        runs.append(run)
    for name in fields:
        assert torch.equal(getattr(runs[0], name), getattr(runs[1], name)), name
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    for model in (fused, reference):
        model.eval()
    with torch.no_grad():
        a = fused.run(x, generator=torch.Generator(device).manual_seed(2))
        b = reference.run(x, generator=torch.Generator(device).manual_seed(2))
    assert all(torch.equal(getattr(a, name), getattr(b, name)) for name in fields)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_deep_triton_matches_torch_on_gpu():
    check_deep_matches_torch_path("cuda")


def test_deep_triton_matches_torch_in_triton_interpreter(in_triton_interpreter):
    in_triton_interpreter(__file__, "check_deep_matches_torch_path('cpu')")


def test_system2_spec_records_the_resolved_arch_and_old_auto_specs_keep_lenet5():
    """A spec written before ResNet-18 existed said "auto" for 3×32×32 data and meant LeNet-5."""
    old = {"input_shape": [3, 32, 32], "n_classes": 10, "arch": "auto", "hidden": 128, "frames": False}
    assert System2Spec.from_dict(old).resolved_arch() == "lenet5"
    new = System2Spec((3, 32, 32), 10).to_dict()
    assert System2Spec.from_dict(new).resolved_arch() == "resnet18"


def test_a_system2_arch_the_data_cannot_take_is_one_config_error(tmp_path):
    from fastslow import load_config
    from fastslow.errors import ConfigError
    from fastslow.pipeline import fit

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "flat.npz", X=rng.random((40, 6), dtype=np.float32), y=np.arange(40) % 2)
    config = load_config(None, data=str(tmp_path / "flat.npz"), epochs=1, system2={"arch": "resnet18"})
    with pytest.raises(ConfigError, match=r"config \[system2\].*resnet18"):
        fit(config, tmp_path / "out", progress=False, show_table=False)
    assert not (tmp_path / "out").exists()
