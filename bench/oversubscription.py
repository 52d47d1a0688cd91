"""Benchmark: a fit alone and beside another multi-threaded process, before and after the thread policy.

Each round runs `fastslow fit --data digits` (the default config) alone and then beside a competitor:
a torch process multiplying matrices on 2 threads in a loop (`--competitor numba+torch` adds a numba
parallel loop on every core). Two variants, in alternating order from round to round:

- before: the old policy, forced: `--threads <usable CPUs>` and libgomp's default spinning
  (`GOMP_SPINCOUNT=300000`, what it does when no wait policy is set);
- after: the default (`threads = "auto"`, OMP_WAIT_POLICY=PASSIVE set by the command line).

The fits' environment has no OMP_NUM_THREADS, NUMBA_NUM_THREADS or wait variables of the caller's.
Prints each fit's wall and CPU time, the loaded/alone ratio per round, and per variant the median
and spread (min–max) over rounds; the competitor's work rate beside each fit, as a share of its rate
alone, says whether a fit got its time by starving the other process. Bounded: `--budget-s` stops
starting rounds, `--fit-timeout-s` stops a fit (then its ratio is a lower bound, marked ≥).

    .venv/bin/python bench/oversubscription.py [--rounds 4] [--competitor torch|numba+torch] [--tiny] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import console  # noqa: E402

from fastslow.runtime import WAIT_VARIABLES, usable_cpus  # noqa: E402

# Left out of every child's environment, so that each variant says all of its own settings.
CLEARED = ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", *WAIT_VARIABLES)
OLD_SPIN = "300000"  # libgomp's spin count when no wait policy is set (about 3 ms before a thread sleeps)

TORCH_COMPETITOR = """
import signal, sys, time
import torch
torch.set_num_threads({threads})
a, b = torch.randn({size}, {size}), torch.randn({size}, {size})
out = torch.empty({size}, {size})
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
torch.mm(a, b, out=out)
print("ready", flush=True)
count, started = 0, time.perf_counter()
while not stop:
    torch.mm(a, b, out=out)
    count += 1
print(count / (time.perf_counter() - started), flush=True)
"""

NUMBA_COMPETITOR = """
import signal, sys, time
import numba, numpy as np

@numba.njit(parallel=True)
def work(x):
    total = 0.0
    for i in numba.prange(x.shape[0]):
        total += np.sqrt(x[i] * x[i] + 1.0)
    return total

x = np.random.default_rng(0).random(2_000_000)
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
work(x)
print("ready", flush=True)
count, started = 0, time.perf_counter()
while not stop:
    work(x)
    count += 1
print(count / (time.perf_counter() - started), flush=True)
"""

TINY_CONFIG = """
[system1]
epochs = 1
timesteps = 3
hidden = [32, 16]
backend = "torch"

[system2]
epochs = 1

[router]
shares = [0.2]
epochs = 10
exit_shares = [0.2]
exit_epochs = 10
step_shares = [0.1]
step_epochs = 10

[seenn2]
betas = [0.05]
pretrain_epochs = 5
rl_epochs = 5

[ponder]
lambda_ps = [0.5]
epochs = 10

