"""The chunk planner: each chunk's length from the chunks' measured cost and the stops seen so far."""

import pytest
import torch

from fastslow.policies import Seenn1
from fastslow.serving import FastSlow
from fastslow.serving.chunks import EXPLORE_EVERY, ChunkPlanner
from fastslow.systems.system1 import doubling_chunks


def _every_plan(left: int) -> list[list[int]]:
    return [[]] if left == 0 else [[first, *rest] for first in range(1, left + 1) for rest in _every_plan(left - first)]


def _taught(timesteps: int, fixed_s: float, per_input_s: list[float], stops: list[int]) -> ChunkPlanner:
    """A planner that has timed chunks of every shape costing exactly ``fixed_s`` plus, for each of
    their steps t, ``per_input_s[t - 1]`` per input, and seen one batch stop after ``stops``."""
    planner = ChunkPlanner(timesteps, window=256)
    for done in range(timesteps):
        for steps in range(1, timesteps - done + 1):
            for inputs in (16, 100):
                planner.record_chunk(done, steps, inputs, fixed_s + inputs * sum(per_input_s[done : done + steps]))
    for _ in range(3):  # doubling chunks timed (slow): the model's plans are worth trying
        planner.record_batch(doubling_chunks(timesteps), 128, 1.0)
    planner.record_stops(torch.tensor(stops))
    return planner


def test_it_advances_in_doubling_chunks_until_it_has_a_cost_stops_and_their_timings():
    planner = ChunkPlanner(8)
    assert planner.plan(128) == doubling_chunks(8) == [1, 1, 2, 4] and planner.cost is None
    planner.record_chunk(0, 1, 128, 1e-3)
    planner.record_stops(torch.tensor([2, 3]))
    assert planner.plan(128) == [1, 1, 2, 4] and planner.cost is None  # one timing: no cost yet


def test_the_fitted_cost_is_each_steps_cost_per_input_whatever_one_outlier():
    per_input = [1e-7, 5e-7, 2e-6, 2e-6, 3e-6, 3e-6, 4e-6, 4e-6]
    planner = _taught(8, 3e-4, per_input, [8])
    planner.record_chunk(2, 2, 50, 0.05)  # a descheduled chunk
    planner._new_timings = 8  # refit now
    planner.record_stops(torch.tensor([8]))
    fixed, fitted = planner.cost
    assert fixed == pytest.approx(3e-4, rel=1e-6) and fitted == pytest.approx(per_input, rel=1e-6)


def test_steps_only_timed_together_share_their_cost():
    planner = ChunkPlanner(8)
    for inputs in (128, 64, 32, 100, 50):  # doubling chunks only: steps 3–4 and 5–8 always together
        for done, steps in ((0, 1), (1, 1), (2, 2), (4, 4)):
            planner.record_chunk(done, steps, inputs, 2e-4 + inputs * steps * 1e-6)
    planner.record_stops(torch.tensor([4, 8]))
    fixed, fitted = planner.cost
    assert fixed == pytest.approx(2e-4, rel=1e-6) and fitted == pytest.approx([1e-6] * 8, rel=1e-6)


def test_the_plan_minimises_the_expected_time_of_a_batch():
    # Half the inputs stop after step 1, a quarter after 2, a quarter after 4 (mean T/4).
    stops = [1] * 64 + [2] * 32 + [4] * 32
    flat = [1e-6] * 8
    # Free calls: a chunk after each step at which inputs stop.
    assert _taught(8, 0.0, flat, stops).plan(128)[:2] == [1, 1]
    # Calls that cost as much as the whole batch's arithmetic: one chunk, through the last stop.
    assert _taught(8, 1.0, flat, stops).plan(128)[0] == 4
    # In between, exactly the lengths that cost least, checked against every way to cut 8 steps,
    # with steps whose cost per input differs (a nearly free first step).
    fixed, per_input = 3e-4, [1e-8, 1e-6, 3e-6, 3e-6, 3e-6, 3e-6, 3e-6, 3e-6]
    running = [128, 64, 32, 32, 0, 0, 0, 0]  # inputs entering steps 1..8

    def expected(chunks):
        total, done = 0.0, 0
        for length in chunks:
            if running[done]:  # once every input stopped, no more chunks run
                total += fixed + running[done] * sum(per_input[done : done + length])
            done += length
        return total

    chosen = _taught(8, fixed, per_input, stops).plan(128)
    assert sum(chosen) == 8 and expected(chosen) == pytest.approx(min(map(expected, _every_plan(8))), rel=1e-9)


def test_it_follows_the_stops_of_the_batches_it_serves():
    planner = _taught(8, 3e-4, [3e-6] * 8, [2] * 128)  # everyone stops after step 2: one chunk of 2, then the rest at once
    assert planner.plan(128)[0] == 2
    planner.memory = 0.0  # forget: now nobody stops before T
    for _ in range(4):  # the plan is worked out again every few batches
        planner.record_stops(torch.full((128,), 8))
    assert planner.plan(128) == [8]


