"""Memory- and energy-constrained model search for an STDP System 1 (SpikeDyn's step 2).

Candidates (neuron count × weight precision × presentation time) are first estimated with the
analytical models, without training: memory from :func:`~fastslow.stdp.network.memory_bytes`,
inference energy per input from the expected number of input spikes (the data's mean pixel
intensity × the Poisson rate × the presentation time, each reaching every neuron), the
excitatory spikes the protocol asks for (``min_spikes``) and their lateral inhibition, and one
membrane update per neuron per step. Candidates within the budget are trained briefly and
measured; the Pareto-optimal ones (accuracy up, memory and energy down) are reported and the most
accurate of them chosen.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from fastslow.data.datasets import Dataset
from fastslow.energy.accounting import stdp_energy_uj
from fastslow.energy.profile import EnergyProfile, load_profile
from fastslow.errors import ConfigError
from fastslow.pareto import pareto_front
from fastslow.stdp.network import STDPCounts, STDPNetwork, STDPSpec, memory_bytes
from fastslow.stdp.quantize import check_bits


@dataclass
class Candidate:
    model: str
    n_neurons: int
    bits: int
    presentation_ms: float
    memory_kb: float
    estimated_inference_uj: float
    estimated_training_uj: float
    within_budget: bool = False
    accuracy: float | None = None
    measured_inference_uj: float | None = None
    measured_training_uj: float | None = None
    pareto: bool = False
    chosen: bool = False

    @property
    def name(self) -> str:
        return f"{self.model}-{self.n_neurons}n-{self.bits}b-{self.presentation_ms:g}ms"


def expected_counts(spec: STDPSpec, mean_input_spikes_per_ms: float, learning: bool) -> STDPCounts:
    """Analytical operation counts of one presentation (see the module docstring)."""
    c = spec.constants
    input_spikes = mean_input_spikes_per_ms * spec.presentation_ms
    exc_spikes = float(c.min_spikes)
    n = spec.n_neurons
    lateral = exc_spikes * (n - 1) if spec.uses_direct_inhibition else exc_spikes + exc_spikes * (n - 1)
    counts = STDPCounts(
        presentations=1,
        input_spikes=input_spikes,
        exc_spikes=exc_spikes,
        inh_spikes=0.0 if spec.uses_direct_inhibition else exc_spikes,
        synaptic_events=input_spikes * n + lateral,
        neuron_updates=float(spec.steps * (n + spec.inhibitory_neurons)),
    )
    if learning:
        # Normalisation touches every weight; depression every pre spike × neuron; potentiation
        # every excitatory spike × input.
        counts.weight_updates = float(spec.n_inputs * n + input_spikes * n + exc_spikes * spec.n_inputs)
        counts.trace_updates = float(spec.steps * (spec.n_inputs + 2 * n))
    return counts


def mean_input_rate(data: Dataset, spec: STDPSpec) -> float:
    """Expected input spikes per ms of presentation, over the training data (intensity 1)."""
    pixels = data.x_train.reshape(len(data.x_train), -1)
    return float(pixels.sum(1).mean()) * spec.constants.max_rate_hz / 1000.0


def estimate(spec: STDPSpec, data: Dataset, profile: EnergyProfile) -> Candidate:
    rate = mean_input_rate(data, spec)
    inference = stdp_energy_uj(expected_counts(spec, rate, learning=False), profile, spec.bits)
    training = stdp_energy_uj(expected_counts(spec, rate, learning=True), profile, spec.bits)
    return Candidate(
        model=spec.model,
        n_neurons=spec.n_neurons,
        bits=spec.bits,
        presentation_ms=spec.presentation_ms,
        memory_kb=memory_bytes(spec) / 1024,
        estimated_inference_uj=inference["synaptic"] + inference["neuron"],
        estimated_training_uj=sum(training.values()),
    )


def search(
    data: Dataset,
    max_memory_kb: float,
    max_energy_uj: float,
    model: str = "spikedyn",
    neurons: tuple[int, ...] = (25, 50, 100, 200, 400),
    bits: tuple[int, ...] = (4, 8, 16, 32),
    presentation_ms: tuple[float, ...] = (100.0, 200.0, 350.0),
    train_samples: int = 200,
    test_samples: int = 200,
    max_trained: int = 8,
    seed: int = 0,
    profile: str = "cmos45nm",
    progress=None,
) -> list[Candidate]:
    """Estimate every candidate, train up to ``max_trained`` of those within the budget (the cheapest
    in estimated energy first), measure them and mark the Pareto-optimal and chosen ones."""
    if not (max_memory_kb > 0 and max_energy_uj > 0):
        raise ConfigError(
            f"--max-memory-kb ({max_memory_kb}) and --max-energy-uj ({max_energy_uj}) must be positive numbers: pass budgets such as 100 and 1"
        )
    if train_samples < 1 or test_samples < 1 or max_trained < 1:
        raise ConfigError(
            f"--train-samples ({train_samples}), --test-samples ({test_samples}) and --max-trained ({max_trained}) must be at least 1: pass e.g. 200, 200 and 8"
        )
    for b in bits:
        check_bits(b)
    energy_profile = load_profile(profile)
    n_inputs = math.prod(data.input_shape)
    candidates = []
    for n, b, ms in itertools.product(neurons, bits, presentation_ms):
        spec = STDPSpec(model=model, n_inputs=n_inputs, n_neurons=n, bits=b, presentation_ms=ms)
        candidate = estimate(spec, data, energy_profile)
        candidate.within_budget = candidate.memory_kb <= max_memory_kb and candidate.estimated_inference_uj <= max_energy_uj
        candidates.append(candidate)
    survivors = [c for c in candidates if c.within_budget]
    if not survivors:
        cheapest_memory = min(candidates, key=lambda c: c.memory_kb)
        cheapest_energy = min(candidates, key=lambda c: c.estimated_inference_uj)
        raise ConfigError(
            f"no candidate fits {max_memory_kb:g} KB and {max_energy_uj:g} µJ/input: the smallest, {cheapest_memory.name}, needs "
            f"{cheapest_memory.memory_kb:.1f} KB and {cheapest_memory.estimated_inference_uj:.4f} µJ; the most frugal, "
            f"{cheapest_energy.name}, {cheapest_energy.memory_kb:.1f} KB and {cheapest_energy.estimated_inference_uj:.4f} µJ; raise the budget"
        )
    rng = np.random.default_rng(seed)
    x_train = data.x_train.reshape(len(data.x_train), -1)
    x_test = data.x_test.reshape(len(data.x_test), -1)
    train_index = rng.permutation(len(x_train))[:train_samples]
    test_index = rng.permutation(len(x_test))[:test_samples]
    # Most accurate tends to be largest: train the largest survivors that fit, a spread of sizes.
    trained = sorted(survivors, key=lambda c: (-c.n_neurons, -c.presentation_ms, -c.bits))[:max_trained]
    for candidate in trained:
        spec = STDPSpec(
            model=model,
            n_inputs=n_inputs,
            n_neurons=candidate.n_neurons,
            bits=candidate.bits,
            presentation_ms=candidate.presentation_ms,
        )
        network = STDPNetwork(spec, seed=seed)
        learned = network.learn(x_train[train_index], progress=progress)
        responses, _ = network.respond(x_train[train_index])
        network.assign_labels(responses, data.y_train[train_index], data.n_classes)
        test_responses, tested = network.respond(x_test[test_index])
        predicted = network.class_votes(test_responses, data.n_classes).argmax(1)
        candidate.accuracy = float((predicted == data.y_test[test_index]).mean())
        per_input = replace(tested, presentations=len(test_index))
        measured = stdp_energy_uj(per_input, energy_profile, spec.bits)
        candidate.measured_inference_uj = measured["synaptic"] + measured["neuron"]
        candidate.measured_training_uj = sum(
            stdp_energy_uj(replace(learned, presentations=len(train_index)), energy_profile, spec.bits).values()
        )
    points = [(c.accuracy, c.memory_kb, c.measured_inference_uj) for c in trained]
    for candidate, flag in zip(trained, pareto_front(points)):
        candidate.pareto = flag
    # The estimate cannot foresee repeated presentations (inputs that drew too few spikes): prefer
    # a Pareto-optimal candidate whose measured energy also fits.
    pareto = [c for c in trained if c.pareto]
    fitting = [c for c in pareto if c.measured_inference_uj <= max_energy_uj] or pareto
    best = max(fitting, key=lambda c: (c.accuracy, -c.measured_inference_uj, -c.memory_kb))
    best.chosen = True
    return candidates


def candidate_rows(candidates: list[Candidate]) -> list[dict]:
    return [asdict(c) | {"name": c.name} for c in candidates]
