"""Benchmark: System 1 at the edge, System 2 behind one `fastslow serve`, under load and a fault.

Loopback only (127.0.0.1), bounded in requests and in time, stops by itself. It starts one
`fastslow serve --port 0` (a subprocess) on a fit (a tiny one fitted into a temporary folder, or
``--dir``), then:

1. **Load**: N edge clients (threads of this process, each with its own ``fastslow.load(DIR,
   s2_url=…)``) answer M inputs each, one input per call, as fast as they can: inputs/s, the p50 /
   p95 / p99 latency of the answers System 2 gave and of those System 1 gave, the service's System 2
   batch sizes (from /metrics), errors (must be 0), and answers equal to a local run's.
2. **Fault**: the clients answer again, one input every ``--interval-ms``; the service is killed
   (SIGKILL) once a third of the inputs are answered, restarted on the same port ``--down-s`` later,
   and the clients run until every one has had an escalation answered by the restarted service (or
   ``--time-limit``). Every input must be answered, in order; the degraded count must equal the
   escalations each client sent between the kill and its first answer from the restarted service
   (the breaker's trial), and none outside that window.

    .venv/bin/python bench/serve_load.py [--clients 8] [--inputs 200] [--dir DIR --strategy NAME]
"""

import argparse
import json
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import console as wide_console  # noqa: E402

# A small fit (digits, direct encoding so answers do not depend on how inputs are batched), with a
# router that escalates about 30% of the inputs.
TINY_FIT = """
policies = ["router"]

[system1]
epochs = 3
timesteps = 4
hidden = [32]
encoding = "direct"
exit_heads = []

[system2]
epochs = 3

[router]
shares = [0.3]
epochs = 60
"""
STARTED = re.compile(r"serving .* on http://127\.0\.0\.1:(\d+) ")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", help="a fit's folder (default: fit a tiny one on digits into a temporary folder)")
    parser.add_argument("--strategy", help="default: the deployable strategy escalating closest to 30%% in results.json")
    parser.add_argument("--clients", type=int, default=8, help="concurrent edge clients (default 8)")
    parser.add_argument("--inputs", type=int, default=200, help="inputs per client in the load phase (default 200)")
    parser.add_argument("--interval-ms", type=float, default=5.0, help="each client's pause between inputs in the fault phase")
    parser.add_argument("--down-s", type=float, default=1.0, help="seconds the service stays killed (default 1)")
    parser.add_argument("--cooldown-s", type=float, default=0.5, help="the clients' circuit-breaker cool-down (default 0.5)")
    parser.add_argument(
        "--fault-cap", type=int, default=20000, help="inputs per client at most in the fault phase (default 20000)"
    )
    parser.add_argument("--time-limit", type=float, default=300.0, help="seconds the whole run may take (default 300)")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="the service's batching wait (default 5)")
    parser.add_argument("--json", help="write the figures to this file")
    return parser


class Service:
    """One `fastslow serve` subprocess on 127.0.0.1."""

    def __init__(self, folder: str, port: int, max_wait_ms: float) -> None:
        self.folder, self.port, self.max_wait_ms, self.proc = folder, port, max_wait_ms, None

    def start(self, deadline: float) -> float:
        """Start it and wait for its ready line; the time it became ready."""
        command = [sys.executable, "-m", "fastslow.cli", "serve", self.folder, "--host", "127.0.0.1", "--port", str(self.port)]
        command += ["--max-wait-ms", str(self.max_wait_ms)]
        source = str(Path(__file__).resolve().parents[1] / "src")  # this checkout's fastslow
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))}
        env.pop("FASTSLOW_API_TOKEN", None)
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in self.proc.stdout], daemon=True).start()
        seen = []
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            seen.append(line)
            if match := STARTED.search(line):
                self.port = int(match.group(1))
                return time.monotonic()
        self.stop()
        raise RuntimeError(f"fastslow serve did not start: {''.join(seen)[-500:]}")

    def kill(self) -> None:
        self.proc.kill()  # no drain: the fault
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metrics(self) -> dict[str, float]:
        """The service's Prometheus samples summed by name (labels dropped)."""
        import httpx
        from prometheus_client.parser import text_string_to_metric_families

        totals: dict[str, float] = {}
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = sample.name + (f"{{le={sample.labels['le']}}}" if "le" in sample.labels else "")
                totals[key] = totals.get(key, 0.0) + sample.value
        return totals


@dataclass
class Record:
    """One input's call: when it started and ended (monotonic s), what answered, the answer."""

    index: int
    start: float
    end: float
    wanted: bool  # the policy escalated it (answered by System 2, or degraded)
    degraded: bool
    answer: int


