"""Benchmark: where a learned router can beat the best threshold cascade (issue 23, item 3).

Jitkrittum et al. (NeurIPS 2023, "When does confidence-based cascade deferral suffice?") find
confidence deferral hard to beat, and a learned post-hoc deferral ahead mainly when System 2 is
a specialist, the labels are noisy, or the test distribution shifts. Each of those is a setting
here, beside the clean baseline, with the same seeds (each seed a new split and training):

- ``clean``: the default fit (both systems and every policy trained on clean data).
- ``noise``, ``blur``, ``dim``: the clean fit's systems and policies, the test inputs shifted:
  Gaussian noise (σ ``--noise-sigma``, clipped to [0, 1]), a 3×3 Gaussian blur (σ ``--blur-sigma``,
  edges replicated), or the intensity scaled by ``--dim``. Every operating point (thresholds, the
  routers' weights and decision thresholds) was fitted on the clean router split and is applied
  unchanged to the shifted test, as a deployed router would meet shift.
- ``label_noise``: ``--label-noise`` symmetric noise (a label replaced, with that probability, by
  a uniformly drawn other class) in the training labels of both systems and in the router split's
  labels, which the routers learn from; the test labels are clean.
- ``router_label_noise``: the clean fit's systems; the same noise in the router split's labels
  only (what the policies learn from).
- ``specialist``: System 1 as in ``clean``; System 2 (the default architecture) trained on every
  training input of the half of the classes where System 1 is weakest on the router split, and
  on a ``--specialist-share`` of the other classes' inputs (seeded, at least one per class).

Per seed and setting: the cheapest learned point (``_stats.LEARNED_FAMILIES``) and the cheapest
threshold cascade (``THRESHOLD_FAMILIES``) within 0.3 and 1 accuracy point of System 2 on the test
split (points chosen on the test split, as ``_stats.cheapest_within`` does); the same points chosen
on the router split (the deployed view: the cheapest within 0.3 pt of System 2 there, its test
accuracy and energy); each group's best accuracy within an energy budget (fractions of System 2's
energy); the mean accuracy of the ``router`` and ``confidence`` curves over escalation rates
[0, r], r the smaller of their largest rates (System 1 alone at rate 0). Paired differences
(learned − threshold) over seeds with 95% t intervals. Not a test: run on demand,

    .venv/bin/python bench/router_wins.py [--seeds 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split

from fastslow import load_config, runtime
from fastslow.config import FitConfig
from fastslow.data import resolved_data
from fastslow.energy import count_macs, load_profile
from fastslow.evaluation.evaluate import StrategyResult, collect_outputs, evaluate_strategies
from fastslow.pipeline import (
    TEST_SEED_OFFSET,
    VAL_SEED_OFFSET,
    Splits,
    encoding_for,
    fit_policies,
    make_splits,
    resolve_device,
    seed_everything,
    system1_spec,
    versions,
)
from fastslow.progress import progress_bars
from fastslow.systems.system1 import System1
from fastslow.systems.system2 import System2Spec, build_system2
from fastslow.systems.training import ce_loss, system1_loss, train_classifier

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import console as wide_console  # noqa: E402
from _stats import (  # noqa: E402
    LEARNED_FAMILIES,
    THRESHOLD_FAMILIES,
    Interval,
    cheapest_within,
    mean_interval,
    paired_difference,
    verdict,
)

SETTINGS = ("clean", "noise", "blur", "dim", "label_noise", "router_label_noise", "specialist")
SHIFTS = ("noise", "blur", "dim")
DROPS = (0.003, 0.01)  # accuracy targets: System 2's accuracy minus these
BUDGETS = (0.2, 0.4)  # energy budgets, fractions of System 2's energy
# Where a deployed operating point is chosen: the router split (the learned policies' own training
# data), or a clean half of the test split (the point then met on the other half, shifted or not).
VIEWS = {"router_split": "router split", "clean_half": "clean test half"}
GROUPS = {"learned": LEARNED_FAMILIES, "threshold": THRESHOLD_FAMILIES}


class Options(NamedTuple):
    """The settings' severities (see the module docstring)."""

    noise_sigma: float = 0.3
    blur_sigma: float = 1.0
    dim: float = 0.5
    label_noise: float = 0.2
    specialist_share: float = 0.1


