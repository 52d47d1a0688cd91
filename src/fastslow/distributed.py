"""Data-parallel fits over several processes: torch.distributed, started by its elastic launcher.

The engine is PyTorch's own: ``torch.distributed`` process groups (gloo on CPUs, NCCL on GPUs,
one process per GPU) started by ``torch.distributed.launcher.elastic_launch``, the launcher that
``torchrun`` runs. It is chosen over Lightning Fabric because it adds no dependency and needs no
wrapper around the model: System 1 trains through ``System1.run`` (every step's and exit's
outputs), which a ``DistributedDataParallel`` or Fabric wrapper would not see, so
:func:`fastslow.systems.training.train_classifier` all-reduces the gradients itself, once per
step, weighted so that a step is the one-process step on the same batch.

Two ways in (docs/distributed.md):

- ``fastslow fit --processes N`` (``[runtime] processes = N``): :func:`launch` starts N workers on
  this machine (rendezvous on 127.0.0.1 at a port the OS picks, so no port to choose or find
  busy; no restarts) and returns rank 0's result. A worker's :class:`~fastslow.errors.FastslowError`
  comes back as itself; a crash, a kill or a stuck collective (:data:`COLLECTIVE_TIMEOUT_S`) stops
  the others and raises one :class:`~fastslow.errors.WorkerError`.
- Already started by ``torchrun`` (several GPUs, several machines): :func:`from_torchrun` reads
  the rank from its environment and each process is one rank; nothing more is launched.

Rank 0 alone records outputs, fits the routers, evaluates and writes; the other ranks leave
once both systems are trained.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import shutil
import signal
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from fastslow import runtime
from fastslow.errors import ConfigError, FastslowError, WorkerError

# How long a process waits in one collective (or at the start) for the others: all ranks train in
# lock step, so a longer wait means one is stuck or gone; it then fails instead of hanging.
COLLECTIVE_TIMEOUT_S = 300
# How long the workers may take to start and meet (each imports torch).
JOIN_TIMEOUT_S = 120
# How long a stopped worker has to exit before it is killed.
SHUTDOWN_TIMEOUT_S = 10
# How long a rank that lost a peer waits before it exits: the launcher reports the first exit it
# sees (polling every 0.1 s), and the cause is the peer's, which has already gone.
PEER_LOSS_EXIT_DELAY_S = 1.0
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class World:
    """This process's place in a fit: ``rank`` of ``size`` processes (``local_rank`` of
    ``local_size`` on its machine; the GPU it takes); ``backend`` "gloo" or "nccl" (None: one
    process, no group); ``launcher`` "fastslow" or "torchrun" (None: one process)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None
    launcher: str | None = None
    local_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        """Whether training all-reduces over a process group."""
        return self.backend is not None

    def summary(self) -> dict:
        """What results.json records under ``distributed``."""
        return {"world_size": self.size, "backend": self.backend, "launcher": self.launcher}


def backend_for(device_type: str) -> str:
    """NCCL for CUDA devices, gloo for CPUs."""
    return "nccl" if device_type == "cuda" else "gloo"


def from_torchrun(environ: dict[str, str] | None = None) -> World | None:
    """This process's :class:`World` where ``torchrun`` (or another launcher setting its variables)
    started it; None otherwise. The backend is decided where the device is known."""
    environ = os.environ if environ is None else environ
    if not all(name in environ for name in TORCHRUN_VARIABLES):
        return None
    size = int(environ["WORLD_SIZE"])
    local_size = int(environ.get("LOCAL_WORLD_SIZE", size))
    return World(int(environ["RANK"]), size, int(environ["LOCAL_RANK"]), launcher="torchrun", local_size=local_size)


