"""The ``fastslow continual`` and ``fastslow search`` jobs: progress, tables, result files and figures.

The application layer over :mod:`fastslow.stdp` (which computes, and imports nothing from the
pipeline, the evaluation or the CLI): what the commands print and write. Each command's ``--out``
is written as one generation (:class:`fastslow.atomic.Generation`): built beside it, swapped in at
the end, checked for writability before any work."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from fastslow import atomic
from fastslow.config import check_seed
from fastslow.data.datasets import load_dataset
from fastslow.energy.profile import load_profile
from fastslow.errors import ConfigError, DataError
from fastslow.evaluation.report import figure_png
from fastslow.pipeline import versions
from fastslow.progress import output_console, progress_bars
from fastslow.stdp.continual import ContinualResult, parse_tasks, run_continual
from fastslow.stdp.network import SPIKEDYN_MECHANISMS, SpikeDynRules, STDPSpec, memory_bytes
from fastslow.stdp.search import Candidate, candidate_rows, search

CONTINUAL_FILES = ("continual.json", "continual.png", "results.json")
SEARCH_FILES = ("search.json", "search.png")


def _image_data(data: str, seed: int):
    """``data`` loaded for an STDP network, which rate-codes each input's values: event frames are refused."""
    dataset = load_dataset(data, seed=seed)
    if dataset.frames:
        raise DataError(
            f"{data} holds event frames, but the STDP networks rate-code images: use digits, mnist:ROOT, folder:ROOT or an .npz"
        )
    return dataset


def _spikedyn_rules(model: str, off: tuple[str, ...]) -> SpikeDynRules:
    """SpikeDyn's rules with the mechanisms in ``off`` switched off (docs/stdp.md)."""
    unknown = sorted(set(off) - set(SPIKEDYN_MECHANISMS))
    if unknown:
        raise ConfigError(f"--spikedyn-off {' '.join(unknown)}: no such mechanism; choose from {', '.join(SPIKEDYN_MECHANISMS)}")
    if off and model != "spikedyn":
        raise ConfigError(f"--spikedyn-off switches SpikeDyn's mechanisms, not {model}'s: drop it or use --model spikedyn")
    return SpikeDynRules(**dict.fromkeys(off, False))


def continual_job(
    data: str,
    model: str,
    out: str,
    bits: int = 32,
    neurons: int = 400,
    tasks: str | None = None,
    samples_per_task: int = 100,
    test_per_task: int = 100,
    presentation_ms: float = 350.0,
    seed: int = 0,
    profile: str = "cmos45nm",
    s2_epochs: int = 10,
    spikedyn_off: tuple[str, ...] = (),
    console: Console | None = None,
    progress: bool = True,
    show_table: bool = True,
) -> dict:
    console = console or output_console()
    output = atomic.Generation(out, owns=CONTINUAL_FILES)
    check_seed(seed)
    if s2_epochs < 1:
        raise ConfigError(f"--s2-epochs {s2_epochs}: System 2 needs at least 1 training epoch")
    rules = _spikedyn_rules(model, spikedyn_off)
    dataset = _image_data(data, seed)
    task_list = parse_tasks(tasks, dataset.n_classes)
    spec = STDPSpec(
        model=model,
        n_inputs=math.prod(dataset.input_shape),
        n_neurons=neurons,
        bits=bits,
        presentation_ms=presentation_ms,
        rules=rules,
    )
    config = {
        "data": data,
        "model": model,
        "spikedyn_off": list(spikedyn_off),
        "bits": bits,
        "neurons": neurons,
        "tasks": task_list,
        "samples_per_task": samples_per_task,
        "test_per_task": test_per_task,
        "presentation_ms": presentation_ms,
        "seed": seed,
        "profile": profile,
        "s2_epochs": s2_epochs,
    }
    with progress_bars(console, progress) as bars:
        bar = bars.add_task(f"{model}: learning {len(task_list)} tasks (no labels)", total=len(task_list) * samples_per_task)
        result = run_continual(
            dataset,
            spec,
            task_list,
            samples_per_task=samples_per_task,
            test_per_task=test_per_task,
            seed=seed,
            profile=profile,
            progress=lambda: bars.advance(bar),
        )
    strategies = _escalation(dataset, result, s2_epochs, seed, profile)
    with output as staging:
        write_continual(staging, result, spec, config, versions())
        atomic.write_json(
            staging / "results.json",
            {
                "dataset": dataset.name,
                "seed": seed,
                "profile": load_profile(profile).summary(),
                "versions": versions(),
                "config": config,
                "system1": {"kind": "stdp", "spec": spec.to_dict(), "memory_bytes": memory_bytes(spec)},
                "note": "after the last task, on every task's test samples; System 2 trained with labels on the same training samples",
                "strategies": strategies,
            },
        )
    short = {
        what: [(i, n) for i, n in enumerate(used) if n < asked]
        for what, used, asked in (
            ("training", result.samples_used["train_per_task"], samples_per_task),
            ("test", result.samples_used["test_per_task"], test_per_task),
        )
    }
    for what, tasks_short in short.items():
        if tasks_short and show_table:
            console.print(
                f"[yellow]note: the data holds fewer {what} samples than asked for tasks "
                + ", ".join(f"{i} ({n})" for i, n in tasks_short)
                + "; continual.json records the numbers used[/yellow]"
            )
    if show_table:
        table = Table(
            title=f"{model}, {neurons} neurons, {bits}-bit weights: test accuracy (%) on each task after learning each task"
        )
        table.add_column("after task")
        for j, task in enumerate(task_list):
            table.add_column(f"t{j} {task}", justify="right")
        table.add_column("train µJ/sample", justify="right")
        table.add_column("infer µJ/input", justify="right")
        for i, row in enumerate(result.accuracy):
            cells = ["" if a is None else f"{100 * a:.1f}" for a in row]
            train = sum(v for k, v in result.training_energy_uj[i].items() if k not in ("presentations_per_sample", "samples"))
            table.add_row(str(i), *cells, f"{train:.3f}", f"{sum(result.inference_energy_uj[i].values()):.4f}")
        console.print(table)
        console.print(
            f"energy: profile {profile}, arithmetic only; per training sample and per test input, repeated presentations included."
        )
        escalation = Table(title="After the last task: the STDP System 1 with escalation to System 2 (all tasks' test samples)")
        for column in ("strategy", "accuracy %", "escalated %", "µJ/input", "× System 2"):
            escalation.add_column(column, justify="left" if column == "strategy" else "right")
        for r in strategies:
            escalation.add_row(
                r["name"],
                f"{100 * r['accuracy']:.1f}",
                f"{100 * r['escalation_rate']:.1f}",
                f"{r['energy_uj']:.4f}",
                f"{r['energy_ratio_vs_s2']:.2f}",
            )
        console.print(escalation)
        console.print(
            f"continual: {Path(out) / 'continual.json'}, {Path(out) / 'continual.png'}, {Path(out) / 'results.json'} ({result.seconds:.1f} s)"
        )
    return {"accuracy": result.accuracy}