# --------------------------------------------------------------------------- the settings' data


def shift_inputs(x: torch.Tensor, kind: str, options: Options, seed: int) -> torch.Tensor:
    """``x`` [N, C, H, W] in [0, 1] under the test-time shift ``kind`` (noise, blur, dim)."""
    if x.dim() != 4:
        raise ValueError(f"test-time shifts take images [N, C, H, W], got inputs of shape {tuple(x.shape)}")
    if kind == "noise":
        generator = torch.Generator().manual_seed(seed)
        return (x + options.noise_sigma * torch.randn(x.shape, generator=generator)).clamp(0.0, 1.0)
    if kind == "blur":
        offsets = torch.tensor([-1.0, 0.0, 1.0])
        g = torch.exp(-(offsets**2) / (2 * options.blur_sigma**2))
        kernel = torch.outer(g, g) / torch.outer(g, g).sum()
        channels = x.shape[1]
        weight = kernel.expand(channels, 1, 3, 3).contiguous()
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), weight, groups=channels)
    if kind == "dim":
        return x * options.dim
    raise ValueError(f"unknown shift {kind!r}: use one of {', '.join(SHIFTS)}")


def symmetric_noise(y: torch.Tensor, rate: float, n_classes: int, seed: int) -> torch.Tensor:
    """``y`` with each label, with probability ``rate``, replaced by a uniformly drawn other class."""
    rng = np.random.default_rng(seed)
    labels = y.numpy().copy()
    flip = rng.random(len(labels)) < rate
    labels[flip] = (labels[flip] + rng.integers(1, n_classes, flip.sum())) % n_classes
    return torch.as_tensor(labels, dtype=torch.long)


def specialist_subset(y_train: torch.Tensor, strong: list[int], share: float, seed: int) -> torch.Tensor:
    """Indices of the training inputs System 2 specialises on: every one of the ``strong`` classes,
    ``share`` of each other class's (at least one, seeded)."""
    rng = np.random.default_rng(seed)
    labels = y_train.numpy()
    keep = []
    for c in np.unique(labels):
        index = np.flatnonzero(labels == c)
        if c not in strong:
            index = rng.choice(index, max(1, round(share * len(index))), replace=False)
        keep.append(index)
    return torch.as_tensor(np.sort(np.concatenate(keep)))


# --------------------------------------------------------------------------- training, as pipeline.fit does


def train_systems(
    config: FitConfig,
    splits: Splits,
    device: torch.device,
    *,
    y_train: torch.Tensor | None = None,
    system1: System1 | None = None,
    s2_subset: torch.Tensor | None = None,
) -> tuple[System1, torch.nn.Module]:
    """System 1 and System 2 trained as ``pipeline.fit`` trains them (same seeds, same order), on
    ``y_train`` (default: the split's labels); ``system1`` given: kept, only System 2 trained, on
    the training inputs ``s2_subset`` (default all)."""
    dataset = splits.dataset
    c1, c2 = config.system1, config.system2
    y_train = splits.y_train if y_train is None else y_train
    torch.manual_seed(config.seed)
    s1 = system1 if system1 is not None else System1(system1_spec(config, dataset.input_shape, dataset.n_classes)).to(device)
    spec = System2Spec(tuple(dataset.input_shape), dataset.n_classes, c2.arch, c2.hidden, frames=dataset.frames)
    torch.manual_seed(config.seed + 1)
    s2 = build_system2(spec).to(device)
    xd, yd = splits.x_train.to(device), y_train.to(device)
    if system1 is None:
        torch.manual_seed(config.seed)  # rate encoding draws from the global generator while training
        train_classifier(
            s1,
            xd,
            yd,
            lambda m, x, y: system1_loss(m, x, y, c1.loss),
            epochs=c1.epochs,
            lr=c1.lr,
            batch_size=c1.batch_size,
            seed=config.seed,
        )
    if s2_subset is not None:
        xd, yd = xd[s2_subset.to(device)], yd[s2_subset.to(device)]
    train_classifier(s2, xd, yd, ce_loss, epochs=c2.epochs, lr=c2.lr, batch_size=c2.batch_size, seed=config.seed)
    return s1, s2