def check_processes(processes: int, device: str) -> None:
    """Refuse, before anything starts, a count this machine cannot run as one process per core
    (CPUs) or per GPU (``device`` "cuda", or "auto" where CUDA is available)."""
    import torch

    if processes < 1:
        raise ConfigError(f"--processes {processes}: a fit needs at least one process: pass 1 or more")
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if cuda:
        gpus = torch.cuda.device_count()
        if processes > gpus:
            raise ConfigError(
                f"--processes {processes} asks for one process per GPU but {gpus} GPU{'s' if gpus != 1 else ''} "
                f"{'are' if gpus != 1 else 'is'} visible: pass --processes {max(gpus, 1)} or fewer, or --device cpu"
            )
    elif processes > (cpus := runtime.usable_cpus()):
        raise ConfigError(
            f"--processes {processes} is more than the {cpus} CPU{'s' if cpus != 1 else ''} this process may use "
            f"(gloo on CPUs: a process per core): pass --processes {cpus} or fewer"
        )


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s own draws (System 1's spike encoding while training): ``seed`` on
    rank 0, so one process draws as before; others from (seed, rank), so ranks draw apart and a
    given world size repeats."""
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def device_of(world: World, device):
    """The device this rank trains on: ``cuda:LOCAL_RANK`` for CUDA (one process per GPU)."""
    import torch

    if device.type == "cuda" and world.launcher is not None:
        return torch.device("cuda", world.local_rank)
    return device


@contextlib.contextmanager
def process_group(world: World) -> Iterator[None]:
    """Join the process group of ``world`` (from the launcher's environment) for the ``with``
    block, every collective bounded by :data:`COLLECTIVE_TIMEOUT_S`; a no-op for one process."""
    if not world.parallel:
        yield
        return
    import torch
    import torch.distributed as dist

    if world.backend == "nccl":
        torch.cuda.set_device(world.local_rank)
    joined = not dist.is_initialized()  # a torchrun script may have joined already: leave its group to it
    if joined:
        dist.init_process_group(world.backend, timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    try:
        yield
    finally:
        if joined:
            dist.destroy_process_group()


def from_main(world: World, value: Any) -> Any:
    """Rank 0's ``value`` on every rank (a picklable object; ``value`` itself for one process): a
    check only rank 0 can make (its output folder) is then known to all before they train."""
    if not world.parallel:
        return value
    import torch.distributed as dist

    shared = [value]
    dist.broadcast_object_list(shared, src=0)
    return shared[0]


@contextlib.contextmanager
def _launcher_quiet() -> Iterator[None]:
    """The elastic launcher logs each start and stop and replaces the signal handlers and one
    environment variable of the process that calls it: quiet it, and restore them after."""
    # torch's elastic modules give each of their loggers its own level: quiet every one of them.
    names = [name for name in logging.root.manager.loggerDict if name.startswith(("torch.distributed", "torch.multiprocessing"))]
    loggers = [logging.getLogger(name) for name in dict.fromkeys(["torch.distributed", "torch.multiprocessing", *names])]
    levels = [log.level for log in loggers]
    handlers = {}
    for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT"):
        if hasattr(signal, name):
            handlers[getattr(signal, name)] = signal.getsignal(getattr(signal, name))
    variable = os.environ.get("TORCHELASTIC_SIGNALS_TO_HANDLE")
    for log in loggers:
        log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)
        for sig, handler in handlers.items():
            if handler is not None:
                signal.signal(sig, handler)
        if variable is None:
            os.environ.pop("TORCHELASTIC_SIGNALS_TO_HANDLE", None)
        else:
            os.environ["TORCHELASTIC_SIGNALS_TO_HANDLE"] = variable


def launch(entrypoint: Callable[..., Any], args: tuple, processes: int) -> Any:
    """Run ``entrypoint(world, *args)`` on ``processes`` new processes of this machine (a module-level
    function: each worker imports it) and return rank 0's result. A worker's FastslowError is
    raised here as itself; any other failure stops the rest and raises one WorkerError."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=processes,
        run_id=uuid.uuid4().hex,
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",  # the OS picks a free port
        rdzv_configs={"join_timeout": JOIN_TIMEOUT_S},
        max_restarts=0,
        monitor_interval=0.1,
        start_method="spawn",
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
    )
    errors = Path(tempfile.mkdtemp(prefix="fastslow-ranks-"))
    try:
        with _launcher_quiet():
            returned = elastic_launch(config, _rank_main)(str(errors), runtime.wait_policy_owner(), entrypoint, *args)
        return returned[0]
    except ChildFailedError as err:
        raise _failure(err, errors, processes) from None
    except SignalException as err:  # the launcher's handler of SIGINT/SIGTERM, after stopping the workers
        raise KeyboardInterrupt(str(err)) from None
    except RendezvousError as err:  # the workers did not meet within JOIN_TIMEOUT_S
        raise WorkerError(
            f"the {processes} processes did not start and meet ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}): "
            "retry, or fit with --processes 1"
        ) from None
    finally:
        shutil.rmtree(errors, ignore_errors=True)


def _rank_main(errors: str, wait_owner: str | None, entrypoint: Callable[..., Any], *args) -> Any:
    """A worker: its World from the launcher's environment, then ``entrypoint``. A failure is left
    in ``errors`` for the parent and the worker exits non-zero, which stops the others."""
    import torch

    runtime.set_wait_policy_owner(wait_owner)  # the parent's choice, inherited with its environment
    size = int(os.environ["WORLD_SIZE"])
    world = World(int(os.environ["RANK"]), size, int(os.environ["LOCAL_RANK"]), launcher="fastslow", local_size=size)
    try:
        return entrypoint(world, *args)
    except FastslowError as err:
        _leave(errors, world.rank, err)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as err:
        line = str(err).splitlines()[0] if str(err) else ""
        lost = _lost_peers(err, torch)
        if lost:  # a peer left or hung: the cause is the peer's, named by the parent
            what = f"{LOST_PEERS} (a collective failed or timed out)"
        else:  # a defect: its traceback here, one line from the parent
            traceback.print_exc()
            what = "failed"
        _leave(errors, world.rank, WorkerError(f"process {world.rank} {what}: {type(err).__name__}: {line}"))
        if lost:
            time.sleep(PEER_LOSS_EXIT_DELAY_S)
        sys.exit(1)


LOST_PEERS = "lost its peers"
# What gloo raises (as a plain RuntimeError) when the process at the other end of a collective is gone.
_PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "gloo/transport")


