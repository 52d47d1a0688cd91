"""The multi-step simulation gives exactly the stepwise one: spikes, records and gradients."""

import pytest
import torch

from fastslow.spiking import LIFParams, lif_init, lif_step
from fastslow.spiking.backends import fused_lif_multistep, fused_lif_multistep_pooled, select_backend
from fastslow.spiking.lif import lif_multistep
from fastslow.systems import System1, System1Spec


def _needs_compiled_kernels():
    """Skip where the compiled CPU kernels cannot run (numba missing)."""
    from fastslow.spiking import _cpu_kernels

    if not _cpu_kernels.cpu_kernels_available():
        pytest.skip("the compiled CPU kernels need numba (the cpu extra)")


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("surrogate", ["fast_sigmoid", "arctan"])
def test_fused_lif_matches_the_step_loop(reset, surrogate):
    params = LIFParams(beta=0.8, threshold=0.7, reset=reset, surrogate=surrogate, slope=5.0)
    torch.manual_seed(0)
    currents = torch.randn(8, 16, 32, requires_grad=True)
    weights = torch.randn(8, 16, 32)
    fused, state = lif_multistep(currents, None, params)
    ((fused * weights).sum() + state.v.sum()).backward()
    fused_grad = currents.grad.clone()
    currents.grad = None
    state, looped = lif_init(currents[0]), []
    for current in currents:
        spikes, state = lif_step(current, state, params)
        looped.append(spikes)
    ((torch.stack(looped) * weights).sum() + state.v.sum()).backward()
    assert torch.equal(fused, torch.stack(looped))
    assert torch.allclose(fused_grad, currents.grad, atol=1e-6)


SPECS = [
    System1Spec(input_shape=(1, 8, 8), n_classes=5, hidden=(24, 12), timesteps=6, exit_heads=(0,), encoding="rate"),
    System1Spec(input_shape=(1, 8, 8), n_classes=5, hidden=(24,), timesteps=5, encoding="direct", lif=LIFParams(threshold=0.5)),
    System1Spec(input_shape=(1, 8, 8), n_classes=5, hidden=(16,), timesteps=4, encoding="latency", readout="spike_count"),
    System1Spec(
        input_shape=(2, 10, 10),
        n_classes=3,
        arch="conv",
        conv_channels=(4, 6),
        hidden=(12,),
        timesteps=3,
        encoding="rate",
        lif=LIFParams(reset="zero"),
    ),
]


@pytest.mark.parametrize("spec", SPECS, ids=["mlp-rate-exits", "mlp-direct", "mlp-latency-count", "conv-rate-zero"])
def test_multistep_run_equals_stepwise_bit_for_bit(spec):
    torch.manual_seed(0)
    model = System1(spec)
    x = torch.rand(9, *spec.input_shape)
    fast = model.run(x, generator=torch.Generator().manual_seed(5), mode="multistep")
    slow = model.run(x, generator=torch.Generator().manual_seed(5), mode="stepwise")
    for field in ("step_outputs", "logits", "synaptic_ops", "dense_macs", "neuron_updates", "spike_rates"):
        assert torch.equal(getattr(fast, field), getattr(slow, field)), field


def test_multistep_gradients_equal_stepwise():
    torch.manual_seed(0)
    model = System1(SPECS[0])
    x, y = torch.rand(9, 1, 8, 8), torch.randint(0, 5, (9,))
    grads = {}
    for mode in ("multistep", "stepwise"):
        model.zero_grad()
        run = model.run(x, generator=torch.Generator().manual_seed(5), mode=mode)
        torch.nn.functional.cross_entropy(run.logits.reshape(-1, 5), y.repeat(12)).backward()
        grads[mode] = [p.grad.clone() for p in model.parameters()]
    for a, b in zip(grads["multistep"], grads["stepwise"]):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("spec", SPECS, ids=["mlp-rate-exits", "mlp-direct", "mlp-latency-count", "conv-rate-zero"])
