"""The thread policy: how many threads fastslow's CPU work runs on, and how idle threads wait.

torch's intra-op pool (OpenMP; MKL and oneDNN run inside it), numba's parallel kernels (their own
OpenMP runtime) and numpy's BLAS each default to a thread per core, and OpenMP threads busy-wait
(spin) for a few milliseconds before sleeping. Alone that costs little; beside another
multi-threaded process on the same cores it is what made a fit slow: a parallel region ends only
when every thread of the team has run its share, a thread that lost its core holds the others
spinning, and the spinning threads take cores from the thread they wait for and from the other
process. A fit is many small operations (small networks, routers trained on a few hundred
records), each a parallel region too small to gain from a second thread.

So:

- ``threads = "auto"`` (the default) runs torch, numba and BLAS on :data:`AUTO_THREADS` thread;
  ``OMP_NUM_THREADS``, when the user set it, is taken instead; ``threads = N`` (config key
  ``[runtime] threads``, ``fastslow fit --threads N``) takes N. A fit repeats bit for bit for a
  given count (the same command, seed and commit; tests check it). Another count splits torch's
  reductions differently: the float rounding differs, training carries the difference on, and the
  trained systems differ like two seeds' (a few test inputs either way), so compare runs at one
  count (results.json records it under ``runtime``).
- :func:`prepare_process` (the command line calls it before torch loads) sets
  ``OMP_WAIT_POLICY=PASSIVE`` unless the user set a wait policy (``OMP_WAIT_POLICY``,
  ``GOMP_SPINCOUNT`` or ``KMP_BLOCKTIME``): with N > 1 threads, waiting threads then sleep at once.
  OpenMP reads it only when it loads, so from Python set it before importing torch.
- :func:`apply_threads` sets the counts; :func:`thread_settings` says what ran (results.json
  records it under ``runtime``).
- A fit over P processes (``[runtime] processes``, :mod:`fastslow.distributed`) shares the count:
  the threads resolved above are the fit's, and each process runs ``max(1, threads // P)`` of them
  (``thread_settings``: ``processes`` and ``per_process``), so P processes on P cores do not take
  P times the cores.

numba's kernels follow torch's count on each calling thread (:mod:`fastslow.spiking.backends`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

# One thread: every part of a default fit is too small to gain from a second one, and one thread
# cannot hold another waiting (bench/oversubscription.py measures it alone and beside other work).
AUTO_THREADS = 1
# Variables that choose how idle OpenMP threads wait (libgomp, Intel's and LLVM's runtimes).
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")

Threads = Literal["auto"] | int

# Who chose the OpenMP wait policy, for thread_settings: "fastslow" (prepare_process set it), "user"
# (a wait variable was set before), None (nobody: the runtime's default, spinning a few milliseconds).
_wait_policy_set_by: str | None = None


def prepare_process(environ: dict[str, str] | None = None) -> str:
    """Before torch or numba load: make idle OpenMP threads sleep at once (``OMP_WAIT_POLICY=PASSIVE``)
    unless the user chose a wait policy. Returns who chose it: "fastslow", "user", or "too late"
    (torch was already loaded, so its OpenMP runtime keeps the policy it read at load)."""
    global _wait_policy_set_by
    environ = os.environ if environ is None else environ
    if any(name in environ for name in WAIT_VARIABLES):
        _wait_policy_set_by = "user"
        return "user"
    if "torch" in sys.modules:
        return "too late"
    environ["OMP_WAIT_POLICY"] = "PASSIVE"
    _wait_policy_set_by = "fastslow"
    return "fastslow"


def wait_policy_owner() -> str | None:
    """Who chose the OpenMP wait policy in this process (see :func:`prepare_process`)."""
    return _wait_policy_set_by


def set_wait_policy_owner(owner: str | None) -> None:
    """Record who chose the wait policy, for a process started with its parent's environment."""
    global _wait_policy_set_by
    _wait_policy_set_by = owner