def outputs_on(config: FitConfig, s1, s2, x, y, offset: int, device):
    """Both systems' recorded outputs on ``x`` (the spike encoder seeded as the fit seeds it)."""
    s2_macs = sum(count_macs(s2, tuple(x.shape[1:])).values())
    return collect_outputs(s1, s2, x, y, s2_macs, batch_size=config.eval_batch_size, seed=config.seed + offset, device=device)


def fit_and_evaluate(config, profile, splits, s1, s2, device, console, *, y_val=None, test_inputs=None) -> dict:
    """Policies fitted on the router split (labels ``y_val``), then every strategy on the router
    split (``val``), on the test split (``test``; and on each of ``test_inputs``: {setting: shifted
    test inputs}), on a clean half of the test split (``select``, stratified, seeded) and on the other
    half (``held``, shifted where the test inputs are): {"" or setting: {part: [results]}}."""
    y_val = splits.y_val if y_val is None else y_val
    val = outputs_on(config, s1, s2, splits.x_val, y_val, VAL_SEED_OFFSET, device)
    with progress_bars(console, False) as bars:
        policies = fit_policies(config, val, tuple(splits.dataset.input_shape), profile, bars)
    evaluate = lambda outputs: compact(evaluate_strategies(outputs, profile, policies, seed=config.seed))  # noqa: E731
    select_index, held_index = (
        torch.as_tensor(i)
        for i in train_test_split(
            np.arange(len(splits.y_test)), train_size=0.5, stratify=splits.y_test.numpy(), random_state=config.seed
        )
    )
    parts = {"val": evaluate(val)}
    out = {}
    for name, x in {"": splits.x_test, **(test_inputs or {})}.items():
        test = outputs_on(config, s1, s2, x, splits.y_test, TEST_SEED_OFFSET, device)
        if name == "":
            parts["select"] = evaluate(test.subset(select_index))
        out[name] = {"test": evaluate(test), "held": evaluate(test.subset(held_index))}
    return {name: {**parts, **entry} for name, entry in out.items()}


def compact(results: list[StrategyResult]) -> list[dict]:
    return [
        {
            "name": r.name,
            "family": r.family,
            "accuracy": round(r.accuracy, 6),
            "energy_uj": round(r.energy_uj, 7),
            "energy_ratio_vs_s2": round(r.energy_ratio_vs_s2, 6),
            "escalation_rate": round(r.escalation_rate, 6),
        }
        for r in results
    ]