def test_time_chunks_give_the_same_run(spec, monkeypatch):
    # Large layers run a few steps at a time (the state carried across chunks); nothing changes.
    import fastslow.systems.system1 as system1

    torch.manual_seed(0)
    model = System1(spec)
    x = torch.rand(9, *spec.input_shape)
    whole = model.run(x, generator=torch.Generator().manual_seed(5))
    monkeypatch.setattr(system1, "MULTISTEP_CHUNK_BYTES", 1)  # one step per chunk
    chunked = model.run(x, generator=torch.Generator().manual_seed(5))
    for field in ("step_outputs", "logits", "synaptic_ops", "dense_macs", "spike_rates"):
        assert torch.equal(getattr(whole, field), getattr(chunked, field)), field


def test_lif_slices_give_the_same_spikes_and_gradients(monkeypatch):
    import fastslow.spiking.lif as lif

    params = LIFParams(beta=0.8, threshold=0.7, reset="subtract", slope=5.0)
    currents = torch.randn(5, 6, 50, requires_grad=True)
    spikes, state = lif_multistep(currents, None, params)
    (spikes.sum() + state.v.sum()).backward()
    grad = currents.grad.clone()
    currents.grad = None
    monkeypatch.setattr(lif, "LIF_SLICE", 64)  # 300 neurons in five slices
    sliced, sliced_state = lif_multistep(currents, None, params)
    (sliced.sum() + sliced_state.v.sum()).backward()
    assert torch.equal(spikes, sliced) and torch.equal(state.v, sliced_state.v)
    assert torch.allclose(grad, currents.grad, atol=1e-6)


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_inference_lif_gives_the_training_path_bits(monkeypatch, reset):
    """Without gradients the fused LIF keeps no potential record; spikes and final state are unchanged."""
    import fastslow.spiking.lif as lif

    params = LIFParams(beta=0.8, threshold=0.7, reset=reset)
    currents = torch.randn(7, 6, 50) * 1.5
    v0 = torch.randn(6, 50)
    v0_before = v0.clone()
    monkeypatch.setattr(lif, "LIF_SLICE", 64)  # 300 neurons in five slices
    with torch.no_grad():
        inferred, inferred_state = lif_multistep(currents, lif.LIFState(v0), params)
    trained, trained_state = lif_multistep(currents.requires_grad_(), lif.LIFState(v0), params)
    assert trained.requires_grad and not inferred.requires_grad
    assert torch.equal(inferred, trained.detach()) and torch.equal(inferred_state.v, trained_state.v.detach())
    assert torch.equal(v0, v0_before)  # the caller's state is not written to


@pytest.mark.parametrize("spec", SPECS[:1] + SPECS[3:], ids=["mlp-rate-exits", "conv-rate-zero"])
def test_checkpointed_training_gives_the_same_run_and_gradients(spec):
    """Gradient checkpointing over time changes what autograd keeps, not the spikes or the gradients."""
    import dataclasses

    runs = []
    for checkpoint_steps in (0, 2):
        torch.manual_seed(0)
        model = System1(dataclasses.replace(spec, checkpoint_steps=checkpoint_steps))
        x = torch.rand(5, *spec.input_shape)
        run = model.run(x, generator=torch.Generator().manual_seed(1))
        run.logits.square().sum().backward()
        runs.append((run, torch.cat([p.grad.flatten() for p in model.parameters()])))
    (plain, plain_grad), (checkpointed, checkpointed_grad) = runs
    assert torch.equal(plain.logits.detach(), checkpointed.logits.detach())
    assert torch.equal(plain.synaptic_ops, checkpointed.synaptic_ops)
    assert torch.allclose(plain_grad, checkpointed_grad, atol=1e-5)