@dataclass
class Client:
    """An edge client: its own deployment and System 2 client."""

    number: int
    model: object
    records: list[Record] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    calls: int = 0

    def run(self, x: torch.Tensor, strategy: str, count: int, interval_s: float, stop: threading.Event, deadline: float) -> None:
        for i in range(count):
            if stop.is_set() or time.monotonic() > deadline:
                break
            index = (self.number * count + i) % len(x)
            started = time.monotonic()
            self.calls += 1
            try:
                answer = self.model.predict(x[index : index + 1], strategy)
            except Exception as err:  # noqa: BLE001 (every failure is counted, none may happen)
                self.errors.append(f"{type(err).__name__}: {err}")
                continue
            ended = time.monotonic()
            wanted = bool(answer.escalated[0] or answer.degraded[0])
            self.records.append(Record(index, started, ended, wanted, bool(answer.degraded[0]), int(answer.predictions[0])))
            if interval_s:
                time.sleep(interval_s)


def _percentiles(seconds: list[float]) -> dict[str, float | None]:
    if not seconds:
        return {"n": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None}
    ordered = sorted(seconds)
    pick = lambda q: 1000 * ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]  # noqa: E731
    return {"n": len(ordered), "p50_ms": pick(0.50), "p95_ms": pick(0.95), "p99_ms": pick(0.99)}


def _run_clients(clients, x, strategy, count, interval_s, stop, deadline) -> float:
    threads = [threading.Thread(target=c.run, args=(x, strategy, count, interval_s, stop, deadline)) for c in clients]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.monotonic() - started


def _fit(out: Path) -> None:
    from fastslow.cli import main

    config = out.parent / "tiny.toml"
    config.write_text(TINY_FIT)
    if main(["fit", "--data", "digits", "--out", str(out), "--config", str(config), "--device", "cpu", "--quiet"]) != 0:
        raise RuntimeError("the tiny fit failed")


def _strategy(folder: Path, deployable: list[str]) -> str:
    results = json.loads((folder / "results.json").read_text())["strategies"]
    rates = {r["name"]: r["escalation_rate"] for r in results if r["name"] in deployable}
    return min(rates, key=lambda name: (abs(rates[name] - 0.3), name))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    for name in ("clients", "inputs"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name} must be ≥ 1")
    out = wide_console()
    import fastslow
    from fastslow.pipeline import load_fit
    from fastslow.serving import CircuitBreaker

    torch.set_num_threads(1)  # many small calls from threads: one thread each
    deadline = time.monotonic() + args.time_limit
    with tempfile.TemporaryDirectory(prefix="fastslow-serve-load-") as tmp:
        folder = Path(args.dir) if args.dir else Path(tmp) / "fit"
        if not args.dir:
            out.print("fitting a tiny System 1 / System 2 on digits …")
            _fit(folder)
        local = fastslow.load(folder)
        strategy = args.strategy or _strategy(folder, local.strategies)
        x = load_fit(folder).splits.x_test
        service = Service(str(folder), 0, args.max_wait_ms)
        service.start(deadline)
        try:
            figures = _measure(args, out, fastslow, CircuitBreaker, folder, local, strategy, x, service, deadline)
        finally:
            service.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if figures["ok"] else 1


def _clients(fastslow, CircuitBreaker, folder, url, n, cooldown_s) -> list[Client]:
    clients = []
    for number in range(n):
        model = fastslow.load(folder, s2_url=url, s2_timeout=2.0, s2_retries=1)
        model.remote.breaker = CircuitBreaker(failures=2, cooldown_s=cooldown_s)
        model.remote.backoff_s = 0.02
        clients.append(Client(number, model))
    return clients


