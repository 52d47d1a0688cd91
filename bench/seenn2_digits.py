"""Benchmark: SEENN-II on the demo (digits, default config) — the old training recipe against the new.

Per seed this runs the default fit (policies SEENN-I and SEENN-II only), then re-trains SEENN-II
with the old recipe (200 epochs of oracle-label pre-training, the last epoch kept) on the same
router split and System 1, and scores both on the same test split. Reported over seeds (mean ±
95% t interval): each recipe's most accurate point against System 1 (paired, in points), its mean
steps, and the policy's greedy reward on its own training inputs beside the test split (the gap is
what memorising costs).

    .venv/bin/python bench/seenn2_digits.py [--seeds 0 1 2 3 4]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from fastslow import load_config, runtime
from fastslow.energy import load_profile
from fastslow.energy.accounting import count_macs
from fastslow.evaluation import collect_outputs, score_routing
from fastslow.pipeline import TEST_SEED_OFFSET, VAL_SEED_OFFSET, fit, make_splits
from fastslow.policies.seenn2 import action_rewards, seenn2_action_energies, train_seenn2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import console as wide_console  # noqa: E402
from _stats import mean_interval, paired_difference  # noqa: E402

OLD = {"pretrain_epochs": 200, "holdout": 0.0}


def greedy(policy, outputs, energy, beta) -> float:
    """Mean reward of the policy's greedy actions on ``outputs`` (the reward it was trained for)."""
    with torch.no_grad():
        action = policy(outputs.policy_inputs.float()).argmax(1)
    rewards = action_rewards(outputs.s1_correct_by_step(), outputs.s2_correct(), energy, beta)
    return float(rewards[torch.arange(len(action)), action].mean())


def one_seed(seed: int, data: str, quick: bool) -> dict:
    """One seed's fit, both recipes' points on its test split, and SEENN-I's points."""
    overrides = {"data": data, "seed": seed}
    with runtime.thread_policy(load_config(None, **overrides).runtime.threads):  # the fit's threads: the same sums
        return _one_seed(seed, data, quick)


def _one_seed(seed: int, data: str, quick: bool) -> dict:
    overrides = {"data": data, "seed": seed, "policies": ["seenn1", "seenn2"]}
    if quick:
        overrides |= {"system1": {"epochs": 1}, "system2": {"epochs": 1}, "seenn2": {"rl_epochs": 5, "betas": [0.01]}}
    config = load_config(None, **overrides)
    with tempfile.TemporaryDirectory() as scratch:
        result = fit(config, Path(scratch), progress=False, show_table=False, console=wide_console())
    splits = make_splits(config)
    s2_macs = sum(count_macs(result.system2, tuple(splits.x_test.shape[1:])).values())
    common = {"batch_size": config.eval_batch_size}
    val = collect_outputs(
        result.system1, result.system2, splits.x_val, splits.y_val, s2_macs, seed=seed + VAL_SEED_OFFSET, **common
    )
    test = collect_outputs(
        result.system1, result.system2, splits.x_test, splits.y_test, s2_macs, seed=seed + TEST_SEED_OFFSET, **common
    )
    profile = load_profile(config.profile)
    e_val, e_test = seenn2_action_energies(val, profile), seenn2_action_energies(test, profile)
    by_name = {r.name: r for r in result.results}
    row = {"seed": seed, "s1": by_name["system1"].accuracy, "recipes": {}}
    old = OLD | {"pretrain_epochs": 5} if quick else OLD
    for recipe, options in (("new", {}), ("old", old)):
        points = []
        for beta in config.seenn2.betas:
            sc = config.seenn2
            opts = {"pretrain_epochs": sc.pretrain_epochs, "holdout": sc.holdout} | options
            policy, _ = train_seenn2(
                val.policy_inputs,
                val.s1_correct_by_step(),
                val.s2_correct(),
                e_val,
                beta,
                input_shape=tuple(splits.x_test.shape[1:]),
                hidden=sc.hidden,
                rl_epochs=sc.rl_epochs,
                lr=sc.lr,
                seed=seed,
                **opts,
            )
            scored = score_routing(
                f"seenn2@beta={beta:g}", "seenn2", policy.route(test.policy_inputs, test.last_exit), test, profile
            )
            points.append(
                {
                    "beta": beta,
                    "accuracy": scored.accuracy,
                    "steps": scored.mean_timesteps,
                    "uj": scored.energy_uj,
                    "reward_train": greedy(policy, val, e_val, beta),
                    "reward_test": greedy(policy, test, e_test, beta),
                }
            )
        row["recipes"][recipe] = points
    # The new recipe is the fit's own: its points should be the fit's seenn2 points (say where not).
    row["differs_from_fit"] = [
        p["beta"] for p in row["recipes"]["new"] if abs(by_name[f"seenn2@beta={p['beta']:g}"].accuracy - p["accuracy"]) > 1e-9
    ]
    seenn1 = [r for r in result.results if r.family == "seenn1"]
    row["seenn1"] = [{"name": r.name, "accuracy": r.accuracy, "steps": r.mean_timesteps} for r in seenn1]
    return row