_PEAK = """
import sys, torch
from fastslow.systems import System1, System1Spec

def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))

spec = System1Spec(input_shape=(1, 28, 28), n_classes=10, arch="conv", conv_channels=(32, 64), hidden=(), timesteps=16,
                   encoding="direct", checkpoint_steps=int(sys.argv[1]))
model = System1(spec)
x = torch.rand(16, 1, 28, 28)
model.run(x[:2]).logits.sum().backward()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak resident size (VmHWM) to the current one
before = status("VmRSS:")
model.run(x).logits.sum().backward()
print(status("VmHWM:") - before)
"""


def test_checkpointing_lowers_the_peak_memory_of_a_training_step():
    import os
    import subprocess
    import sys

    # A fixed mmap threshold makes glibc map and unmap every tensor over 64 KiB, so the peak resident
    # size follows the live tensors instead of the heap's history.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    peak = {
        k: int(subprocess.run([sys.executable, "-c", _PEAK, str(k)], capture_output=True, text=True, check=True, env=env).stdout)
        for k in (0, 4)
    }
    assert peak[4] < 0.75 * peak[0], peak  # KiB; measured 40 against 66 MiB


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("height, width", [(8, 8), (7, 9)])
@pytest.mark.parametrize("variant", ["per-step currents", "constant current, arctan, v unused"])
def test_pooled_lif_equals_lif_then_max_pooling(monkeypatch, reset, height, width, variant):
    """The LIF that pools spikes in cache gives max_pool2d of the LIF's spikes, their counts and the
    final state bit for bit, and max_pool2d's gradients, with and without gradients (odd edges
    dropped, several images per slice; a constant current expanded over T as direct encoding feeds it)."""
    import fastslow.spiking.lif as lif

    constant = variant.startswith("constant")
    params = LIFParams(beta=0.8, threshold=0.7, reset=reset, surrogate="arctan" if constant else "fast_sigmoid", slope=5.0)
    torch.manual_seed(0)
    leaf = (torch.randn(7, height, width, 3) if constant else torch.randn(5, 7, height, width, 3)) * 1.5
    leaf.requires_grad_()
    currents = leaf.unsqueeze(0).expand(5, -1, -1, -1, -1) if constant else leaf  # [T, B, H, W, C]
    v0 = torch.randn(7, height, width, 3, requires_grad=True)
    weights = torch.randn(5, 7, height // 2, width // 2, 3)
    v_weight = 0.0 if constant else 1.0
    monkeypatch.setattr(lif, "POOLED_SLICE", 2 * height * width * 3)  # two images per slice, the last alone
    spikes, reference_state = lif_multistep(currents, lif.LIFState(v0), params)
    reference = torch.nn.functional.max_pool2d(spikes.flatten(0, 1).permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
    ((reference.unflatten(0, (5, 7)) * weights).sum() + v_weight * reference_state.v.square().sum()).backward()
    reference_grads = leaf.grad.clone(), v0.grad.clone()
    leaf.grad = v0.grad = None
    pooled, counts, state = fused_lif_multistep_pooled(currents, lif.LIFState(v0), params)
    ((pooled * weights).sum() + v_weight * state.v.square().sum()).backward()
    assert torch.equal(pooled.detach().flatten(0, 1), reference.detach())
    assert torch.equal(counts, spikes.detach().sum(dim=(2, 3, 4))) and not counts.requires_grad
    assert torch.equal(state.v.detach(), reference_state.v.detach())
    assert torch.allclose(leaf.grad, reference_grads[0], atol=1e-5)
    assert torch.allclose(v0.grad, reference_grads[1], atol=1e-6)
    with torch.no_grad():
        inferred, inferred_counts, inferred_state = fused_lif_multistep_pooled(currents, lif.LIFState(v0), params)
    assert torch.equal(inferred, pooled.detach()) and torch.equal(inferred_counts, counts)
    assert torch.equal(inferred_state.v, state.v.detach())


def test_conv_inference_records_equal_the_training_path():
    """A conv System 1 under no_grad (pooled kernel) records what it records with gradients on."""
    spec = SPECS[3]
    torch.manual_seed(0)
    model = System1(spec)
    x = torch.rand(9, *spec.input_shape)
    trained = model.run(x, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        inferred = model.run(x, generator=torch.Generator().manual_seed(5))
    for field in ("step_outputs", "synaptic_ops", "spike_rates"):
        assert torch.equal(getattr(inferred, field), getattr(trained, field).detach()), field


def _reference_lif(currents, state, params, backend="auto", final_state=True, counts=None, rows=None):
    """The functional core looped over time: the reference the fast kernels must not depart from."""
    assert rows is None  # full runs only
    state = lif_init(currents[0]) if state is None else state
    spikes = []
    for current in currents:
        step_spikes, state = lif_step(current, state, params)
        spikes.append(step_spikes)
    spikes = torch.stack(spikes)
    if counts is not None:
        counts.add_(spikes.detach().flatten(2).sum(2))
    return spikes, state if final_state else None


def _reference_pooled(currents, state, params, backend="auto", final_state=True, counts=None, next_synaptic_ops=None, rows=None):
    """The functional core, then ``max_pool2d``, on channels-last maps [T, B, H, W, C]."""
    assert rows is None
    spikes, new_state = _reference_lif(currents, state, params)
    pooled = torch.nn.functional.max_pool2d(spikes.flatten(0, 1).permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
    pooled = pooled.unflatten(0, spikes.shape[:2])
    if next_synaptic_ops is not None:
        fanout, out = next_synaptic_ops
        out.add_((pooled.detach().sum(-1).flatten(2) * fanout).sum(-1))
    map_counts = spikes.detach().sum(dim=(2, 3, 4))
    return pooled, map_counts if counts is None else counts.add_(map_counts), new_state if final_state else None


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_fast_simulation_costs_no_accuracy_on_digits(monkeypatch, arch):
    """Same seed, same data: System 1 trained with the fast kernels (multi-step, pooled LIF, event-driven
    synapses) and with the functional core looped over time (dense synapses, max_pool2d) reaches the
    same test accuracy on digits."""
    import dataclasses

    import fastslow.systems.system1 as system1
    from fastslow.data import load_dataset
    from fastslow.systems.training import system1_loss, train_classifier

    data = load_dataset("digits", seed=0)
    x_train, y_train = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    x_test, y_test = torch.from_numpy(data.x_test), torch.from_numpy(data.y_test)
    spec = (
        System1Spec(input_shape=data.input_shape, n_classes=10, hidden=(64,), timesteps=4, encoding="direct")
        if arch == "mlp"
        else System1Spec(
            input_shape=data.input_shape, n_classes=10, arch="conv", conv_channels=(8,), hidden=(), timesteps=4, encoding="direct"
        )
    )
    accuracy = {}
    for path in ("fast", "reference"):
        if path == "reference":
            monkeypatch.setattr(system1, "fused_lif_multistep", _reference_lif)
            monkeypatch.setattr(system1, "fused_lif_multistep_pooled", _reference_pooled)
            spec = dataclasses.replace(spec, event_density=0.0)
        torch.manual_seed(0)
        model = System1(spec)
        train_classifier(model, x_train, y_train, system1_loss, epochs=3, lr=3e-3, batch_size=64, seed=0)
        with torch.no_grad():
            accuracy[path] = (model.run(x_test).final_logits.argmax(1) == y_test).float().mean().item()
    assert accuracy["fast"] > 0.8, accuracy  # it learns (87% MLP, 89% conv here)
    assert abs(accuracy["fast"] - accuracy["reference"]) <= 0.02, accuracy  # float rounding may flip a few of 360


def test_pooled_lif_rejects_empty_or_misshapen_currents():
    for shape in [(0, 2, 4, 4, 3), (3, 0, 4, 4, 3), (3, 2, 4, 4)]:
        with pytest.raises(ValueError, match=r"\[T, B, H, W, C\]"):
            fused_lif_multistep_pooled(torch.zeros(shape), None, LIFParams())


@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("steps", [1, 2])
def test_advancing_rows_in_place_equals_advancing_them_alone(arch, backend, steps):
    """``advance(..., rows=)`` (what serving does once inputs stopped) gives those inputs the records
    and state of advancing them alone from their own state, bit for bit, writes that state into the
    caller's tensors (keep_state or not), and leaves the other rows untouched."""
    if backend == "numba":
        _needs_compiled_kernels()
    spec = (
        System1Spec(input_shape=(12,), n_classes=4, hidden=(20, 16), timesteps=4, encoding="direct", readout="spike_count")
        if arch == "mlp"
        else System1Spec(
            input_shape=(1, 8, 8),
            n_classes=4,
            arch="conv",
            conv_channels=(3, 5),
            hidden=(),
            timesteps=4,
            encoding="direct",
            readout="spike_count",
        )
    )
    torch.manual_seed(0)
    model = System1(spec, backend=backend).eval()
    x = torch.rand(7, *spec.input_shape) * 3
    rows = torch.tensor([5, 1, 2])
    others = torch.tensor([0, 3, 4, 6])
    with torch.no_grad():
        constant = model.input_current(model.prepare(x))
        for keep_state in (True, False):
            _, state = model.advance(None, None, constant, 1)
            tensors = (*state.layers, *state.heads)
            before = [t.clone() for t in tensors]
            alone_state = type(state)(tuple(t[rows] for t in state.layers), tuple(t[rows] for t in state.heads))
            alone, alone_next = model.advance(None, alone_state, constant[rows], steps)
            record, advanced = model.advance(None, state, constant, steps, keep_state=keep_state, rows=rows)
            for field in ("outputs", "synaptic_ops", "dense_macs", "spike_rates"):
                assert torch.equal(getattr(record, field), getattr(alone, field)), field
            assert all(new.data_ptr() == old.data_ptr() for new, old in zip((*advanced.layers, *advanced.heads), tensors))
            for written, old, separate in zip(tensors, before, (*alone_next.layers, *alone_next.heads)):
                assert torch.equal(written[rows], separate) and torch.equal(written[others], old[others])
            assert record.spike_rates.sum() > 0 and not torch.equal(tensors[0][rows], before[0][rows])
        for bad in (
            torch.tensor([1, 1]),
            torch.tensor([3, 1, 3]),
            torch.tensor([0, 7]),
            torch.tensor([True, False] * 3 + [True]),
        ):
            with pytest.raises(ValueError, match="rows"):
                model.advance(None, state, constant, 1, rows=bad)


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_compiled_cpu_kernel_equals_the_torch_path(reset):
    """The numba LIF + pooling (inference) gives the torch path's pooled spikes, counts and state bit
    for bit: odd edges, a constant current expanded over T, infinities and NaN included."""
    _needs_compiled_kernels()
    import fastslow.spiking.lif as lif

    params = LIFParams(beta=0.85, threshold=0.6, reset=reset)
    torch.manual_seed(1)
    varied = torch.randn(6, 5, 9, 7, 4) * 1.5
    varied[2, 1, 3, 3, 0], varied[3, 2, 0, 0, 1], varied[1, 0, 8, 6, 3] = float("inf"), float("-inf"), float("nan")
    constant = (torch.randn(5, 9, 7, 4) * 1.5).unsqueeze(0).expand(6, -1, -1, -1, -1)
    v0 = torch.randn(5, 9, 7, 4)
    v0_before = v0.clone()
    for currents in (varied, constant):
        with torch.no_grad():
            assert select_backend(currents.device, currents.dtype, False) == "numba"  # what "auto" runs here
            compiled = fused_lif_multistep_pooled(currents, lif.LIFState(v0), params, backend="numba")
            assert torch.equal(v0, v0_before)  # the caller's state is read, never written
            reference = fused_lif_multistep_pooled(currents, lif.LIFState(v0), params, backend="torch")
        assert torch.equal(compiled[0], reference[0]) and torch.equal(compiled[1], reference[1])
        torch.testing.assert_close(compiled[2].v, reference[2].v, rtol=0, atol=0, equal_nan=True)
    # From rest (no state), and without writing the final state: the same spikes and counts; the
    # next layer's synaptic ops (Σ fan-out × pooled spike) summed in the kernel equal the torch path's.
    fanout = torch.arange(1.0, 4 * 3 + 1)  # one per pooled position of the 9×7 maps (4×3)
    ops, counts = {}, {}  # both added into (here onto ones)
    with torch.no_grad():
        ops["compiled"], counts["compiled"] = torch.ones(6, 5), torch.ones(6, 5)
        from_rest = fused_lif_multistep_pooled(
            varied,
            None,
            params,
            backend="numba",
            final_state=False,
            counts=counts["compiled"],
            next_synaptic_ops=(fanout, ops["compiled"]),
        )
        ops["torch"], counts["torch"] = torch.ones(6, 5), torch.ones(6, 5)
        reference = fused_lif_multistep_pooled(
            varied,
            lif.LIFState(torch.zeros_like(v0)),
            params,
            backend="torch",
            counts=counts["torch"],
            next_synaptic_ops=(fanout, ops["torch"]),
        )
    assert torch.equal(from_rest[0], reference[0]) and from_rest[2] is None
    assert (
        from_rest[1] is counts["compiled"]
        and reference[1] is counts["torch"]
        and torch.equal(counts["compiled"], counts["torch"])
    )
    with torch.no_grad():
        assert torch.equal(
            counts["torch"], 1 + fused_lif_multistep_pooled(varied, None, params)[1]
        )  # a fresh buffer without counts=
    expected = 1 + (reference[0].sum(-1).flatten(2) * fanout).sum(-1)
    assert torch.equal(ops["compiled"], expected) and torch.equal(ops["torch"], expected) and expected.sum() > 30
    with torch.no_grad(), pytest.raises(ValueError, match=r"counts must be a contiguous torch.float32 \[T, B\]"):
        fused_lif_multistep_pooled(varied, None, params, counts=torch.zeros(5, 6))
    with torch.no_grad(), pytest.raises(ValueError, match=r"one entry per pooled position, \[12\], got \[11\]"):
        fused_lif_multistep_pooled(varied, None, params, next_synaptic_ops=(fanout[:11], torch.zeros(6, 5)))
    assert select_backend(varied.device, varied.dtype, True) == "torch"  # training: the autograd path


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_compiled_cpu_lif_equals_the_torch_path(reset):
    """The numba LIF for flat layers (inference) gives the torch path's spikes, firing rates and state
    bit for bit: a constant current expanded over T, infinities and NaN, from rest and without the
    final state included."""
    _needs_compiled_kernels()
    import fastslow.spiking.lif as lif
    from fastslow.spiking import _cpu_kernels

    params = LIFParams(beta=0.85, threshold=0.6, reset=reset)
    torch.manual_seed(2)
    varied = torch.randn(6, 5, 33) * 1.5
    varied[2, 1, 3], varied[3, 2, 0], varied[1, 0, 32] = float("inf"), float("-inf"), float("nan")
    constant = (torch.randn(5, 33) * 1.5).unsqueeze(0).expand(6, -1, -1)
    v0 = torch.randn(5, 33)
    v0_before = v0.clone()
    for currents in (varied, constant):
        for state in (lif.LIFState(v0), None):
            counts = {"compiled": torch.ones(6, 5), "torch": torch.ones(6, 5)}  # added into
            with torch.no_grad():
                compiled = fused_lif_multistep(currents, state, params, backend="numba", counts=counts["compiled"])
                unkept = fused_lif_multistep(currents, state, params, backend="numba", final_state=False)
                assert torch.equal(v0, v0_before)  # the caller's state is read, never written
                reference = fused_lif_multistep(currents, state, params, backend="torch", counts=counts["torch"])
            assert torch.equal(compiled[0], reference[0]) and torch.equal(unkept[0], reference[0]) and unkept[1] is None
            torch.testing.assert_close(compiled[1].v, reference[1].v, rtol=0, atol=0, equal_nan=True)
            assert torch.equal(counts["compiled"], counts["torch"])
            assert torch.equal(counts["torch"], 1 + reference[0].sum(-1)) and counts["torch"].sum() > 30
    with torch.no_grad(), pytest.raises(ValueError, match=r"\[T, B\]"):  # the compiled loop checks no bounds: the wrapper does
        fused_lif_multistep(varied, None, params, counts=torch.zeros(5, 6))
    with torch.no_grad(), pytest.raises(ValueError, match=r"\[B, N\]"):  # the wrapper itself
        _cpu_kernels.lif_inference(varied, v0[:1], params.beta, params.threshold, reset == "zero")
    for backend in ("numba", "torch"):  # a misshapen state is refused on either backend, never broadcast or cut
        with torch.no_grad(), pytest.raises(ValueError, match=r"shaped like one step's current, \[5, 33\], got \[1, 33\]"):
            fused_lif_multistep(varied, lif.LIFState(v0[:1]), params, backend=backend)
        with torch.no_grad(), pytest.raises(ValueError, match=r"got \[33\]"):
            fused_lif_multistep(varied, lif.LIFState(v0[0]), params, backend=backend)
    with torch.no_grad(), pytest.raises(ValueError, match=r"shaped like one step's current"):  # the pure reference too
        lif.lif_multistep(varied, lif.LIFState(v0[:1]), params)


@pytest.mark.parametrize(
    "spec",
    [
        System1Spec(
            input_shape=(1, 12, 12),
            n_classes=5,
            arch="conv",
            conv_channels=(4, 6),
            hidden=(16,),
            timesteps=5,
            encoding="direct",
            exit_heads=(0,),
        ),
        System1Spec(input_shape=(30,), n_classes=4, hidden=(20, 12), timesteps=6, encoding="rate", readout="spike_count"),
        System1Spec(
            input_shape=(1, 12, 12), n_classes=5, arch="conv", conv_channels=(4,), hidden=(), timesteps=4, encoding="latency"
        ),
    ],
    ids=["conv-direct", "mlp-rate", "conv-latency"],
)
def test_inference_too_large_for_one_chunk_runs_groups_of_inputs_with_the_same_records(spec, monkeypatch):
    from fastslow.systems import system1

    torch.manual_seed(0)
    model = System1(spec).eval()
    x = torch.rand(7, *spec.input_shape)
    with torch.no_grad():
        whole = model.run(x, generator=torch.Generator().manual_seed(3))
        per_input_step = model._largest_step_tensor(spec.encoding == "direct") * 4
        monkeypatch.setattr(system1, "MULTISTEP_CHUNK_BYTES", per_input_step * spec.timesteps * 3)  # 3 inputs' runs fit
        calls = []
        advance = model.advance
        monkeypatch.setattr(
            model,
            "advance",
            lambda inp, state, constant, steps, *a, **k: (
                calls.append((steps, state)) or advance(inp, state, constant, steps, *a, **k)
            ),
        )
        grouped = model.run(x, generator=torch.Generator().manual_seed(3))  # the rate code is drawn for the whole batch first
    assert calls == [(spec.timesteps, None)] * 3  # groups of 3, 3 and 1 inputs, each all T steps from rest
    for name in ("synaptic_ops", "dense_macs", "spike_rates"):
        assert torch.equal(getattr(grouped, name), getattr(whole, name)), name
    for name in ("step_outputs", "logits"):  # bit for bit here; a BLAS elsewhere may round by batch shape (see the README)
        torch.testing.assert_close(getattr(grouped, name), getattr(whole, name), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "spec",
    [
        System1Spec(input_shape=(1, 8, 8), n_classes=5, hidden=(160, 12), timesteps=6, exit_heads=(0,), encoding="rate"),
        System1Spec(
            input_shape=(1, 8, 8),
            n_classes=5,
            hidden=(200, 140),
            timesteps=5,
            encoding="direct",
            lif=LIFParams(threshold=0.5, reset="zero"),
        ),
    ],
    ids=["rate-exits-subtract", "direct-zero"],
)
def test_compiled_mlp_inference_records_what_training_records(monkeypatch, spec):
    """An MLP under no_grad on a CPU runs each chunk of steps as one compiled call (every layer and
    readout summed over events): the same spikes, records and final state as the autograd path, the
    potentials and readouts to float rounding (a dense row or a readout is a BLAS matmul there)."""
    _needs_compiled_kernels()
    from fastslow.spiking import _cpu_kernels

    torch.manual_seed(0)
    model = System1(spec)
    x = torch.rand(9, *spec.input_shape)
    calls = []
    original = _cpu_kernels.mlp_inference
    monkeypatch.setattr(_cpu_kernels, "mlp_inference", lambda *args, **kwargs: (calls.append(1), original(*args, **kwargs))[1])
    trained = model.run(x, generator=torch.Generator().manual_seed(5))
    assert not calls  # gradients on: the autograd path
    with torch.no_grad():
        inferred = model.run(x, generator=torch.Generator().manual_seed(5))
        assert len(calls) == 1
        steps = spec.timesteps
        inputs = (
            None
            if spec.encoding == "direct"
            else torch.stack(
                [torch.rand(9, 64, generator=torch.Generator().manual_seed(t)).lt(0.3).float() for t in range(steps)]
            )
        )
        constant = model.input_current(model.prepare(x)) if inputs is None else None
        with monkeypatch.context() as off:  # the per-layer path, for the final state
            off.setattr(model, "_mlp_membrane", False)
            reference, reference_state = model.advance(inputs, None, constant, steps)
        record, state = model.advance(inputs, None, constant, steps)
    for field in ("synaptic_ops", "dense_macs", "spike_rates"):
        assert torch.equal(getattr(inferred, field), getattr(trained, field).detach()), field
    torch.testing.assert_close(inferred.step_outputs, trained.step_outputs.detach(), rtol=0, atol=1e-5)
    assert torch.equal(record.spike_rates, reference.spike_rates) and torch.equal(record.synaptic_ops, reference.synaptic_ops)
    torch.testing.assert_close(record.outputs, reference.outputs, rtol=0, atol=1e-5)
    if spec.encoding == "direct":  # layer 0 integrates the same current tensor on both paths: the same bits
        assert torch.equal(state.layers[0], reference_state.layers[0])
    torch.testing.assert_close(state.layers + state.heads, reference_state.layers + reference_state.heads, rtol=0, atol=1e-5)


def test_compiled_mlp_inference_follows_changed_weights(monkeypatch):
    """The weights the compiled kernel reads are rebuilt after an optimiser's in-place step or a load."""
    _needs_compiled_kernels()
    spec = System1Spec(input_shape=(1, 8, 8), n_classes=5, hidden=(160,), timesteps=4, encoding="direct")
    torch.manual_seed(0)
    model, other = System1(spec), System1(spec)
    x = torch.rand(6, *spec.input_shape)

    def both_paths():
        with torch.no_grad():
            compiled = model.run(x)
            with monkeypatch.context() as off:
                off.setattr(model, "_mlp_membrane", False)
                reference = model.run(x)
        assert torch.equal(compiled.spike_rates, reference.spike_rates)
        torch.testing.assert_close(compiled.step_outputs, reference.step_outputs, rtol=0, atol=1e-5)
        return compiled

    before = both_paths()
    with torch.no_grad():
        model.layers[0].op.weight.mul_(3.0)
        model.heads[0].bias.add_(1.0)
    changed = both_paths()
    assert not torch.equal(before.spike_rates, changed.spike_rates)
    model.load_state_dict(other.state_dict())
    both_paths()