[confidence]
thresholds = [0.5, 0.9]
"""


def variant(name: str, cpus: int) -> tuple[list[str], dict[str, str]]:
    """(extra `fastslow fit` arguments, extra environment) of a variant: "before", "after", or
    "threads=N" (the new policy with N threads)."""
    if name == "before":
        return ["--threads", str(cpus)], {"GOMP_SPINCOUNT": OLD_SPIN}
    if name == "after":
        return [], {}
    count = name.removeprefix("threads=")
    if name.startswith("threads=") and count.isdigit() and int(count) >= 1:
        return ["--threads", count], {}
    raise ValueError(f"unknown variant {name!r}: use before, after or threads=N")


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env.update(extra or {})
    return env


def run_fit(args: list[str], env: dict[str, str], timeout_s: float) -> dict:
    """One `fastslow fit` in a child process: wall and CPU seconds (user + system), whether it finished."""
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        child = subprocess.Popen(
            [sys.executable, "-m", "fastslow.cli", "fit", *args, "--quiet"], env=env, stdout=subprocess.DEVNULL, stderr=errors
        )
        deadline = started + timeout_s
        while True:  # wait4 gives the child's own CPU time
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid or time.perf_counter() > deadline:
                break
            time.sleep(0.05)
        finished = bool(pid)
        if not finished:
            child.kill()
            _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait again
        wall = time.perf_counter() - started
        errors.seek(0)
        error = errors.read().decode(errors="replace").strip()
    if finished and child.returncode != 0:
        raise RuntimeError(f"fit failed ({child.returncode}): {error.splitlines()[-1] if error else ''}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "finished": finished}


class Competitors:
    """The other processes, started before a fit and stopped after it; ``rates`` their work per second."""

    def __init__(self, kind: str, size: int) -> None:
        self.codes = [TORCH_COMPETITOR.format(threads=2, size=size)]
        if kind == "numba+torch":
            self.codes.append(NUMBA_COMPETITOR)
        self.children: list[subprocess.Popen] = []
        self.rates: list[float] = []

    def __enter__(self) -> Competitors:
        env = _clean_env()  # another user's process: default OpenMP settings
        for code in self.codes:
            child = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
            self.children.append(child)
            if child.stdout.readline().strip() != "ready":
                self.__exit__()
                raise RuntimeError("a competitor did not start")
        return self

    def __exit__(self, *_) -> None:
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in self.children:
            out, _ = child.communicate(timeout=60)
            try:
                self.rates.append(float(out.strip().splitlines()[-1]))
            except (ValueError, IndexError):
                self.rates.append(float("nan"))


class Background:
    """CPU seconds that processes other than this benchmark and its children used over a ``with``
    block (from /proc/stat; None where there is none): the noise under a measurement."""

    def __enter__(self) -> Background:
        self.cores = None
        self.start = self._now()
        return self

    def __exit__(self, *_) -> None:
        end = self._now()
        if self.start is not None and end is not None:
            busy, ours, wall = (b - a for a, b in zip(self.start, end))
            self.cores = max(0.0, busy - ours) / wall

    @staticmethod
    def _now() -> tuple[float, float, float] | None:
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        except OSError:
            return None
        ticks = os.sysconf("SC_CLK_TCK")
        busy = sum(int(v) for i, v in enumerate(fields[:8]) if i not in (3, 4)) / ticks  # all but idle, iowait
        ours = sum(
            getattr(resource.getrusage(who), field)
            for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
            for field in ("ru_utime", "ru_stime")
        )
        return busy, ours, time.perf_counter()


def competitor_alone(kind: str, size: int, seconds: float) -> list[float]:
    with Competitors(kind, size) as competitors:
        time.sleep(seconds)
    return competitors.rates


def _cores(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f} cores"


def _spread(values: list[float]) -> str:
    if not values:
        return "—"
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--data", default="digits")
    parser.add_argument("--config", help="a fit config (default: the default config; --tiny: a tiny one)")
    parser.add_argument("--tiny", action="store_true", help="a tiny fit (seconds), for a quick check")
    parser.add_argument("--competitor", choices=["torch", "numba+torch"], default="torch")
    parser.add_argument("--matmul-size", type=int, default=256, help="the torch competitor's square matrices")
    parser.add_argument("--variants", default="before,after", help="comma-separated: before, after, threads=N")
    parser.add_argument("--budget-s", type=float, default=1800.0, help="no round starts after this many seconds")
    parser.add_argument("--fit-timeout-s", type=float, default=300.0)
    parser.add_argument("--json", help="write every measurement here")
    args = parser.parse_args(argv)
    out = console()
    cpus = usable_cpus()
    names = [name.strip() for name in args.variants.split(",")]
    try:
        table_of = {name: variant(name, cpus) for name in names}
    except ValueError as err:
        parser.error(str(err))
    window = 0.5 if args.tiny else 3.0
    with tempfile.TemporaryDirectory(prefix="fastslow-oversubscription-") as folder:
        work = Path(folder)
        config = args.config
        if config is None and args.tiny:
            config = str(work / "tiny.toml")
            Path(config).write_text(TINY_CONFIG)
        fit_args = ["--data", args.data, "--out", str(work / "run"), *(["--config", config] if config else [])]
        out.print(
            f"{cpus} usable CPUs; competitor: {args.competitor} (torch {args.matmul_size}² matmuls on 2 threads"
            f"{', numba prange on every core' if args.competitor == 'numba+torch' else ''}); config: {config or 'default'}"
        )
        rows: list[dict] = []
        started, last_round = time.perf_counter(), 0.0
        for r in range(args.rounds):
            if r and time.perf_counter() - started + last_round > args.budget_s:
                out.print(f"budget of {args.budget_s:.0f} s reached after {r} rounds")
                break
            round_started = time.perf_counter()
            alone_rates = competitor_alone(args.competitor, args.matmul_size, window)
            for name in names if r % 2 == 0 else names[::-1]:  # alternate the order: drift hits both alike
                extra_args, extra_env = table_of[name]
                env = _clean_env(extra_env)
                with Background() as quiet:
                    alone = run_fit([*fit_args, *extra_args], env, args.fit_timeout_s)
                with Background() as busy, Competitors(args.competitor, args.matmul_size) as competitors:
                    loaded = run_fit([*fit_args, *extra_args], env, args.fit_timeout_s)
                alone["others_cores"], loaded["others_cores"] = quiet.cores, busy.cores
                share = [b / a for a, b in zip(alone_rates, competitors.rates) if a > 0]
                rows.append(
                    {
                        "round": r,
                        "variant": name,
                        "alone": alone,
                        "loaded": loaded,
                        "ratio": loaded["wall_s"] / alone["wall_s"],
                        "ratio_is_lower_bound": not loaded["finished"],
                        "competitor_rate_share": share,
                    }
                )
                row = rows[-1]
                out.print(
                    f"round {r} {name:6s}: alone {alone['wall_s']:6.1f} s (CPU {alone['cpu_s']:6.1f}), "
                    f"loaded {loaded['wall_s']:6.1f} s (CPU {loaded['cpu_s']:6.1f}), "
                    f"ratio {'≥' if row['ratio_is_lower_bound'] else ''}{row['ratio']:.2f}, "
                    f"competitor at {', '.join(f'{100 * s:.0f}%' for s in share)} of its rate alone; "
                    f"other processes' load {_cores(quiet.cores)} alone, {_cores(busy.cores)} loaded"
                )
            last_round = time.perf_counter() - round_started
        table = Table(title=f"fit alone and beside {args.competitor}: median (min–max) over rounds")
        columns = ("variant", "rounds", "alone s", "loaded s", "loaded / alone", "CPU alone s", "CPU loaded s", "competitor %")
        for column in (*columns, "others' load (cores)"):
            table.add_column(column, justify="left" if column == "variant" else "right")
        for name in names:
            mine = [row for row in rows if row["variant"] == name]
            shares = [100 * s for row in mine for s in row["competitor_rate_share"]]
            table.add_row(
                name,
                str(len(mine)),
                _spread([row["alone"]["wall_s"] for row in mine]),
                _spread([row["loaded"]["wall_s"] for row in mine]),
                ("≥ " if any(row["ratio_is_lower_bound"] for row in mine) else "") + _spread([row["ratio"] for row in mine]),
                _spread([row["alone"]["cpu_s"] for row in mine]),
                _spread([row["loaded"]["cpu_s"] for row in mine]),
                _spread(shares),
                _spread(
                    [row[k]["others_cores"] for row in mine for k in ("alone", "loaded") if row[k]["others_cores"] is not None]
                ),
            )
        out.print(table)
        if args.json:
            Path(args.json).write_text(
                json.dumps(
                    {"cpus": cpus, "competitor": args.competitor, "config": config, "variants": names, "rows": rows}, indent=1
                )
            )
        return 0


if __name__ == "__main__":
    sys.exit(main())
