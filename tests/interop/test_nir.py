"""System 1 as a NIR graph: read back by snnTorch's ``import_from_nir`` and by nirtorch, it gives
System 1's own spikes, layer by layer, and its answers, bit for bit; ``fastslow export`` refuses a
subtract reset and measures what exporting it with reset to zero costs."""

import json
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

nir = pytest.importorskip("nir", reason="nir is the nir extra: pip install -e '.[nir]'")
pytest.importorskip("nirtorch", reason="nirtorch is the nir extra: pip install -e '.[nir]'")
snn = pytest.importorskip("snntorch", reason="snntorch is a test-only extra: pip install -e '.[test]'")
from snntorch.import_nir import import_from_nir  # noqa: E402

import fastslow.systems.system1 as system1_module  # noqa: E402
from fastslow.cli import main  # noqa: E402
from fastslow.data.datasets import load_dataset  # noqa: E402
from fastslow.errors import ConfigError  # noqa: E402
from fastslow.interop.nir import DT, POOL_THRESHOLD, lif_constants, nir_to_torch, system1_to_nir  # noqa: E402
from fastslow.spiking import LIFParams, encode_step  # noqa: E402
from fastslow.systems.system1 import SPIKE_COUNT_SCALE, System1, System1Spec  # noqa: E402
from fastslow.systems.training import system1_loss, train_classifier  # noqa: E402

STEPS = 4  # a power of 2: fastslow's mean of the readout over t steps is then the integrator's v / t exactly at the end
# Not fastslow's defaults, so that a reader that assumes them (β = 0.9, threshold 1) shows.
LIF = LIFParams(beta=0.85, threshold=0.75, reset="zero")


def _dyadic(model: torch.nn.Module) -> None:
    """Round every weight and bias to a multiple of 2⁻⁸: every sum of them, and of them times the
    digits' pixels (multiples of 1/16), is then exact in float32 in any order, so a reader's dense
    matmul and fastslow's event-driven sums give the same bits, and only the semantics can differ."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.round(p * 256) / 256)


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits", seed=0, test_fraction=0.2)
    as_x = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    return as_x(data.x_train), torch.as_tensor(data.y_train), as_x(data.x_test), torch.as_tensor(data.y_test)


@pytest.fixture(scope="module", params=["mlp", "conv"])
def fitted(request, digits):
    """A System 1 fitted tiny on digits (direct encoding, reset to zero), its weights on a dyadic grid."""
    x, y, x_test, y_test = digits
    torch.manual_seed(0)
    spec = System1Spec(
        input_shape=(1, 8, 8),
        n_classes=10,
        arch=request.param,
        hidden=(32, 16) if request.param == "mlp" else (16,),
        conv_channels=(4, 8),
        timesteps=STEPS,
        encoding="direct",
        lif=LIF,
        exit_heads=(0,),
    )
    system1 = System1(spec)
    epochs = 2 if request.param == "mlp" else 4
    train_classifier(system1, x, y, lambda m, a, b: system1_loss(m, a, b, "tet"), epochs=epochs, lr=2e-2, batch_size=64, seed=0)
    _dyadic(system1)
    system1.eval()
    with torch.no_grad():
        record = system1.run(x_test)
    accuracy = float((record.final_logits.argmax(1) == y_test).float().mean())
    assert accuracy > 0.4, f"the fixture's System 1 did not learn ({accuracy:.2f}): the round trip would prove little"
    return system1, x_test, record


def _fastslow_spikes(system1: System1, x: torch.Tensor, monkeypatch) -> list[torch.Tensor]:
    """Each layer's spikes [T, B, ...] (channels first) as System 1 makes them, on its torch backend
    (a pooled layer: its pooled spikes), caught where System 1 calls its LIF kernels."""
    caught = []
    for name in ("fused_lif_multistep", "fused_lif_multistep_pooled"):
        real = getattr(system1_module, name)

        def catch(*args, real=real, **kwargs):
            out = real(*args, **kwargs)
            caught.append(out[0].movedim(-1, 2) if out[0].dim() == 5 else out[0])  # conv maps are channels-last
            return out

        monkeypatch.setattr(system1_module, name, catch)
    system1.requested_backend = "torch"  # the compiled MLP kernel runs the whole net in one call
    try:
        with torch.no_grad():
            system1.run(x)
    finally:
        system1.requested_backend = system1.spec.backend
        monkeypatch.undo()
    assert len(caught) == len(system1.layers)  # one chunk: one call per layer
    return [spikes.clone() for spikes in caught]


def _neuron_names(system1: System1) -> list[str]:
    """The NIR node whose spikes equal each layer's output in System 1 (a pooled layer: its gate)."""
    return [f"layer{i}_pool_gate" if layer.pool else f"layer{i}_lif" for i, layer in enumerate(system1.layers)]


