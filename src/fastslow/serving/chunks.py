"""How many steps System 1 advances per call when inputs leave the batch as they stop.

Each call (a chunk of steps) costs a fixed time (dispatch, the policy's decisions, compaction)
plus a time per input and step. Short chunks let stopped inputs leave sooner; long chunks pay the
fixed cost less often. :class:`ChunkPlanner` measures both costs on the chunks it sees (a least-
squares line through their times), learns when inputs stop from the batches it has served, and
plans each batch's chunks to minimise its expected time (dynamic programming over the steps, the
inputs expected to enter each step being the share of past inputs that got that far). Until it
has both, it plans doubling chunks (1, 1, 2, 4, …), which also give it chunks of different sizes
to measure.

The plan changes wall time only: an input that stops inside a chunk is never charged for the
chunk's rest, so answers, timesteps and energies are the same whatever the chunks (tests check).
"""

from __future__ import annotations

from collections import deque

import torch

from fastslow.systems.system1 import doubling_chunks

# Planning looks at every chunk length up to this many remaining steps, and at powers of two (and
# the rest) beyond it: the search is quadratic in the steps and runs once per batch.
_EXHAUSTIVE_STEPS = 32
# The cost line is refitted once this many chunks were timed since the last fit (a fit is tens of µs).
_REFIT_TIMINGS = 8


class ChunkPlanner:
    """Plans a batch's chunks from the measured cost of chunks and the stops seen so far.

    ``window``: how many recent chunk timings the cost line is fitted to. ``memory``: the weight
    the stops of earlier batches keep each time a batch is recorded (1: never forget)."""

    def __init__(self, timesteps: int, window: int = 64, memory: float = 0.9) -> None:
        if not (isinstance(timesteps, int) and timesteps >= 1):
            raise ValueError(f"timesteps must be an integer ≥ 1, got {timesteps!r}")
        if not (isinstance(window, int) and window >= 2):
            raise ValueError(f"window (chunk timings kept) must be an integer ≥ 2, got {window!r}")
        if not 0.0 <= memory <= 1.0:
            raise ValueError(f"memory must be in [0, 1], got {memory}")
        self.timesteps, self.memory = timesteps, memory
        self._timings: deque[tuple[int, float]] = deque(maxlen=window)  # (inputs × steps, seconds)
        self._stops = [0.0] * timesteps  # weighted count of inputs that stopped after step t + 1
        self._still = [0.0] * (timesteps + 1)
        self._cost: tuple[float, float] | None = None  # (fixed s, s per input and step)
        self._new_timings = 0  # timings recorded since the cost was last fitted

    @property
    def cost(self) -> tuple[float, float] | None:
        """The fitted cost of a chunk: (fixed seconds, seconds per input and step), or None before
        chunks of at least two different sizes were timed."""
        return self._cost

    def record_chunk(self, inputs: int, steps: int, seconds: float) -> None:
        """A chunk of ``steps`` steps over ``inputs`` inputs took ``seconds`` (its decisions included)."""
        self._timings.append((inputs * steps, seconds))
        self._new_timings += 1

    def record_stops(self, stopped_after: torch.Tensor) -> None:
        """The steps after which a batch's inputs stopped (``[N]``, 1..T); refits the cost line once
        enough new chunks were timed."""
        counts = torch.bincount(stopped_after.long().flatten(), minlength=self.timesteps + 1).tolist()[1 : self.timesteps + 1]
        self._stops = [self.memory * old + new for old, new in zip(self._stops, counts)]
        still, total = [0.0] * (self.timesteps + 1), 0.0  # still[d]: the (weighted) inputs that ran past step d
        for d in range(self.timesteps - 1, -1, -1):
            total += self._stops[d]
            still[d] = total
        self._still = still
        if self._cost is None or self._new_timings >= _REFIT_TIMINGS:
            self._cost, self._new_timings = self._fit(), 0

    def _fit(self) -> tuple[float, float] | None:
        """Least squares of seconds on inputs × steps, refitted without the timings more than three
        median deviations off the line (a descheduled thread's chunk says nothing of the cost).
        Plain floats: on a few dozen timings numpy's per-call cost exceeds the arithmetic."""
        timings = list(self._timings)
        line = _least_squares(timings)
        if line is None:
            return self._cost
        intercept, slope = line
        residuals = [abs(seconds - intercept - slope * work) for work, seconds in timings]
        spread = sorted(residuals)[len(residuals) // 2]
        intercept, slope = _least_squares([t for t, r in zip(timings, residuals) if r <= 3.0 * spread]) or line
        # A per-step cost too small to measure still grows with the work: never free, never negative.
        return max(intercept, 0.0), max(slope, 1e-12)

    def plan(self, inputs: int) -> list[int]:
        """The chunk lengths (steps, summing to T) for a batch of ``inputs`` inputs: those that minimise
        the expected seconds to finish it, were its inputs to stop as the past ones did; doubling
        chunks until a cost and some stops are known."""
        if self._cost is None or self._still[0] <= 0:
            return doubling_chunks(self.timesteps)
        fixed, per_step = self._cost
        # Backwards over the steps: best[d], the least expected seconds to finish from d steps in,
        # with the inputs expected to enter step d + 1 (the share of the past inputs that ran past
        # step d). Plain floats: for a few steps, numpy's per-call cost would exceed the arithmetic.
        scale = inputs / self._still[0]
        steps = self.timesteps
        best, first = [0.0] * (steps + 1), [1] * (steps + 1)
        for d in range(steps - 1, -1, -1):
            left, entering = steps - d, scale * self._still[d]
            lengths = range(1, left + 1) if left <= _EXHAUSTIVE_STEPS else {*(2**k for k in range(left.bit_length())), left}
            best[d], first[d] = min((fixed + per_step * entering * length + best[d + length], length) for length in lengths)
        chunks, done = [], 0
        while done < steps:
            chunks.append(first[done])
            done += first[done]
        return chunks


def _least_squares(timings: list[tuple[int, float]]) -> tuple[float, float] | None:
    """(intercept, slope) of seconds on work, or None with under three timings or a single work size."""
    if len(timings) < 3:
        return None
    mean_work = sum(work for work, _ in timings) / len(timings)
    mean_seconds = sum(seconds for _, seconds in timings) / len(timings)
    spread = sum((work - mean_work) ** 2 for work, _ in timings)
    if spread == 0:
        return None
    slope = sum((work - mean_work) * (seconds - mean_seconds) for work, seconds in timings) / spread
    return mean_seconds - slope * mean_work, slope