def _escalation(dataset, result, s2_epochs: int, seed: int, profile: str) -> list[dict]:
    """System 1 alone, System 2 alone, and confidence@θ escalation, after the protocol's last task."""
    from fastslow.stdp.system import escalation_strategies, train_system2

    x_train = dataset.x_train.reshape(len(dataset.x_train), -1)
    x_test = dataset.x_test.reshape(len(dataset.x_test), -1)
    system2, s2_macs = train_system2(
        x_train[result.train_index],
        dataset.y_train[result.train_index],
        dataset.input_shape,
        dataset.n_classes,
        epochs=s2_epochs,
        seed=seed,
    )
    return escalation_strategies(
        result.network,
        system2,
        s2_macs,
        x_test[result.test_index],
        dataset.y_test[result.test_index],
        dataset.input_shape,
        dataset.n_classes,
        load_profile(profile),
        result.training_energy_total_uj(),
    )


def search_job(
    data: str,
    max_memory_kb: float,
    max_energy_uj: float,
    out: str,
    model: str = "spikedyn",
    neurons: tuple[int, ...] = (25, 50, 100, 200, 400),
    bits: tuple[int, ...] = (4, 8, 16, 32),
    presentation_ms: tuple[float, ...] = (100.0, 200.0, 350.0),
    train_samples: int = 200,
    test_samples: int = 200,
    max_trained: int = 8,
    seed: int = 0,
    profile: str = "cmos45nm",
    console: Console | None = None,
    progress: bool = True,
    show_table: bool = True,
) -> dict:
    console = console or output_console()
    output = atomic.Generation(out, owns=SEARCH_FILES)
    check_seed(seed)
    dataset = _image_data(data, seed)
    config = {
        "data": data,
        "max_memory_kb": max_memory_kb,
        "max_energy_uj": max_energy_uj,
        "model": model,
        "neurons": list(neurons),
        "bits": list(bits),
        "presentation_ms": list(presentation_ms),
        "train_samples": train_samples,
        "test_samples": test_samples,
        "max_trained": max_trained,
        "seed": seed,
        "profile": profile,
    }
    with progress_bars(console, progress) as bars:
        survivors = max_trained  # an upper bound for the bar; a search may train fewer
        bar = bars.add_task(
            f"training the candidates within budget ({train_samples} samples each)", total=survivors * train_samples
        )
        candidates = search(
            dataset,
            max_memory_kb,
            max_energy_uj,
            model=model,
            neurons=neurons,
            bits=bits,
            presentation_ms=presentation_ms,
            train_samples=train_samples,
            test_samples=test_samples,
            max_trained=max_trained,
            seed=seed,
            profile=profile,
            progress=lambda: bars.advance(bar),
        )
        bars.update(bar, completed=bars.tasks[0].total)
    chosen = next(c for c in candidates if c.chosen)
    payload = {
        "budget": {"max_memory_kb": max_memory_kb, "max_energy_uj": max_energy_uj},
        "energy_unit": f"µJ per input (inference) / per training sample; profile {profile}, arithmetic only",
        "chosen": chosen.name,
        "candidates": candidate_rows(candidates),
        "config": config,
        # the data may hold fewer than asked: each candidate then trains and tests on all of it
        "samples_used": {"train": min(train_samples, len(dataset.x_train)), "test": min(test_samples, len(dataset.x_test))},
        "versions": versions(),
    }
    figure = search_png(candidates, f"model search on {dataset.name}", profile)
    with output as staging:
        atomic.write_json(staging / "search.json", payload)
        atomic.write_bytes(staging / "search.png", figure)
    if show_table:
        table = Table(title=f"Candidates within {max_memory_kb:g} KB and {max_energy_uj:g} µJ/input that were trained")
        table.add_column("candidate", no_wrap=True)
        for column in ("memory KB", "est. µJ/input", "meas. µJ/input", "train µJ/sample", "accuracy %", "Pareto", "chosen"):
            table.add_column(column, justify="right")
        for c in candidates:
            if c.accuracy is None:
                continue
            table.add_row(
                c.name,
                f"{c.memory_kb:.1f}",
                f"{c.estimated_inference_uj:.4f}",
                f"{c.measured_inference_uj:.4f}",
                f"{c.measured_training_uj:.3f}",
                f"{100 * c.accuracy:.1f}",
                "yes" if c.pareto else "",
                "←" if c.chosen else "",
            )
        console.print(table)
        within = sum(c.within_budget for c in candidates)
        console.print(
            f"{len(candidates)} candidates estimated, {within} within budget; search: {Path(out) / 'search.json'}, {Path(out) / 'search.png'}"
        )
    return payload