def _measure(args, out, fastslow, CircuitBreaker, folder, local, strategy, x, service, deadline) -> dict:
    n, m = args.clients, args.inputs
    # The reference: each input answered alone, locally (what a client computes, System 2 included).
    reference = {i: int(local.predict(x[i : i + 1], strategy).predictions[0]) for i in range(min(len(x), n * m))}

    # 1. Load.
    clients = _clients(fastslow, CircuitBreaker, folder, service.url, n, args.cooldown_s)
    before = service.metrics()
    wall = _run_clients(clients, x, strategy, m, 0.0, threading.Event(), deadline)
    after = service.metrics()
    records = [r for c in clients for r in c.records]
    errors = sum(len(c.errors) for c in clients) + int(
        after.get("fastslow_http_errors_total", 0) - before.get("fastslow_http_errors_total", 0)
    )
    passes = after.get("fastslow_system2_batch_size_count", 0) - before.get("fastslow_system2_batch_size_count", 0)
    batched = after.get("fastslow_system2_batch_size_sum", 0) - before.get("fastslow_system2_batch_size_sum", 0)
    singles = after.get("fastslow_system2_batch_size_bucket{le=1.0}", 0) - before.get(
        "fastslow_system2_batch_size_bucket{le=1.0}", 0
    )
    load = {
        "clients": n,
        "inputs": len(records),
        "wall_s": wall,
        "inputs_per_s": len(records) / wall,
        "escalated": sum(r.wanted for r in records),
        "latency_system2": _percentiles([r.end - r.start for r in records if r.wanted and not r.degraded]),
        "latency_system1": _percentiles([r.end - r.start for r in records if not r.wanted]),
        "system2_passes": passes,
        "mean_batch": batched / passes if passes else 0.0,
        "passes_over_one_input": (passes - singles) / passes if passes else 0.0,
        "errors": errors,
        "degraded": sum(r.degraded for r in records),
        "answers_equal_local": all(r.answer == reference[r.index] for r in records if r.index in reference),
    }
    for c in clients:
        c.model.remote.close()

    # 2. Fault: killed once a third of the inputs are answered, restarted --down-s later.
    clients = _clients(fastslow, CircuitBreaker, folder, service.url, n, args.cooldown_s)
    cap = args.fault_cap  # inputs per client at most (the run stops before, once every client recovered)
    stop = threading.Event()
    runner = threading.Thread(target=_run_clients, args=(clients, x, strategy, cap, args.interval_ms / 1000, stop, deadline))
    runner.start()
    third = n * m // 3
    while sum(len(c.records) for c in clients) < third and time.monotonic() < deadline and runner.is_alive():
        time.sleep(0.01)
    killed = time.monotonic()
    service.kill()
    time.sleep(args.down_s)
    ready = service.start(deadline)
    recovered: dict[int, float] = {}
    while time.monotonic() < deadline and runner.is_alive():
        for c in clients:
            first = next((r.start for r in c.records if r.start >= killed and r.wanted and not r.degraded), None)
            if first is not None:
                recovered[c.number] = first
        if len(recovered) == n:
            break
        time.sleep(0.02)
    time.sleep(0.2)  # a little past recovery: answers keep coming from System 2
    stop.set()
    runner.join()
    records = [r for c in clients for r in c.records]

    def while_down(r: Record, client: Client) -> bool:
        """Sent while System 2 was out of reach for ``client``: between the kill and its first escalation
        the restarted service answered. A call in flight at the kill counts if it failed (one the old
        service answered before dying was not sent while down)."""
        overlaps = r.end >= killed and r.start < recovered.get(client.number, float("inf"))
        return overlaps and (r.start >= killed or r.degraded)

    in_window = [r for c in clients for r in c.records if r.wanted and while_down(r, c)]
    outside_degraded = sum(r.degraded for c in clients for r in c.records if not while_down(r, c))
    fault = {
        "inputs": len(records),
        "errors": sum(len(c.errors) for c in clients),
        "every_call_answered": all(len(c.records) == c.calls for c in clients),
        "escalations_while_down": len(in_window),
        "degraded": sum(r.degraded for r in records),
        "degraded_outside_window": outside_degraded,
        "down_s": ready - killed,
        "clients_recovered": len(recovered),
        "recovery_after_restart_ms": _percentiles([recovered[k] - ready for k in recovered]),
        "answers_equal_local_when_not_degraded": all(
            r.answer == reference[r.index] for r in records if not r.degraded and r.index in reference
        ),
    }
    for c in clients:
        c.model.remote.close()
    ok = (
        load["errors"] == 0
        and load["degraded"] == 0
        and load["answers_equal_local"]
        and fault["errors"] == 0
        and fault["every_call_answered"]
        and fault["degraded"] == fault["escalations_while_down"] > 0
        and fault["degraded_outside_window"] == 0
        and fault["clients_recovered"] == n
        and fault["answers_equal_local_when_not_degraded"]
    )
    _print(out, strategy, load, fault, ok)
    return {"strategy": strategy, "load": load, "fault": fault, "ok": ok, "torch": torch.__version__}


def _print(out, strategy, load, fault, ok) -> None:
    from rich.table import Table

    ms = lambda v: "—" if v is None else f"{v:.1f}"  # noqa: E731
    table = Table(title=f"load: {load['clients']} clients × one input per call, strategy {strategy}")
    for column in ("inputs", "inputs/s", "escalated", "S2 p50/p95/p99 ms", "S1 p50/p95/p99 ms", "mean batch", "errors"):
        table.add_column(column, justify="right")
    s2, s1 = load["latency_system2"], load["latency_system1"]
    table.add_row(
        str(load["inputs"]),
        f"{load['inputs_per_s']:.0f}",
        str(load["escalated"]),
        f"{ms(s2['p50_ms'])}/{ms(s2['p95_ms'])}/{ms(s2['p99_ms'])}",
        f"{ms(s1['p50_ms'])}/{ms(s1['p95_ms'])}/{ms(s1['p99_ms'])}",
        f"{load['mean_batch']:.2f} ({100 * load['passes_over_one_input']:.0f}% > 1)",
        str(load["errors"]),
    )
    out.print(table)
    rec = fault["recovery_after_restart_ms"]
    out.print(
        f"fault: {fault['inputs']} inputs answered (errors {fault['errors']}, every call answered {fault['every_call_answered']}); "
        f"service down {fault['down_s']:.2f} s; escalations while down {fault['escalations_while_down']}, "
        f"degraded {fault['degraded']} (outside the window {fault['degraded_outside_window']}); "
        f"{fault['clients_recovered']} clients recovered, {ms(rec['p50_ms'])} ms (median) / {ms(rec['p99_ms'])} ms (max) "
        f"after the restart; answers equal local: load {load['answers_equal_local']}, "
        f"fault {fault['answers_equal_local_when_not_degraded']}"
    )
    out.print("ok" if ok else "FAILED")


if __name__ == "__main__":
    sys.exit(main())