def _run_nirtorch(graph, x: torch.Tensor, steps: int) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict]:
    """The graph read by nirtorch (fastslow's node map), run ``steps`` steps on the batch ``x``:
    (outputs [T, B, C], spikes of every LIF node [T, B, ...], the state after the last step)."""
    module = nir_to_torch(graph)
    spikes: dict[str, list[torch.Tensor]] = {}
    for name, node in graph.nodes.items():
        if isinstance(node, nir.LIF):
            spikes[name] = []
            module.get_submodule(name).register_forward_hook(lambda m, i, out, name=name: spikes[name].append(out[0]))
    outputs, state = [], None
    with torch.no_grad():
        for _ in range(steps):
            out, state = module(x, state)
            outputs.append(out)
    return torch.stack(outputs), {name: torch.stack(values) for name, values in spikes.items()}, state


def _run_snntorch(graph, x: torch.Tensor, steps: int) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict]:
    """The graph read by snnTorch's ``import_from_nir``, run ``steps`` steps on each input of ``x``
    alone (NIR's shapes exclude the batch: its Flatten(0, -1) would flatten a batch too), membranes
    reset between inputs: (outputs [T, B, C], spikes of every LIF node [T, B, ...], each LIF node's
    membrane after the last step [B, ...])."""
    net = import_from_nir(graph)
    leaky = {name: m for name, m in net.named_children() if isinstance(m, snn.Leaky)}
    assert set(leaky) == {name for name, node in graph.nodes.items() if isinstance(node, nir.LIF)}
    caught: dict[str, list[torch.Tensor]] = {name: [] for name in leaky}
    for name, module in leaky.items():
        module.register_forward_hook(lambda m, i, out, name=name: caught[name].append(out))
    outputs, membranes = [], {name: [] for name in leaky}
    with torch.no_grad():
        for sample in x:
            for module in leaky.values():
                module.reset_mem()
            state = None
            for _ in range(steps):
                out, state = net(sample, state)
                outputs.append(out)
            for name, module in leaky.items():
                membranes[name].append(module.mem.clone())
    per_input = lambda values: torch.stack(values).unflatten(0, (len(x), steps)).transpose(0, 1)  # noqa: E731
    return (
        per_input(outputs),
        {name: per_input(values) for name, values in caught.items()},
        {name: torch.stack(values) for name, values in membranes.items()},
    )


def _final_potentials(system1: System1, x: torch.Tensor) -> list[torch.Tensor]:
    """Each layer's membrane potentials after T steps [B, ...] (channels first), as System 1 keeps them."""
    with torch.no_grad():
        _, state = system1.advance(None, None, system1.input_current(system1.prepare(x)), system1.spec.timesteps)
    return list(state.layers)


def _check_spikes(
    system1, record, reference: list[torch.Tensor], spikes: dict[str, torch.Tensor], potentials: dict[str, torch.Tensor], x
) -> None:
    """Per layer the reader's spikes equal System 1's, neuron by neuron (a pooled layer: its pooled
    spikes, and its unpooled spike count per input and step against System 1's firing rates), and
    so do its membrane potentials after the last step (which a τ off by an ulp of β would change)."""
    for index, v in enumerate(_final_potentials(system1, x)):
        assert torch.equal(potentials[f"layer{index}_lif"], v), f"layer{index}_lif: potentials differ"
    for index, (layer, name) in enumerate(zip(system1.layers, _neuron_names(system1))):
        assert torch.equal(spikes[name], reference[index]), f"{name}: spikes differ"
        assert 0 < reference[index].sum() < reference[index].numel(), f"{name}: no spikes to compare"
        counts = spikes[f"layer{index}_lif"].flatten(2).sum(2)
        assert torch.equal(counts, torch.round(record.spike_rates[index] * layer.neurons)), f"layer{index}_lif: counts differ"


def test_nirtorch_reads_the_graph_as_system1_runs_bit_for_bit(fitted, monkeypatch, tmp_path):
    system1, x, record = fitted
    nir.write(tmp_path / "system1.nir", system1_to_nir(system1))
    graph = nir.read(tmp_path / "system1.nir")  # through the file, as a user reads it
    outputs, spikes, state = _run_nirtorch(graph, x, STEPS)
    _check_spikes(system1, record, _fastslow_spikes(system1, x, monkeypatch), spikes, state, x)
    # The integrator's v after t steps is the sum of the readout's currents: fastslow's logits × t.
    steps = torch.arange(1, STEPS + 1, dtype=torch.float32).view(-1, 1, 1)
    assert torch.equal(outputs / steps, record.logits[:, -1])
    assert torch.equal(outputs[-1].argmax(1), record.final_logits.argmax(1))