def continual_png(result: ContinualResult, title: str) -> bytes:
    """Accuracy on each task (one line per task) after each learning phase."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.6, 4.4), dpi=150)
    phases = np.arange(1, len(result.tasks) + 1)
    for j, task in enumerate(result.tasks):
        ys = [100 * row[j] if row[j] is not None else np.nan for row in result.accuracy]
        ax.plot(phases, ys, marker="o", markersize=3.5, linewidth=1.2, label=f"task {j} {task}")
    newest = [100 * a for a in result.newest_task_accuracy()]
    ax.plot(phases, newest, "k--", linewidth=1.5, label="newest task")
    ax.set_xlabel("after learning task (1 = first)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_xticks(phases)
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return figure_png(fig)


def write_continual(out: str | Path, result: ContinualResult, spec: STDPSpec, config: dict, versions: dict) -> None:
    """continual.json and continual.png in ``out`` (the command writes them into its new generation)."""
    out = Path(out)
    payload = {
        "model": result.model,
        "tasks": result.tasks,
        "accuracy": result.accuracy,
        "newest_task_accuracy": result.newest_task_accuracy(),
        "old_task_accuracy": result.old_task_accuracy(),
        "energy_unit": "µJ per training sample (training) / per test input (inference), repeated presentations included; arithmetic only",
        "training_energy_uj": result.training_energy_uj,
        "inference_energy_uj": result.inference_energy_uj,
        "counts_per_sample": result.counts,
        "spec": spec.to_dict(),
        "config": config,
        "samples_used": result.samples_used,
        "neuron_classes": result.neuron_classes,
        "versions": versions,
        "seconds": result.seconds,
    }
    atomic.write_json(out / "continual.json", payload)
    atomic.write_bytes(
        out / "continual.png", continual_png(result, f"{result.model}, {spec.n_neurons} neurons, {spec.bits}-bit weights")
    )


def search_png(candidates: list[Candidate], title: str, profile_name: str) -> bytes:
    """Trained candidates: accuracy against measured energy, marker area ∝ memory; Pareto ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trained = [c for c in candidates if c.accuracy is not None]
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=150)
    biggest = max(c.memory_kb for c in trained)
    for c in trained:
        size = 30 + 300 * c.memory_kb / biggest
        ax.scatter(
            [c.measured_inference_uj],
            [100 * c.accuracy],
            s=size,
            alpha=0.6,
            edgecolors="black" if c.pareto else "none",
            linewidths=1.5 if c.pareto else 0,
        )
        ax.annotate(
            c.name + (" (chosen)" if c.chosen else ""),
            (c.measured_inference_uj, 100 * c.accuracy),
            fontsize=6,
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax.set_xlabel(f"inference energy per input (µJ, profile {profile_name}; arithmetic only)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title + " — area ∝ memory, ringed = Pareto-optimal", fontsize=9)
    ax.grid(True, alpha=0.3)
    return figure_png(fig)
