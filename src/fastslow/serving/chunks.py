"""How many steps System 1 advances per call when inputs leave the batch as they stop.

Each call (a chunk of steps) costs a fixed time (dispatch, the policy's decisions, compaction)
plus, for each of its steps, a time per input that depends on the step (the first steps' spikes
are sparse, so their synapses cost little). Short chunks let stopped inputs leave sooner; long
chunks pay the fixed cost less often. :class:`ChunkPlanner` fits that cost to the chunks it has
timed (least squares), learns when inputs stop from the batches it has served, and plans each
batch's chunks to minimise its expected time (dynamic programming over the steps, the inputs
expected to enter each step being the share of past inputs that got that far). Until it has both,
it plans doubling chunks (1, 1, 2, 4, …). Real costs are not quite the model's (a long chunk over
many inputs can cost more than its steps apart), so whole batches are timed too: the model only
proposes plans to try, and the plan that timed fastest serves.

The plan changes wall time only: an input that stops inside a chunk is never charged for the
chunk's rest, so answers, timesteps and energies are the same whatever the chunks (tests check).
"""

from __future__ import annotations

import itertools
import statistics
import threading
from collections import deque

import numpy as np
import torch

from fastslow.systems.system1 import doubling_chunks

# Planning looks at every chunk length up to this many remaining steps, and at powers of two (and
# the rest) beyond it: the search is quadratic in the steps.
_EXHAUSTIVE_STEPS = 32
# The cost is refitted once this many chunks were timed since the last fit (a fit takes ~0.1 ms).
_REFIT_TIMINGS = 32
# The model's plan is worked out again every this many batches (and at each refit).
_REPLAN_BATCHES = 4
# Every this many batches, the runner-up plan serves: its timings stay current, and its chunks keep
# the cost fit supplied with shapes the serving plan never runs.
EXPLORE_EVERY = 16
# The model's plan is tried when it is expected to take at least this share less time than the
# serving plan: a smaller gain is within the model's error, and every trial costs three batches.
_TRY_MARGIN = 0.05
# Whole-batch timings kept per plan, and plans kept.
_BATCH_TIMINGS = 8
_PLANS_TIMED = 16