def _lost_peers(err: BaseException, torch) -> bool:
    """Whether ``err`` says a collective lost the process at its other end (not this rank's defect)."""
    return isinstance(err, torch.distributed.DistError) or any(mark in str(err) for mark in _PEER_GONE)


def _leave(errors: str, rank: int, err: FastslowError) -> None:
    try:
        (Path(errors) / f"{rank}.pickle").write_bytes(pickle.dumps(err))
    except Exception:  # an error that cannot be pickled is reported by its exit code alone
        pass


def _failure(err, errors: Path, processes: int) -> FastslowError:
    """The one error to raise for a failed launch: the first rank's own FastslowError where one was
    left, else a WorkerError naming the first failure (exit code or signal)."""
    left = {}
    for path in errors.glob("*.pickle"):
        with contextlib.suppress(Exception):
            left[int(path.stem)] = pickle.loads(path.read_bytes())
    user = {rank: e for rank, e in left.items() if not isinstance(e, WorkerError)}
    if user:
        return user[min(user)]
    suffix = "; the others were stopped and nothing was written: fix it, or fit with --processes 1"
    silent = {rank: failure for rank, failure in err.failures.items() if rank not in left}
    if silent:  # died without a word (killed, crashed in native code): the cause; the others' errors follow from it
        rank, failure = min(silent.items())
        how = f"was killed by {failure.signal_name()}" if failure.exitcode < 0 else f"exited with code {failure.exitcode}"
        return WorkerError(f"process {rank} of {processes} {how} before the fit ended{suffix}")
    # A rank that failed on its own is the cause; the ones that then lost it as a peer follow from it.
    own = {rank: e for rank, e in left.items() if LOST_PEERS not in str(e)}
    if own:
        rank = min(own)
        return WorkerError(f"{left[rank]}{suffix}")
    # Only lost peers were left: the cause is a rank that left no word and whose exit the launcher
    # did not record (it reports one failure, the first it sees).
    unheard = [rank for rank in range(processes) if rank not in left and rank not in err.failures]
    if unheard:
        return WorkerError(f"process {unheard[0]} of {processes} ended without a word before the fit ended{suffix}")
    return WorkerError(f"{left[min(left)]}{suffix}")