@pytest.mark.parametrize("faster", ["model", "doubling"])
def test_whole_batch_timings_decide_between_the_models_plan_and_doubling(faster):
    planner = _taught(8, 3e-4, [3e-6] * 8, [8] * 128)  # the model's plan: one chunk of all steps
    planner._batch_times.clear()
    for _ in range(3):
        planner.record_batch(doubling_chunks(8), 128, 2e-3)
    seconds = {(8,): 1e-3 if faster == "model" else 3e-3, (1, 1, 2, 4): 2e-3}
    served = []
    for _ in range(2 * EXPLORE_EVERY):
        chunks = planner.plan(128)
        served.append(tuple(chunks))
        planner.record_batch(chunks, 128, seconds[tuple(chunks)])
        planner.record_stops(torch.full((128,), 8))
    assert served[:3] == [(8,)] * 3  # the model's plan tried three times (doubling was timed before)
    best, other = ((8,), (1, 1, 2, 4)) if faster == "model" else ((1, 1, 2, 4), (8,))
    assert served[3:].count(other) == 2 and served[3:].count(best) == len(served) - 5  # the slower one now and then


def test_a_plan_expected_to_gain_too_little_is_not_tried():
    planner = _taught(8, 1e-8, [3e-6] * 8, [8] * 128)  # one chunk would save three calls of 10 ns: nothing
    assert planner.plan(128) == doubling_chunks(8)
    assert _taught(8, 3e-4, [3e-6] * 8, [8] * 128).plan(128) == [8]  # three calls of 0.3 ms: worth a try


def test_long_runs_plan_over_powers_of_two_beyond_the_exhaustive_search():
    planner = ChunkPlanner(100)
    for done, steps in ((0, 1), (1, 1), (2, 2), (4, 4), (8, 8), (16, 16), (32, 32), (64, 36)):
        for inputs in (256, 100, 40):
            planner.record_chunk(done, steps, inputs, 3e-4 + 3e-6 * inputs * steps)
    for _ in range(3):
        planner.record_batch(doubling_chunks(100), 256, 1.0)
    planner.record_stops(torch.arange(1, 101))
    chunks = planner.plan(256)
    assert sum(chunks) == 100 and chunks != doubling_chunks(100)


@pytest.mark.parametrize("bad", [{"timesteps": 0}, {"timesteps": 8, "window": 1}, {"timesteps": 8, "memory": 1.5}])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError):
        ChunkPlanner(**bad)


def _systems_whose_inputs_stop_at_many_steps():
    """An untrained conv System 1 (T = 8; served in chunks: a direct-encoded MLP is served in one
    compiled call), its head scaled so that SEENN-I at θ = 0.6 stops inputs after steps 2 to 7, and a
    System 2."""
    from fastslow.systems import System1, System1Spec, System2Spec, build_system2

    torch.manual_seed(1)
    system1 = System1(
        System1Spec(
            input_shape=(1, 10, 10), n_classes=5, arch="conv", conv_channels=(4,), hidden=(), timesteps=8, encoding="direct"
        )
    ).eval()
    with torch.no_grad():
        system1.heads[-1].weight.mul_(4.0)
    return system1, build_system2(System2Spec(input_shape=(1, 10, 10), n_classes=5)).eval()


def test_serving_answers_the_same_whatever_the_plan():
    """Adaptive chunks, doubling chunks and the records give the same answers, timesteps and µJ, on
    batches served while the planner learns (its plans change between them)."""
    system1, system2 = _systems_whose_inputs_stop_at_many_steps()
    adaptive = FastSlow(system1, system2, Seenn1(0.6, escalate=True), s2_macs=1000, compaction=True)
    doubling = FastSlow(system1, system2, Seenn1(0.6, escalate=True), s2_macs=1000, compaction=True, chunking="doubling")
    records = FastSlow(system1, system2, Seenn1(0.6, escalate=True), s2_macs=1000, compaction=False)
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
        FastSlow(system1, torch.nn.Linear(16, 2), Seenn1(0.9, escalate=True), s2_macs=10, chunking="halving")


def test_one_server_answers_the_same_from_several_threads():
    from concurrent.futures import ThreadPoolExecutor

    system1, system2 = _systems_whose_inputs_stop_at_many_steps()
    server = FastSlow(system1, system2, Seenn1(0.6, escalate=True), s2_macs=1000, compaction=True)
    batches = [torch.rand(40, 1, 10, 10, generator=torch.Generator().manual_seed(seed)) for seed in range(12)]
    alone = [
        FastSlow(system1, system2, Seenn1(0.6, escalate=True), s2_macs=1000, compaction=True, chunking="doubling").predict(x)
        for x in batches
    ]
    with ThreadPoolExecutor(3) as pool:
        shared = list(pool.map(server.predict, batches))
    for one, other in zip(alone, shared):
        assert torch.equal(one.predictions, other.predictions) and torch.equal(one.timesteps, other.timesteps)
    assert server.planner._batches == len(batches)