class ChunkPlanner:
    """Plans a batch's chunks from the measured cost of chunks and the stops seen so far.

    ``window``: how many recent chunk timings the cost is fitted to. ``memory``: the weight the
    stops of earlier batches keep each time a batch is recorded (1: never forget). Safe to share
    between threads (one lock; a server's batches then teach it in whatever order they finish)."""

    def __init__(self, timesteps: int, window: int = 64, memory: float = 0.9) -> None:
        if not (isinstance(timesteps, int) and timesteps >= 1):
            raise ValueError(f"timesteps must be an integer ≥ 1, got {timesteps!r}")
        if not (isinstance(window, int) and window >= 2):
            raise ValueError(f"window (chunk timings kept) must be an integer ≥ 2, got {window!r}")
        if not 0.0 <= memory <= 1.0:
            raise ValueError(f"memory must be in [0, 1], got {memory}")
        self.timesteps, self.memory = timesteps, memory
        self._timings: deque[tuple[int, int, int, float]] = deque(maxlen=window)  # (first step, steps, inputs, seconds)
        self._stops = [0.0] * timesteps  # weighted count of inputs that stopped after step t + 1
        self._still = [0.0] * (timesteps + 1)  # still[d]: the (weighted) inputs that ran past step d
        self._cost: tuple[float, list[float]] | None = None
        self._through: list[float] = []  # the cost's seconds per input summed over steps 1..d, at d
        self._new_timings = 0  # timings recorded since the cost was last fitted
        self._batches = 0
        self._doubling = tuple(doubling_chunks(timesteps))
        self._proposed: tuple[int, tuple[int, ...]] | None = None  # (batch size, the model's plan for it)
        self._batch_times: dict[tuple[int, ...], deque[float]] = {}  # plan → its last seconds per input
        self._lock = threading.Lock()

    @property
    def cost(self) -> tuple[float, list[float]] | None:
        """The fitted cost of a chunk: (fixed seconds, [seconds per input at step 1, …, T]), or None
        before enough chunks were timed."""
        return self._cost

    def record_chunk(self, done: int, steps: int, inputs: int, seconds: float) -> None:
        """A chunk of ``steps`` steps from ``done`` steps in, over ``inputs`` inputs, took ``seconds``
        (its decisions included)."""
        with self._lock:
            self._timings.append((done, steps, inputs, seconds))
            self._new_timings += 1

    def record_stops(self, stopped_after: torch.Tensor) -> None:
        """The steps after which a batch's inputs stopped (``[N]``, 1..T); refits the cost once
        enough new chunks were timed."""
        counts = torch.bincount(stopped_after.long().flatten(), minlength=self.timesteps + 1).tolist()[1 : self.timesteps + 1]
        with self._lock:
            self._record_stops(counts)

    def _record_stops(self, counts: list[int]) -> None:
        self._stops = [self.memory * old + new for old, new in zip(self._stops, counts)]
        still, total = [0.0] * (self.timesteps + 1), 0.0
        for d in range(self.timesteps - 1, -1, -1):
            total += self._stops[d]
            still[d] = total
        self._still = still
        self._batches += 1
        if self._batches % _REPLAN_BATCHES == 0:
            self._proposed = None
        if self._cost is None or self._new_timings >= _REFIT_TIMINGS:
            self._cost, self._new_timings, self._proposed = self._fit(), 0, None
            if self._cost is not None:
                self._through = [0.0, *itertools.accumulate(self._cost[1])]

    def _fit(self) -> tuple[float, list[float]] | None:
        """Least squares of each chunk's seconds on a fixed cost plus its inputs at each of its steps,
        refitted without the timings more than three median deviations off (a descheduled thread's
        chunk says nothing of the cost). Steps only ever timed together (those of one doubling
        chunk) share their cost evenly: the minimum-norm solution, on columns scaled alike."""
        if len(self._timings) < 3:
            return self._cost
        done, steps, inputs, seconds = np.array(self._timings, dtype=np.float64).T
        step = np.arange(1, self.timesteps + 1)
        in_chunk = (step > done[:, None]) & (step <= (done + steps)[:, None])
        features = np.concatenate([np.ones((len(seconds), 1)), in_chunk * inputs[:, None]], axis=1)
        scale = np.sqrt((features**2).mean(0))
        scale[scale == 0] = 1.0  # steps never timed: no information, cost 0 from the minimum norm
        solve = lambda rows: np.linalg.lstsq(features[rows] / scale, seconds[rows], rcond=None)[0] / scale  # noqa: E731
        solution = solve(slice(None))
        residuals = np.abs(features @ solution - seconds)
        kept = residuals <= 3.0 * np.median(residuals)
        if 3 <= kept.sum() < len(kept):
            solution = solve(kept)
        fixed, per_input = float(solution[0]), solution[1:]
        # Costs too small to measure still grow with the work: never free, never negative.
        return max(fixed, 0.0), [max(float(value), 1e-12) for value in per_input]

    def plan(self, inputs: int) -> list[int]:
        """The chunk lengths (steps, summing to T) for a batch of ``inputs`` inputs.

        Doubling chunks until a cost and some stops are known. Then measurements decide, the model
        proposes: whole batches are timed, and the plan with the least median seconds per input
        over its last :data:`_BATCH_TIMINGS` batches serves (the runner-up every
        :data:`EXPLORE_EVERY`-th batch, so that its timings stay current). The model's plan (the
        chunks that minimise the batch's expected seconds, were its inputs to stop as the past ones
        did) is tried, three batches, when it is untimed and expected to beat the serving plan by
        :data:`_TRY_MARGIN`: the model is a guide, not the truth (a long chunk over many inputs can
        cost more than its steps taken apart, as caches overflow)."""
        with self._lock:
            return list(self._plan(inputs))

    def _plan(self, inputs: int) -> tuple[int, ...]:
        doubling = self._doubling
        if self._cost is None or self._still[0] <= 0 or len(self._batch_times.get(doubling, ())) < 3:
            return doubling  # doubling is timed first: the yardstick
        # The model's plan is worked out again every few batches, when the cost is refitted or when
        # the batch size changes, so that most batches pay for no planning at all.
        if self._proposed is None or self._proposed[0] != inputs:
            self._proposed = inputs, tuple(self._best_plan(inputs))
        proposed = self._proposed[1]
        ranked = sorted(
            (plan for plan, times in self._batch_times.items() if len(times) >= 3),
            key=lambda plan: statistics.median(self._batch_times[plan]),
        )
        serving = ranked[0]
        trying = len(self._batch_times.get(proposed, ())) < 3
        if trying and self._expected(proposed, inputs) < (1.0 - _TRY_MARGIN) * self._expected(serving, inputs):
            return proposed
        if len(ranked) > 1 and self._batches % EXPLORE_EVERY == EXPLORE_EVERY - 1:
            return ranked[1]
        return serving

    def _expected(self, chunks: tuple[int, ...], inputs: int) -> float:
        """The model's expected seconds for a batch of ``inputs`` in ``chunks``."""
        total, done = 0.0, 0
        for length in chunks:
            total += self._chunk_seconds(inputs * self._still[done] / self._still[0], done, length)
            done += length
        return total

    def _chunk_seconds(self, entering: float, done: int, length: int) -> float:
        """The model's seconds for a chunk of ``length`` steps from ``done`` steps in that ``entering``
        inputs enter (none: the batch is over, no chunk runs)."""
        if entering <= 0:
            return 0.0
        fixed, _ = self._cost
        return fixed + entering * (self._through[done + length] - self._through[done])

    def record_batch(self, chunks: list[int], inputs: int, seconds: float) -> None:
        """A batch of ``inputs`` inputs took ``seconds`` to advance through ``chunks`` (their decisions included)."""
        key = tuple(chunks)
        with self._lock:
            if key not in self._batch_times and len(self._batch_times) >= _PLANS_TIMED:
                del self._batch_times[next(iter(self._batch_times))]  # the plan timed least recently first
            times = self._batch_times.pop(key, None) or deque(maxlen=_BATCH_TIMINGS)
            times.append(seconds / max(inputs, 1))
            self._batch_times[key] = times

    def _best_plan(self, inputs: int) -> list[int]:
        steps = self.timesteps
        # Backwards over the steps: best[d], the least expected seconds to finish from d steps in,
        # with the inputs expected to enter step d + 1 (the share of the past inputs that ran past
        # step d). Plain floats: for a few steps, numpy's per-call cost would exceed the arithmetic.
        scale = inputs / self._still[0]
        best, first = [0.0] * (steps + 1), [1] * (steps + 1)
        for d in range(steps - 1, -1, -1):
            left, entering = steps - d, scale * self._still[d]
            if entering <= 0:  # nobody is expected to get this far: no more chunks
                best[d], first[d] = 0.0, left
                continue
            lengths = range(1, left + 1) if left <= _EXHAUSTIVE_STEPS else {*(2**k for k in range(left.bit_length())), left}
            best[d], first[d] = min((self._chunk_seconds(entering, d, length) + best[d + length], length) for length in lengths)
        chunks, done = [], 0
        while done < steps:
            chunks.append(first[done])
            done += first[done]
        return chunks
