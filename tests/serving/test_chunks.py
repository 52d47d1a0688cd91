"""The chunk planner: each chunk's length from the chunks' measured cost and the stops seen so far."""

import pytest
import torch

from fastslow.serving import FastSlow
from fastslow.serving.chunks import ChunkPlanner
from fastslow.systems.system1 import doubling_chunks


def _taught(timesteps: int, fixed_s: float, per_input_step_s: float, stops: list[int]) -> ChunkPlanner:
    """A planner that has timed chunks costing exactly ``fixed_s + per_input_step_s × inputs × steps``
    and seen a batch stop after ``stops``."""
    planner = ChunkPlanner(timesteps)
    for inputs, steps in [(128, 1), (64, 1), (32, 2), (16, 4), (100, 3)]:
        planner.record_chunk(inputs, steps, fixed_s + per_input_step_s * inputs * steps)
    planner.record_stops(torch.tensor(stops))
    return planner


def test_it_advances_in_doubling_chunks_until_it_has_a_cost_and_stops():
    planner = ChunkPlanner(8)
    assert planner.plan(128) == doubling_chunks(8) == [1, 1, 2, 4] and planner.cost is None
    planner.record_chunk(128, 1, 1e-3)
    planner.record_stops(torch.tensor([2, 3]))
    assert planner.plan(128) == [1, 1, 2, 4] and planner.cost is None  # one chunk size: no line yet


def test_the_fitted_cost_is_the_line_through_the_chunk_times_whatever_one_outlier():
    planner = ChunkPlanner(8)
    for work in range(1, 30):
        planner.record_chunk(work, 1, 3e-4 + 2e-6 * work)
    planner.record_chunk(10, 1, 0.05)  # a descheduled chunk
    planner.record_stops(torch.tensor([8]))
    fixed, per_step = planner.cost
    assert fixed == pytest.approx(3e-4, rel=1e-6) and per_step == pytest.approx(2e-6, rel=1e-6)


def test_the_plan_minimises_the_expected_time_of_a_batch():
    # Half the inputs stop after step 1, a quarter after 2, a quarter after 4 (mean T/4).
    stops = [1] * 64 + [2] * 32 + [4] * 32
    # Free calls: a chunk per step until everyone stopped, then nothing is left to save.
    assert _taught(8, 0.0, 1e-6, stops).plan(128)[:4] == [1, 1, 1, 1]
    # Calls that cost as much as the whole batch's arithmetic: one chunk of all steps.
    assert _taught(8, 1.0, 1e-6, stops).plan(128) == [8]
    # In between, exactly the lengths that cost least, checked against every way to cut 8 steps.
    fixed, per_step = 3e-4, 3e-6
    running = [128, 64, 32, 32, 0, 0, 0, 0]  # inputs entering steps 1..8

    def expected(chunks):
        total, done = 0.0, 0
        for length in chunks:
            total += fixed + per_step * running[done] * length
            done += length
        return total

    def every_plan(left):
        return [[]] if left == 0 else [[first, *rest] for first in range(1, left + 1) for rest in every_plan(left - first)]

    chosen = _taught(8, fixed, per_step, stops).plan(128)
    assert sum(chosen) == 8 and expected(chosen) == pytest.approx(min(map(expected, every_plan(8))), rel=1e-9)


def test_it_follows_the_stops_of_the_batches_it_serves():
    planner = _taught(8, 3e-4, 3e-6, [2] * 128)  # everyone stops after step 2: one chunk of 2, then the rest at once
    assert planner.plan(128)[0] == 2
    planner.memory = 0.0  # forget: now nobody stops before T
    planner.record_stops(torch.full((128,), 8))
    assert planner.plan(128) == [8]


def test_long_runs_plan_over_powers_of_two_beyond_the_exhaustive_search():
    planner = _taught(100, 3e-4, 3e-6, list(range(1, 101)))
    chunks = planner.plan(256)
    assert sum(chunks) == 100 and all(length >= 1 for length in chunks)


@pytest.mark.parametrize("bad", [{"timesteps": 0}, {"timesteps": 8, "window": 1}, {"timesteps": 8, "memory": 1.5}])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError):
        ChunkPlanner(**bad)


def test_serving_answers_the_same_whatever_the_plan():
    """Adaptive chunks, doubling chunks and the records give the same answers, timesteps and µJ, on
    batches served while the planner learns (its plans change between them)."""
    from fastslow.systems import System1, System1Spec, System2Spec, build_system2

    torch.manual_seed(1)
    system1 = System1(System1Spec(input_shape=(1, 10, 10), n_classes=5, hidden=(32,), timesteps=8, encoding="direct")).eval()
    with torch.no_grad():  # untrained, scaled so that inputs stop after steps 2 to 8
        system1.heads[-1].weight.mul_(8.0)
    system2 = build_system2(System2Spec(input_shape=(1, 10, 10), n_classes=5)).eval()
    adaptive = FastSlow(system1, system2, 1000, threshold=0.6, compaction=True)
    doubling = FastSlow(system1, system2, 1000, threshold=0.6, compaction=True, chunking="doubling")
    records = FastSlow(system1, system2, 1000, threshold=0.6, compaction=False)
    plans = set()
    for batch in range(6):
        x = torch.rand(60, 1, 10, 10, generator=torch.Generator().manual_seed(batch))
        plans.add(tuple(adaptive.planner.plan(len(x))))
        answers = [server.predict(x) for server in (adaptive, doubling, records)]
        assert len(answers[0].timesteps.unique()) >= 3
        for other in answers[1:]:
            for field in ("predictions", "escalated", "timesteps"):
                assert torch.equal(getattr(answers[0], field), getattr(other, field)), field
            torch.testing.assert_close(answers[0].energy_uj, other.energy_uj, rtol=1e-6, atol=0)
    assert len(plans) >= 2 and adaptive.planner.cost is not None


def test_an_unknown_chunking_is_refused():
    from fastslow.systems import System1, System1Spec

    system1 = System1(System1Spec(input_shape=(1, 4, 4), n_classes=2, hidden=(8,), timesteps=4, encoding="direct"))
    with pytest.raises(ValueError, match="chunking must be"):
        FastSlow(system1, torch.nn.Linear(16, 2), 10, chunking="halving")