def run_seed(config: FitConfig, options: Options, settings: tuple[str, ...], console) -> dict:
    """Every setting of ``settings`` on one seed: {setting: {"val": [...], "test": [...], ...}}."""
    config = config.model_copy(update={"data": resolved_data(config.data)})
    profile = load_profile(config.profile)
    device = resolve_device(config.device)
    out: dict = {}
    with runtime.thread_policy(config.runtime.threads):
        seed_everything(config.seed)
        splits = make_splits(config)
        config = encoding_for(config, splits.dataset)
        n_classes = splits.dataset.n_classes
        shifted = {
            kind: shift_inputs(splits.x_test, kind, options, config.seed + 100 + i)
            for i, kind in enumerate(SHIFTS)
            if kind in settings
        }
        s1, s2 = train_systems(config, splits, device)
        clean = fit_and_evaluate(config, profile, splits, s1, s2, device, console, test_inputs=shifted)
        for setting in ("clean", *SHIFTS):
            if setting in settings:
                key = "" if setting == "clean" else setting
                out[setting] = clean[key]
        if "specialist" in settings:
            val = outputs_on(config, s1, s2, splits.x_val, splits.y_val, VAL_SEED_OFFSET, device)
            s1_right = (val.s1.logits[-1, -1].argmax(1) == val.labels).float()
            per_class = [float(s1_right[val.labels == c].mean()) for c in range(n_classes)]
            strong = sorted(sorted(range(n_classes), key=lambda c: (per_class[c], c))[: n_classes // 2])
            subset = specialist_subset(splits.y_train, strong, options.specialist_share, config.seed + 200)
            _, s2_special = train_systems(config, splits, device, system1=s1, s2_subset=subset)
            special = fit_and_evaluate(config, profile, splits, s1, s2_special, device, console)
            out["specialist"] = {
                **special[""],
                "strong_classes": strong,
                "s2_train_inputs": len(subset),
            }
        y_val = symmetric_noise(splits.y_val, options.label_noise, n_classes, config.seed + 301)
        flipped_val = float((y_val != splits.y_val).float().mean())
        if "router_label_noise" in settings:
            noisy = fit_and_evaluate(config, profile, splits, s1, s2, device, console, y_val=y_val)
            out["router_label_noise"] = {**noisy[""], "flipped": {"train": 0.0, "val": flipped_val}}
        if "label_noise" in settings:
            y_train = symmetric_noise(splits.y_train, options.label_noise, n_classes, config.seed + 300)
            n1, n2 = train_systems(config, splits, device, y_train=y_train)
            noisy = fit_and_evaluate(config, profile, splits, n1, n2, device, console, y_val=y_val)
            out["label_noise"] = {
                **noisy[""],
                "flipped": {
                    "train": float((y_train != splits.y_train).float().mean()),
                    "val": flipped_val,
                },
            }
    return out


# --------------------------------------------------------------------------- per-seed statistics


def _by_name(strategies: list[dict]) -> dict[str, dict]:
    return {s["name"]: s for s in strategies}


def best_under_budget(strategies: list[dict], families, budget_ratio: float) -> float:
    """The best accuracy of ``families``' points at ≤ ``budget_ratio`` × System 2's energy (nan: none)."""
    accs = [s["accuracy"] for s in strategies if s["family"] in families and s["energy_ratio_vs_s2"] <= budget_ratio + 1e-12]
    return max(accs) if accs else math.nan


def curve_mean_accuracy(strategies: list[dict], family: str, s1_accuracy: float, r_max: float) -> float:
    """Mean accuracy of ``family``'s accuracy-vs-escalation-rate curve over [0, ``r_max``] (System 1
    alone at rate 0, linear between points, the upper envelope where rates tie)."""
    points: dict[float, float] = {0.0: s1_accuracy}
    for s in strategies:
        if s["family"] == family:
            points[s["escalation_rate"]] = max(points.get(s["escalation_rate"], -1.0), s["accuracy"])
    rates = np.array(sorted(points))
    accs = np.array([points[r] for r in rates])
    grid = np.linspace(0.0, r_max, 201)
    return float(np.trapezoid(np.interp(grid, rates, accs), grid) / r_max) if r_max > 0 else math.nan


def deployed(select: list[dict], evaluate: list[dict]) -> dict:
    """Per group, the cheapest point within 0.3 pt of System 2 on ``select`` (else its most accurate
    point there, the cheapest of those), and its accuracy drop vs System 2 (points) and energy
    ratio on ``evaluate``."""
    target = _by_name(select)["system2"]["accuracy"] - DROPS[0]
    on = _by_name(evaluate)
    chosen_points = {}
    for group, families in GROUPS.items():
        chosen = cheapest_within(select, families, target)
        reached = chosen is not None
        if chosen is None:
            chosen = min((s for s in select if s["family"] in families), key=lambda s: (-s["accuracy"], s["energy_uj"]))
        point = on[chosen["name"]]
        chosen_points[group] = {
            "name": chosen["name"],
            "reached": reached,
            "drop_pt": 100 * (on["system2"]["accuracy"] - point["accuracy"]),
            "ratio": point["energy_ratio_vs_s2"],
        }
    return chosen_points


def seed_stats(run: dict) -> dict:
    """One seed's figures for one setting (see the module docstring)."""
    test, val = run["test"], run["val"]
    t = _by_name(test)
    s1, s2 = t["system1"]["accuracy"], t["system2"]["accuracy"]
    stats: dict = {"s1": s1, "s2": s2, "s1_energy_ratio": t["system1"]["energy_ratio_vs_s2"], "targets": {}}
    for drop in DROPS:
        entry = {}
        for group, families in GROUPS.items():
            best = cheapest_within(test, families, s2 - drop)
            entry[group] = None if best is None else {"name": best["name"], "ratio": best["energy_ratio_vs_s2"]}
        stats["targets"][drop] = entry
    stats["deployed"] = {
        "router_split": deployed(val, test),  # in-sample for the learned policies (trained there)
        "clean_half": deployed(run["select"], run["held"]),
    }
    stats["budgets"] = {b: {g: best_under_budget(test, f, b) for g, f in GROUPS.items()} for b in BUDGETS}
    stats["ceiling"] = {g: max(s["accuracy"] for s in test if s["family"] in f) for g, f in GROUPS.items()}
    rates = {f: max((s["escalation_rate"] for s in test if s["family"] == f), default=0.0) for f in ("router", "confidence")}
    r_max = min(rates.values())
    stats["curve"] = {
        "r_max": r_max,
        **{f: curve_mean_accuracy(test, f, s1, r_max) for f in ("router", "confidence")},
    }
    return stats


# --------------------------------------------------------------------------- over seeds


def _fmt(interval: Interval | None, digits: int = 3, scale: float = 1.0, signed: bool = False) -> str:
    return "—" if interval is None else interval.format(digits, scale, signed)


def _paired(a: list[float], b: list[float]) -> Interval | None:
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if not (math.isnan(x) or math.isnan(y))]
    return paired_difference([p[0] for p in pairs], [p[1] for p in pairs]) if pairs else None


def _deployed_summary(per_seed: list[dict]) -> dict:
    dep = {g: [s[g] for s in per_seed] for g in GROUPS}
    drop_diff = paired_difference([d["drop_pt"] for d in dep["learned"]], [d["drop_pt"] for d in dep["threshold"]])
    ratio_diff = paired_difference([d["ratio"] for d in dep["learned"]], [d["ratio"] for d in dep["threshold"]])
    return {
        **{
            g: {"drop": mean_interval([d["drop_pt"] for d in dep[g]]), "ratio": mean_interval([d["ratio"] for d in dep[g]])}
            for g in GROUPS
        },
        "reached": {g: sum(d["reached"] for d in dep[g]) for g in GROUPS},
        "drop_diff": drop_diff,
        "drop_verdict": verdict(drop_diff, "learned more accurate", "threshold more accurate"),
        "ratio_diff": ratio_diff,
        "ratio_verdict": verdict(ratio_diff, "learned cheaper", "threshold cheaper"),
    }


def summarize(runs: list[dict], settings: tuple[str, ...]) -> dict:
    """{setting: figures over seeds}: intervals, paired differences and verdicts (learned − threshold)."""
    summary = {}
    for setting in settings:
        per_seed = [seed_stats(run[setting]) for run in runs]
        n = len(per_seed)
        entry: dict = {
            "seeds": n,
            "s1": mean_interval([s["s1"] for s in per_seed]),
            "s2": mean_interval([s["s2"] for s in per_seed]),
            "s1_ratio": mean_interval([s["s1_energy_ratio"] for s in per_seed]),
            "targets": {},
        }
        for drop in DROPS:
            reach = {g: sum(s["targets"][drop][g] is not None for s in per_seed) for g in GROUPS}
            both = [s["targets"][drop] for s in per_seed if all(s["targets"][drop][g] is not None for g in GROUPS)]
            row: dict = {"reach": reach, "both": len(both)}
            if both:
                learned = [b["learned"]["ratio"] for b in both]
                threshold = [b["threshold"]["ratio"] for b in both]
                diff = paired_difference(learned, threshold)
                row |= {
                    "learned": mean_interval(learned),
                    "threshold": mean_interval(threshold),
                    "diff": diff,
                    "verdict": verdict(diff, "learned cheaper", "threshold cheaper"),
                    "points": [(b["learned"]["name"], b["threshold"]["name"]) for b in both],
                }
            entry["targets"][drop] = row
        entry["deployed"] = {view: _deployed_summary([s["deployed"][view] for s in per_seed]) for view in VIEWS}
        entry["budgets"] = {}
        for b in BUDGETS:
            diff = _paired([s["budgets"][b]["learned"] for s in per_seed], [s["budgets"][b]["threshold"] for s in per_seed])
            entry["budgets"][b] = {
                "diff": diff,
                "verdict": "—" if diff is None else verdict(diff, "threshold more accurate", "learned more accurate"),
                "both": 0 if diff is None else diff.n,
            }
        ceiling = paired_difference([s["ceiling"]["learned"] for s in per_seed], [s["ceiling"]["threshold"] for s in per_seed])
        entry["ceiling"] = {"diff": ceiling, "verdict": verdict(ceiling, "threshold higher", "learned higher")}
        curve = _paired([s["curve"]["router"] for s in per_seed], [s["curve"]["confidence"] for s in per_seed])
        entry["curve"] = {
            "r_max": mean_interval([s["curve"]["r_max"] for s in per_seed]),
            "diff": curve,
            "verdict": "—" if curve is None else verdict(curve, "confidence higher", "router higher"),
        }
        summary[setting] = entry
    return summary


def _seeds_note(used: int, seeds: int) -> str:
    """ " (k seeds)" where a figure is over fewer seeds than the run's."""
    return "" if used in (0, seeds) else f" ({used} seed{'' if used == 1 else 's'})"


def markdown(summary: dict) -> str:
    """The three tables of RESULTS.md (equal accuracy, deployed, budgets and curves)."""
    lines = [
        "| setting | S1 acc % | S2 acc % | S1 ×S2 | target | seeds reaching (L / T) | learned ×S2 | threshold ×S2 | L − T (×S2) | verdict |",
        "| --- | ---: | ---: | ---: | --- | :---: | ---: | ---: | ---: | --- |",
    ]
    for setting, e in summary.items():
        for drop, row in e["targets"].items():
            first = drop == DROPS[0]
            lines.append(
                f"| {setting if first else ''} | {_fmt(e['s1'], 2, 100) if first else ''} | {_fmt(e['s2'], 2, 100) if first else ''} "
                f"| {_fmt(e['s1_ratio'], 3) if first else ''} | S2 − {100 * drop:g} pt "
                f"| {row['reach']['learned']} / {row['reach']['threshold']} of {e['seeds']} "
                f"| {_fmt(row.get('learned'))} | {_fmt(row.get('threshold'))} | {_fmt(row.get('diff'), 3, 1, True)} "
                f"| {row.get('verdict', 'no seed where both reach it')}{_seeds_note(row['both'], e['seeds'])} |"
            )
    lines += [
        "",
        "| setting | chosen on | learned: drop (pt), ×S2 | threshold: drop (pt), ×S2 | reached there (L / T) | L − T drop (pt) | verdict | L − T (×S2) | verdict |",
        "| --- | --- | ---: | ---: | :---: | ---: | --- | ---: | --- |",
    ]
    for setting, e in summary.items():
        for view, label in VIEWS.items():
            d = e["deployed"][view]
            lines.append(
                f"| {setting if view == 'router_split' else ''} | {label} | {_fmt(d['learned']['drop'], 2)}, {_fmt(d['learned']['ratio'])} "
                f"| {_fmt(d['threshold']['drop'], 2)}, {_fmt(d['threshold']['ratio'])} | {d['reached']['learned']} / {d['reached']['threshold']} "
                f"| {_fmt(d['drop_diff'], 2, 1, True)} | {d['drop_verdict']} | {_fmt(d['ratio_diff'], 3, 1, True)} | {d['ratio_verdict']} |"
            )
    head = " | ".join(f"L − T acc at ≤ {b:g}×S2 (pt) | verdict" for b in BUDGETS)
    lines += [
        "",
        f"| setting | {head} | L − T best acc (pt) | verdict | router − confidence curve (pt) over rates ≤ r | r | verdict |",
        "| --- |" + " ---: | --- |" * len(BUDGETS) + " ---: | --- | ---: | ---: | --- |",
    ]
    for setting, e in summary.items():
        cells = []
        for b in BUDGETS:
            row = e["budgets"][b]
            cells.append(f"{_fmt(row['diff'], 2, 100, True)} | {row['verdict']}{_seeds_note(row['both'], e['seeds'])}")
        c = e["curve"]
        lines.append(
            f"| {setting} | {' | '.join(cells)} | {_fmt(e['ceiling']['diff'], 2, 100, True)} | {e['ceiling']['verdict']} "
            f"| {_fmt(c['diff'], 2, 100, True)} | {_fmt(c['r_max'], 2)} | {c['verdict']} |"
        )
    return "\n".join(lines)


def bench_config(args) -> FitConfig:
    overrides: dict = {}
    if args.epochs:
        overrides |= {"system1": {"epochs": args.epochs}, "system2": {"epochs": args.epochs}}
    if args.timesteps:
        overrides.setdefault("system1", {})["timesteps"] = args.timesteps
    if args.hidden:
        overrides.setdefault("system1", {})["hidden"] = args.hidden
    if args.policy_epochs:
        e = args.policy_epochs
        overrides |= {
            "router": {"epochs": e, "exit_epochs": e, "step_epochs": e},
            "ponder": {"epochs": e},
            "seenn2": {"pretrain_epochs": e, "rl_epochs": e},
        }
    return load_config(None, data=args.data, seed=0, threads=args.threads, **overrides)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits", help="images [N, C, H, W] in [0, 1] (default digits)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N−1, each a new split and training (default 5)")
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    parser.add_argument("--epochs", type=int, default=None, help="both systems' epochs (default: the config's)")
    parser.add_argument("--timesteps", type=int, default=None)
    parser.add_argument("--hidden", type=int, nargs="+", default=None, help="System 1's hidden layers")
    parser.add_argument("--policy-epochs", type=int, default=None, help="every learned policy's epochs (default: the config's)")
    parser.add_argument("--threads", default=None, help="CPU threads (default: the config's)")
    parser.add_argument("--noise-sigma", type=float, default=Options._field_defaults["noise_sigma"])
    parser.add_argument("--blur-sigma", type=float, default=Options._field_defaults["blur_sigma"])
    parser.add_argument("--dim", type=float, default=Options._field_defaults["dim"])
    parser.add_argument("--label-noise", type=float, default=Options._field_defaults["label_noise"])
    parser.add_argument("--specialist-share", type=float, default=Options._field_defaults["specialist_share"])
    parser.add_argument("--json", default=None, help="write every seed's figures here")
    parser.add_argument("--raw", action="store_true", help="with --json: every strategy of every seed and part too")
    parser.add_argument("--summarize", default=None, help="no runs: the figures of an earlier --json --raw file")
    args = parser.parse_args(argv)
    console = wide_console()
    if args.summarize:  # e.g. after a change of the family lists in _stats.py
        earlier = json.loads(Path(args.summarize).read_text())
        runs, settings = earlier["runs"], tuple(earlier["settings"])
        console.print(markdown(summarize(runs, settings)), markup=False, highlight=False, soft_wrap=True)
        if args.json:
            payload = {k: v for k, v in earlier.items() if k not in ("runs", "per_seed")}
            payload |= {
                **({"runs": runs} if args.raw else {}),
                "per_seed": {s: [seed_stats(run[s]) for run in runs] for s in settings},
            }
            Path(args.json).write_text(json.dumps(payload, indent=1, default=str) + "\n")
        return 0
    options = Options(args.noise_sigma, args.blur_sigma, args.dim, args.label_noise, args.specialist_share)
    settings = tuple(s for s in SETTINGS if s in args.settings)
    base = bench_config(args)
    runs, started = [], time.monotonic()
    for seed in range(args.seeds):
        t0 = time.monotonic()
        runs.append(run_seed(base.model_copy(update={"seed": seed}), options, settings, console))
        console.print(f"seed {seed}: {time.monotonic() - t0:.0f} s", highlight=False)
    summary = summarize(runs, settings)
    console.print(markdown(summary), markup=False, highlight=False, soft_wrap=True)
    if args.json:
        payload = {
            "options": options._asdict(),
            "settings": list(settings),
            "config": base.model_dump(),
            "versions": versions(),
            "seconds": round(time.monotonic() - started, 1),
            **({"runs": runs} if args.raw else {}),
            "per_seed": {s: [seed_stats(run[s]) for run in runs] for s in settings},
        }
        Path(args.json).write_text(json.dumps(payload, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
