"""The ``fastslow continual`` and ``fastslow search`` jobs: progress, tables, result files."""

from __future__ import annotations

import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fastslow import _atomic
from fastslow.data.datasets import load_dataset
from fastslow.pipeline import _progress, versions
from fastslow.stdp.continual import parse_tasks, run_continual, write_continual
from fastslow.stdp.network import STDPSpec
from fastslow.stdp.search import candidate_rows, search, search_png


def continual_job(data: str, model: str, out: str, bits: int = 32, neurons: int = 400, tasks: str | None = None,
                  samples_per_task: int = 100, test_per_task: int = 100, presentation_ms: float = 350.0, seed: int = 0,
                  profile: str = "cmos45nm", console: Console | None = None, progress: bool = True, show_table: bool = True) -> dict:
    console = console or Console()
    dataset = load_dataset(data, seed=seed)
    task_list = parse_tasks(tasks, dataset.n_classes)
    spec = STDPSpec(model=model, n_inputs=math.prod(dataset.input_shape), n_neurons=neurons, bits=bits, presentation_ms=presentation_ms)
    config = {"data": data, "model": model, "bits": bits, "neurons": neurons, "tasks": task_list, "samples_per_task": samples_per_task,
              "test_per_task": test_per_task, "presentation_ms": presentation_ms, "seed": seed, "profile": profile}
    with _progress(console, progress) as bars:
        bar = bars.add_task(f"{model}: learning {len(task_list)} tasks (no labels)", total=len(task_list) * samples_per_task)
        result = run_continual(dataset, spec, task_list, samples_per_task=samples_per_task, test_per_task=test_per_task, seed=seed,
                               profile=profile, progress=lambda: bars.advance(bar))
    write_continual(out, result, spec, config, versions())
    if show_table:
        table = Table(title=f"{model}, {neurons} neurons, {bits}-bit weights: test accuracy (%) on each task after learning each task")
        table.add_column("after task")
        for j, task in enumerate(task_list):
            table.add_column(f"t{j} {task}", justify="right")
        table.add_column("train µJ/sample", justify="right")
        table.add_column("infer µJ/input", justify="right")
        for i, row in enumerate(result.accuracy):
            cells = ["" if a is None else f"{100 * a:.1f}" for a in row]
            train = sum(v for k, v in result.training_energy_uj[i].items() if k != "presentations_per_sample")
            table.add_row(str(i), *cells, f"{train:.3f}", f"{sum(result.inference_energy_uj[i].values()):.4f}")
        console.print(table)
        console.print(f"energy: profile {profile}, arithmetic only; per training sample and per test input, repeated presentations included. "
                      f"continual: {Path(out) / 'continual.json'}, {Path(out) / 'continual.png'} ({result.seconds:.1f} s)")
    return {"accuracy": result.accuracy}


def search_job(data: str, max_memory_kb: float, max_energy_uj: float, out: str, model: str = "spikedyn",
               neurons: tuple[int, ...] = (25, 50, 100, 200, 400), bits: tuple[int, ...] = (4, 8, 16, 32),
               presentation_ms: tuple[float, ...] = (100.0, 200.0, 350.0), train_samples: int = 200, test_samples: int = 200,
               max_trained: int = 8, seed: int = 0, profile: str = "cmos45nm", console: Console | None = None,
               progress: bool = True, show_table: bool = True) -> dict:
    console = console or Console()
    dataset = load_dataset(data, seed=seed)
    config = {"data": data, "max_memory_kb": max_memory_kb, "max_energy_uj": max_energy_uj, "model": model, "neurons": list(neurons),
              "bits": list(bits), "presentation_ms": list(presentation_ms), "train_samples": train_samples, "test_samples": test_samples,
              "max_trained": max_trained, "seed": seed, "profile": profile}
    with _progress(console, progress) as bars:
        survivors = max_trained  # an upper bound for the bar; a search may train fewer
        bar = bars.add_task(f"training the candidates within budget ({train_samples} samples each)", total=survivors * train_samples)
        candidates = search(dataset, max_memory_kb, max_energy_uj, model=model, neurons=neurons, bits=bits, presentation_ms=presentation_ms,
                            train_samples=train_samples, test_samples=test_samples, max_trained=max_trained, seed=seed, profile=profile,
                            progress=lambda: bars.advance(bar))
        bars.update(bar, completed=bars.tasks[0].total)
    chosen = next(c for c in candidates if c.chosen)
    payload = {
        "budget": {"max_memory_kb": max_memory_kb, "max_energy_uj": max_energy_uj},
        "energy_unit": f"µJ per input (inference) / per training sample; profile {profile}, arithmetic only",
        "chosen": chosen.name,
        "candidates": candidate_rows(candidates),
        "config": config,
        "versions": versions(),
    }
    _atomic.write_json(Path(out) / "search.json", payload)
    _atomic.write_bytes(Path(out) / "search.png", search_png(candidates, f"model search on {dataset.name}", profile))
    if show_table:
        table = Table(title=f"Candidates within {max_memory_kb:g} KB and {max_energy_uj:g} µJ/input that were trained")
        for column in ("candidate", "memory KB", "est. µJ/input", "meas. µJ/input", "train µJ/sample", "accuracy %", "Pareto"):
            table.add_column(column, justify="left" if column == "candidate" else "right")
        for c in candidates:
            if c.accuracy is None:
                continue
            table.add_row(c.name + (" ← chosen" if c.chosen else ""), f"{c.memory_kb:.1f}", f"{c.estimated_inference_uj:.4f}",
                          f"{c.measured_inference_uj:.4f}", f"{c.measured_training_uj:.3f}", f"{100 * c.accuracy:.1f}", "yes" if c.pareto else "")
        console.print(table)
        within = sum(c.within_budget for c in candidates)
        console.print(f"{len(candidates)} candidates estimated, {within} within budget; search: {Path(out) / 'search.json'}, {Path(out) / 'search.png'}")
    return payload