def test_snntorch_import_from_nir_reads_the_graph_as_system1_runs_bit_for_bit(fitted, monkeypatch):
    system1, x, record = fitted
    x, record = x[:120], record.rows(torch.arange(120))  # one input at a time: a part of the split suffices
    outputs, spikes, potentials = _run_snntorch(system1_to_nir(system1, integrator=False), x, STEPS)
    _check_spikes(system1, record, _fastslow_spikes(system1, x, monkeypatch), spikes, potentials, x)
    assert torch.equal(outputs, record.step_outputs[:, -1])  # the readout's current, step by step
    assert torch.equal(outputs.sum(0).argmax(1), record.final_logits.argmax(1))


def test_graph_nodes_and_metadata(fitted):
    system1, _, _ = fitted
    graph = system1_to_nir(system1)
    kinds = [type(node).__name__ for node in graph.nodes.values()]
    if system1.spec.arch == "mlp":
        assert kinds == ["Input", "Flatten", "Affine", "LIF", "Affine", "LIF", "Affine", "I", "Output"]
    else:
        pooled = ["Conv2d", "LIF", "AvgPool2d", "LIF"]
        assert kinds == ["Input", *pooled, *pooled, "Flatten", "Affine", "LIF", "Affine", "I", "Output"]
        assert graph.nodes["layer2_flatten"].start_dim == 0  # dims exclude the batch
    lif = graph.nodes["layer0_lif"]
    beta = 1.0 - DT / lif.tau  # how snnTorch's importer reads β back
    assert np.all(beta.astype(np.float32) == np.float32(LIF.beta))
    assert np.allclose(lif.r * DT / lif.tau, 1.0) and np.all(lif.v_leak == 0) and np.all(lif.v_reset == 0)
    assert np.all(lif.v_threshold == LIF.threshold)
    assert graph.metadata["dt"] == DT and "tau = dt/(1 - beta)" in graph.metadata["time_convention"]
    assert graph.metadata["timesteps"] == STEPS and graph.metadata["reset"] == "zero"


def test_every_beta_reads_back_exactly():
    """τ = DT/(1−β) in float64 gives β back as 1 − DT/τ, rounded to float32, for any β a config may hold."""
    betas = np.concatenate([np.linspace(0.001, 0.999, 4001), np.exp(-1.0 / np.linspace(0.5, 200, 2000))])
    for beta in betas:
        tau = lif_constants(float(beta), 1.0, (1,))["tau"]
        assert np.float32(1.0 - DT / tau[0]) == np.float32(beta), beta


def test_the_pool_gate_is_the_max_pool_of_binary_spikes():
    """AvgPool2d(2) then the memoryless LIF (τ = dt, threshold 1/8), as the graph holds them and as
    both readers run them, equals max_pool2d on every 2×2 pattern of spikes, step after step (no memory)."""
    system1 = System1(System1Spec(input_shape=(1, 8, 8), n_classes=10, arch="conv", conv_channels=(4,), hidden=(), lif=LIF))
    graph = system1_to_nir(system1)
    assert graph.nodes["layer0_pool_gate"].v_threshold.flat[0] == POOL_THRESHOLD
    gate = nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type=np.array([4, 8, 8])),
            "pool": graph.nodes["layer0_pool"],
            "gate": graph.nodes["layer0_pool_gate"],
            "output": nir.Output(output_type=np.array([4, 4, 4])),
        },
        edges=[("input", "pool"), ("pool", "gate"), ("gate", "output")],
    )
    steps = 6
    generator = torch.Generator().manual_seed(0)
    spikes = (
        torch.rand(steps, 5, 4, 8, 8, generator=generator) < torch.tensor([0.05, 0.2, 0.5, 0.8, 0.95]).view(1, 5, 1, 1, 1)
    ).float()
    # Step 0, input 0, channel 0: its 16 windows hold the 16 patterns of a 2×2 window.
    patterns = torch.tensor([[(k >> b) & 1 for b in range(4)] for k in range(16)], dtype=torch.float32).view(4, 4, 2, 2)
    spikes[0, 0, 0] = patterns.permute(0, 2, 1, 3).reshape(8, 8)
    expected = F.max_pool2d(spikes.flatten(0, 1), 2).unflatten(0, (steps, 5))
    module = nir_to_torch(gate)
    state, outs = None, []
    with torch.no_grad():
        for t in range(steps):
            out, state = module(spikes[t], state)
            outs.append(out)
    assert torch.equal(torch.stack(outs), expected)
    net = import_from_nir(gate)
    with torch.no_grad():
        for b in range(5):
            for module in net.modules():
                if isinstance(module, snn.Leaky):
                    module.reset_mem()
            state = None
            for t in range(steps):
                out, state = net(spikes[t, b], state)
                assert torch.equal(out, expected[t, b])