def best(points: list[dict]) -> dict:
    return max(points, key=lambda p: (p["accuracy"], -p["steps"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--quick", action="store_true", help="a tiny run, for the tests")
    args = parser.parse_args(argv)
    out = wide_console()
    rows = []
    for seed in args.seeds:  # one after another: the machine is shared
        row = one_seed(seed, args.data, args.quick)
        rows.append(row)
        text = "; ".join(
            f"{recipe} best {100 * best(p)['accuracy']:.2f}% at {best(p)['steps']:.2f} steps"
            for recipe, p in row["recipes"].items()
        )
        differs = (
            f" (re-trained new recipe differs from the fit at β = {row['differs_from_fit']})" if row["differs_from_fit"] else ""
        )
        out.print(f"seed {seed}: System 1 {100 * row['s1']:.2f}%; {text}{differs}")
    s1 = [r["s1"] for r in rows]
    out.print(f"System 1 (full T): {mean_interval(s1).format(2, 100)} %")
    for recipe in ("new", "old"):
        picks = [best(r["recipes"][recipe]) for r in rows]
        acc = [p["accuracy"] for p in picks]
        gap = paired_difference(acc, s1)
        train_reward = [sum(p["reward_train"] for p in r["recipes"][recipe]) / len(r["recipes"][recipe]) for r in rows]
        test_reward = [sum(p["reward_test"] for p in r["recipes"][recipe]) / len(r["recipes"][recipe]) for r in rows]
        out.print(
            f"SEENN-II {recipe} recipe, most accurate point: {mean_interval(acc).format(2, 100)} % "
            f"({gap.format(2, 100, signed=True)} pt against System 1, paired) at "
            f"{mean_interval([p['steps'] for p in picks]).format(2)} steps, {mean_interval([p['uj'] for p in picks]).format(4)} µJ; "
            f"greedy reward (mean over β) on its training inputs {mean_interval(train_reward).format(3)}, "
            f"on the test split {mean_interval(test_reward).format(3)}"
        )
    new = [best(r["recipes"]["new"])["accuracy"] for r in rows]
    old = [best(r["recipes"]["old"])["accuracy"] for r in rows]
    out.print(f"new − old, most accurate point: {paired_difference(new, old).format(2, 100, signed=True)} pt")
    # SEENN-I at no more steps than the new recipe's most accurate point, on the same seed.
    gaps = []
    for r in rows:
        pick = best(r["recipes"]["new"])
        rivals = [p for p in r["seenn1"] if p["steps"] <= pick["steps"] + 1e-9]
        if rivals:
            gaps.append(pick["accuracy"] - max(p["accuracy"] for p in rivals))
    if gaps:
        out.print(
            f"SEENN-II new (most accurate) − the most accurate SEENN-I point with no more mean steps: "
            f"{mean_interval(gaps).format(2, 100, signed=True)} pt over {len(gaps)} seeds"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
