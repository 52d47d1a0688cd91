"""The continual (dynamic-environment) protocol: tasks one after another, no labels while learning.

After each task the network's neurons are labelled from the labelled copies of the training
samples seen so far (labels are used only for this readout assignment, as in Diehl & Cook and
SpikeDyn), then tested on every task learned so far. ``accuracy[i][j]`` is the accuracy on task j
after learning task i (``None`` for a task not learned yet).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from fastslow.data.datasets import Dataset
from fastslow.energy.accounting import stdp_energy_uj
from fastslow.energy.profile import load_profile
from fastslow.errors import ConfigError
from fastslow.stdp.network import STDPCounts, STDPNetwork, STDPSpec


@dataclass
class ContinualResult:
    model: str
    tasks: list[list[int]]
    accuracy: list[list[float | None]]
    training_energy_uj: list[dict[str, float]]  # per task: µJ per training sample (repeats included), by term
    inference_energy_uj: list[dict[str, float]]  # per task: µJ per test input, by term
    counts: list[dict[str, dict[str, float]]] = field(default_factory=list)  # per task: operations per sample / per input
    seconds: float = 0.0
    network: STDPNetwork | None = None  # after the last task
    train_index: np.ndarray | None = None  # every task's training samples, in order
    test_index: np.ndarray | None = None  # every task's test samples
    samples_used: dict[str, list[int]] = field(
        default_factory=dict
    )  # per task: training and test samples (the data may hold fewer than asked)
    neuron_classes: list[list[int]] = field(default_factory=list)  # per task: each neuron's class after it (−1: none)

    def training_energy_total_uj(self) -> float:
        """STDP learning arithmetic over the whole protocol (µJ)."""
        return float(
            sum(
                sum(v for k, v in phase.items() if k != "presentations_per_sample") * phase["samples"]
                for phase in self.training_energy_uj
            )
        )

    def newest_task_accuracy(self) -> list[float]:
        return [row[i] for i, row in enumerate(self.accuracy)]

    def old_task_accuracy(self) -> list[float | None]:
        """Mean accuracy on the tasks before the newest, after each task (None after the first)."""
        return [float(np.mean(row[:i])) if i else None for i, row in enumerate(self.accuracy)]


def parse_tasks(text: str | None, n_classes: int) -> list[list[int]]:
    """``"0,1;2,3"`` → [[0, 1], [2, 3]]; None → one class per task, in order."""
    if text is None:
        return [[c] for c in range(n_classes)]
    tasks = []
    for part in text.split(";"):
        part = part.strip()
        if not part:
            raise ConfigError(f"task list {text!r} has an empty task: write classes per task like '0,1;2,3'")
        try:
            classes = [int(c) for c in part.split(",")]
        except ValueError:
            raise ConfigError(f"task {part!r} is not a comma-separated list of class numbers: write e.g. '0,1;2,3'") from None
        bad = [c for c in classes if not 0 <= c < n_classes]
        if bad:
            raise ConfigError(f"task {part!r} names classes {bad} outside 0..{n_classes - 1}: use the dataset's classes")
        tasks.append(classes)
    return tasks


def _pick(labels: np.ndarray, classes: list[int], count: int, rng: np.random.Generator, what: str) -> np.ndarray:
    index = np.flatnonzero(np.isin(labels, classes))
    if len(index) == 0:
        raise ConfigError(f"{what} for classes {classes} is empty (no such samples): choose classes the data has")
    return rng.permutation(index)[:count]


def run_continual(
    data: Dataset,
    spec: STDPSpec,
    tasks: list[list[int]],
    samples_per_task: int = 100,
    test_per_task: int = 100,
    seed: int = 0,
    profile: str = "cmos45nm",
    progress=None,
) -> ContinualResult:
    """Learn ``tasks`` in order (``samples_per_task`` unlabelled training samples each), testing
    after each on ``test_per_task`` test samples of every task learned so far."""
    if samples_per_task < 1 or test_per_task < 1:
        raise ConfigError(
            f"samples per task ({samples_per_task}) and test samples per task ({test_per_task}) must be at least 1: pass e.g. --samples-per-task 100 --test-per-task 100"
        )
    if not tasks:
        raise ConfigError("no tasks given: list at least one task, e.g. --tasks '0,1;2,3'")
    energy_profile = load_profile(profile)
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    x_train = data.x_train.reshape(len(data.x_train), -1)
    x_test = data.x_test.reshape(len(data.x_test), -1)
    train_index = [_pick(data.y_train, task, samples_per_task, rng, f"task {i}'s training split") for i, task in enumerate(tasks)]
    test_index = [_pick(data.y_test, task, test_per_task, rng, f"task {i}'s test split") for i, task in enumerate(tasks)]
    network = STDPNetwork(spec, seed=seed)
    accuracy: list[list[float | None]] = []
    training_energy, inference_energy, all_counts = [], [], []
    neuron_classes: list[list[int]] = []
    for i, index in enumerate(train_index):
        learned = network.learn(x_train[index], progress=progress)
        seen = np.concatenate(train_index[: i + 1])
        assignment_responses, _ = network.respond(x_train[seen])
        neuron_classes.append(network.assign_labels(assignment_responses, data.y_train[seen], data.n_classes).tolist())
        row: list[float | None] = []
        tested = STDPCounts()
        for j, t_index in enumerate(test_index):
            if j > i:
                row.append(None)
                continue
            responses, counts = network.respond(x_test[t_index])
            tested.add(counts)
            predicted = network.class_votes(responses, data.n_classes).argmax(1)
            row.append(float((predicted == data.y_test[t_index]).mean()))
        accuracy.append(row)
        # A test input that needed repeats is charged for all its presentations: per input, not per presentation.
        per_input = STDPCounts(**{**tested.__dict__, "presentations": sum(len(test_index[j]) for j in range(i + 1))})
        per_sample = STDPCounts(**{**learned.__dict__, "presentations": len(index)})  # repeats charged to their sample
        training_energy.append(
            stdp_energy_uj(per_sample, energy_profile, spec.bits)
            | {"presentations_per_sample": learned.presentations / len(index), "samples": len(index)}
        )
        inference_energy.append(
            {k: v for k, v in stdp_energy_uj(per_input, energy_profile, spec.bits).items() if k != "learning"}
        )
        all_counts.append({"training": per_sample.per_presentation(), "inference": per_input.per_presentation()})
    return ContinualResult(
        model=spec.model,
        tasks=tasks,
        accuracy=accuracy,
        training_energy_uj=training_energy,
        inference_energy_uj=inference_energy,
        counts=all_counts,
        seconds=time.perf_counter() - started,
        network=network,
        train_index=np.concatenate(train_index),
        test_index=np.concatenate(test_index),
        neuron_classes=neuron_classes,
        samples_used={"train_per_task": [len(i) for i in train_index], "test_per_task": [len(i) for i in test_index]},
    )