def test_spike_count_readout_ends_in_a_lif():
    """A spike-count readout is a LIF: its output spikes are System 1's (its logits are counts × scale)."""
    torch.manual_seed(1)
    spec = System1Spec(
        input_shape=(20,), n_classes=5, hidden=(24,), timesteps=6, encoding="direct", readout="spike_count", lif=LIF
    )
    system1 = System1(spec).eval()
    with torch.no_grad():
        for p in system1.parameters():
            p.mul_(4.0)  # enough current that the readout fires
    _dyadic(system1)
    x = torch.randint(0, 17, (64, 20)).float() / 16
    with torch.no_grad():
        record = system1.run(x)
    graph = system1_to_nir(system1)
    assert type(graph.nodes["readout_lif"]).__name__ == "LIF" and "readout_integrator" not in graph.nodes
    outputs, _, _ = _run_nirtorch(graph, x, 6)
    assert 0 < outputs.sum() < outputs.numel()
    assert torch.equal(outputs * SPIKE_COUNT_SCALE, record.step_outputs[:, -1])


def test_a_system1_nir_cannot_express_is_refused():
    subtract = System1(System1Spec(input_shape=(4,), n_classes=2, hidden=(3,), lif=LIFParams(reset="subtract")))
    with pytest.raises(ConfigError, match='reset = "zero"'):
        system1_to_nir(subtract)
    assert type(system1_to_nir(subtract, reset_to_zero=True).nodes["layer0_lif"]).__name__ == "LIF"
    no_leak = System1(System1Spec(input_shape=(4,), n_classes=2, hidden=(3,), lif=LIFParams(beta=1.0, reset="zero")))
    with pytest.raises(ConfigError, match="beta"):
        system1_to_nir(no_leak)


# --------------------------------------------------------------------------- the command


def test_export_refuses_a_subtract_reset(fitted_folder, tmp_path, capsys):
    out = tmp_path / "system1.nir"
    assert main(["export", str(fitted_folder), "--format", "nir", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    assert 'reset = "zero"' in err and "--reset-to-zero" in err
    assert not out.exists()


def test_export_refuses_bad_options(fitted_folder, tmp_path, capsys):
    assert main(["export", str(fitted_folder), "--format", "nir", "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert main(["export", str(fitted_folder), "--format", "onnx", "--out", str(tmp_path / "s2.onnx"), "--reset-to-zero"]) == 2
    assert "--format nir" in capsys.readouterr().err


def test_export_with_reset_to_zero_prints_the_accuracy_change(fitted_folder, tmp_path, capsys):
    """The accuracy before is the fit's own System 1 accuracy; the one after is what the written
    graph, read back by nirtorch, scores on the same encoded test split."""
    from fastslow.pipeline import TEST_SEED_OFFSET, load_fit

    out = tmp_path / "system1.nir"
    assert main(["export", str(fitted_folder), "--format", "nir", "--out", str(out), "--reset-to-zero"]) == 0
    printed = capsys.readouterr().out
    assert "Input, Flatten, Affine, LIF" in printed and "dt = 0.0001 s" in printed
    change = re.search(r"\((\d+) inputs\) ([\d.]+)% -> ([\d.]+)% \(([-+][\d.]+) points\)", printed)
    assert change, printed
    inputs, before, after, points = int(change[1]), float(change[2]), float(change[3]), float(change[4])
    results = json.loads((fitted_folder / "results.json").read_text())
    system1_accuracy = next(s["accuracy"] for s in results["strategies"] if s["name"] == "system1")
    assert before == round(100 * system1_accuracy, 2) and inputs == results["split"]["test"]
    assert points == pytest.approx(after - before, abs=0.011)

    graph = nir.read(out)
    assert graph.metadata["dt"] == DT and graph.metadata["reset"].startswith("zero (System 1 was trained with reset = subtract")
    loaded = load_fit(fitted_folder)
    config, x, y = loaded.config, loaded.splits.x_test, loaded.splits.y_test
    spec = loaded.system1.spec
    module = nir_to_torch(graph)
    generator = torch.Generator().manual_seed(config.seed + TEST_SEED_OFFSET)
    correct = 0
    with torch.no_grad():
        for start in range(0, len(x), config.eval_batch_size):
            batch = x[start : start + config.eval_batch_size]
            state = None
            for t in range(spec.timesteps):  # the encoder's draws in System 1's order: step by step over the batch
                out, state = module(encode_step(batch, t, spec.timesteps, spec.encoding, generator), state)
            correct += int((out.argmax(1) == y[start : start + config.eval_batch_size]).sum())
    # The weights are not dyadic here: the readers' sums may round differently from System 1's by an
    # ulp, which could flip a near-tie; allow one input.
    assert math.isclose(100 * correct / len(y), after, abs_tol=100 / len(y) + 0.005)