def resolve_threads(requested: Threads, environ: dict[str, str] | None = None) -> tuple[int, str]:
    """(threads, where the count came from) for ``requested``: N itself ("given", by ``--threads``
    or the config); for "auto", ``OMP_NUM_THREADS`` where the user set it to a count
    ("OMP_NUM_THREADS"), else :data:`AUTO_THREADS` ("auto")."""
    if requested != "auto":
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise ValueError(f'threads must be "auto" or a whole number ≥ 1, got {requested!r}')
        return requested, "given"
    environ = os.environ if environ is None else environ
    # OpenMP's form is a list per nesting level ("4,2"); the first is the count of the outer team.
    first = environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if first.isdigit() and int(first) >= 1:
        return int(first), "OMP_NUM_THREADS"
    return AUTO_THREADS, "auto"


_applied: dict = {}


def apply_threads(requested: Threads = "auto") -> dict:
    """Run torch's intra-op pool, numba's kernels (they follow torch) and numpy's BLAS on the
    threads :func:`resolve_threads` gives, for the rest of the process; returns :func:`thread_settings`."""
    _set_threads(requested)
    return thread_settings()


@contextmanager
def thread_policy(requested: Threads = "auto", processes: int = 1) -> Iterator[dict]:
    """:func:`apply_threads` for the ``with`` block (a fit), the previous counts restored after it;
    yields :func:`thread_settings`. ``processes``: this process is one of that many sharing the
    count (:func:`per_process`)."""
    import torch

    before, before_applied = torch.get_num_threads(), dict(_applied)
    blas = _set_threads(requested, processes)
    try:
        yield thread_settings()
    finally:
        if blas is not None:
            blas.restore_original_limits()
        torch.set_num_threads(before)
        _applied.clear()
        _applied.update(before_applied)


def per_process(threads: int, processes: int) -> int:
    """Each of ``processes`` processes' share of a fit's ``threads``: ``max(1, threads // processes)``."""
    return max(1, threads // processes)


def _set_threads(requested: Threads, processes: int = 1):
    """Set the counts; returns the BLAS limits (to restore them), None without threadpoolctl."""
    import torch

    total, source = resolve_threads(requested)
    threads = per_process(total, processes)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    _applied.update(requested=requested, source=source, processes=processes, per_process=threads)
    try:  # numpy's and scipy's BLAS (OpenBLAS here) keep pools of their own
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn brings threadpoolctl
        return None
    return threadpool_limits(threads, user_api="blas")


def thread_settings() -> dict:
    """The thread counts and wait policy in force: ``requested`` ("auto" or N, None before
    :func:`apply_threads`), ``source`` of the count, torch's ``intra_op`` and ``interop`` counts
    (fastslow starts no inter-op work), ``numba`` (its kernels' count: torch's, at most
    ``NUMBA_NUM_THREADS``; None where numba is not loaded), ``cpus`` this process may use, ``processes``
    sharing the count and each one's share ``per_process``, and ``openmp_wait``: the wait variables set and
    who set them."""
    import torch

    intra_op = torch.get_num_threads()
    numba = sys.modules.get("numba")  # None: no numba kernel ran in this process
    numba_threads = None if numba is None else min(intra_op, numba.config.NUMBA_NUM_THREADS)
    waits = {name: os.environ[name] for name in WAIT_VARIABLES if name in os.environ}
    set_by = _wait_policy_set_by or ("user" if waits else None)
    return {
        "requested": _applied.get("requested"),
        "source": _applied.get("source"),
        "intra_op": intra_op,
        "interop": torch.get_num_interop_threads(),
        "numba": numba_threads,
        "cpus": usable_cpus(),
        "processes": _applied.get("processes", 1),
        "per_process": _applied.get("per_process"),
        "openmp_wait": {"variables": waits, "set_by": set_by},
    }


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1
