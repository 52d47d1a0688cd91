"""Adaptive inference with compaction: inputs leave the batch once they stop, so wall time falls
with the mean timesteps; only escalated inputs run through System 2.

The policy is SEENN-I with escalation (``seenn1@θ+s2``): after each step an input whose confidence
max softmax(S_t/τ) exceeds θ stops and System 1 answers; inputs still unconfident at T go to System
2. Or it is a trained sequential router (``router@steps``, :class:`~fastslow.policies.step_router.StepRouter`):
after each step it stops, continues or escalates each input. The spike encoder draws for the whole
batch every step and keeps the active rows, so every input sees exactly the spikes of a full run:
answers and energies equal the evaluation's ``seenn1@θ+s2`` or ``router@steps`` (tests check this).

On a CPU, System 1 advances in chunks of steps, each one multi-step call (a call costs a fixed
0.3–0.5 ms of dispatch and decisions, as much as a small batch's arithmetic); each input's stop is
decided for each step from the chunk's records (all of the chunk's steps at once: each input's
first stop), and the inputs that stopped leave the batch before the next chunk (the others advance
their own rows of the state, in place: with the compiled CPU kernels nobody's state is copied).
The chunks are planned from the timings and stops of the batches the server has served
(:mod:`fastslow.serving.chunks`; doubling chunks 1, 1, 2, 4, … until it knows them). An input that
stops inside a chunk is simulated to the chunk's end, never charged for it.

A direct-encoded MLP under SEENN-I on a CPU needs no chunks: one compiled call steps each input
until it is confident or reaches T (:meth:`FastSlow._predict_compiled`), with the same answers.

On a GPU, batches of a few hundred inputs are bound by kernel launches, not arithmetic: stepping
with compaction was 3.3–3.8× slower than one multi-step run of all T steps (an H100 and an H200,
one step per call). There the server runs all T steps at once and reads each input's stop from
the records, as the evaluation does: the same answers, timesteps and energies (energy
always charges the steps each input needed, which is what event-driven hardware would run,
however the simulation computed them).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import nn

from fastslow.data import check_batch
from fastslow.energy.accounting import OpCounts, s1_op_counts
from fastslow.energy.profile import EnergyProfile, load_profile
from fastslow.policies.confidence import confidence_policy_macs
from fastslow.policies.dynamic import seenn1_confidence, seenn1_routing
from fastslow.policies.step_router import CONTINUE, ESCALATE, StepRouter, step_router_features, step_state_features
from fastslow.serving.chunks import ChunkPlanner
from fastslow.spiking import _cpu_kernels, encode_step, is_spiking
from fastslow.systems.cuda_graphs import GraphedSystem1
from fastslow.systems.system1 import System1, doubling_chunks


# How close (absolute) to θ the compiled path's float64 confidence may come before torch's float32 one
# decides: far above their difference (a few float32 roundings of logits, softmax and sum).
CONFIDENCE_MARGIN = 1e-4


@dataclass
class AdaptiveAnswer:
    """Per input [N]: the class, whether System 2 answered, System 1 timesteps run, µJ spent."""

    predictions: torch.Tensor
    escalated: torch.Tensor
    timesteps: torch.Tensor
    energy_uj: torch.Tensor
    energy_terms_uj: dict[str, torch.Tensor]


class FastSlow:
    """System 1 + System 2 + per-step stopping and escalation (SEENN-I, or ``router``), for inference."""

    def __init__(
        self,
        system1: System1,
        system2: nn.Module,
        s2_macs: int,
        *,
        threshold: float = 0.9,
        escalate: bool = True,
        temperature: float = 1.0,
        profile: EnergyProfile | str = "cmos45nm",
        router: StepRouter | None = None,
        compaction: bool | None = None,
        chunking: str = "adaptive",
        cuda_graphs: bool = False,
    ) -> None:
        """``compaction``: advance in chunks of steps with stopped inputs leaving the batch between
        them (True), or run all T steps at once and read the stops from the records (False); None
        picks compaction on a CPU only.
        ``chunking`` (with compaction): ``"adaptive"`` plans each batch's chunks from the timings and
        stops of the batches served so far (:class:`~fastslow.serving.chunks.ChunkPlanner`, kept as
        ``self.planner``); ``"doubling"`` always advances 1, 1, 2, 4, … steps. Either way the
        answers, timesteps and energies are the same: only wall time differs.
        ``cuda_graphs``: without compaction on a GPU, replay that run from a CUDA graph per batch
        shape (:class:`~fastslow.systems.GraphedSystem1`; deterministic encodings only)."""
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold {threshold} is outside [0, 1]")
        if not temperature > 0.0:
            raise ValueError(f"temperature (SEENN-I's softmax temperature) must be positive, got {temperature}")
        if not s2_macs >= 0:
            raise ValueError(f"s2_macs (System 2's MACs per input) must be ≥ 0, got {s2_macs}: count them with fastslow.count_macs")
        if router is not None and not isinstance(router, StepRouter):
            raise TypeError(f"router must be a sequential StepRouter (router@steps, e.g. result.policies.step_routers[0]), got a {type(router).__name__}")
        self.system1, self.system2, self.s2_macs = system1.eval(), system2.eval(), s2_macs
        self.threshold, self.escalate, self.temperature = threshold, escalate, temperature
        self.profile = load_profile(profile) if isinstance(profile, str) else profile
        if router is not None and router.timesteps != system1.spec.timesteps:
            raise ValueError(f"the router decides over {router.timesteps} timesteps but System 1 runs {system1.spec.timesteps}: train it on this System 1")
        features = system1.spec.n_classes + 5 + len(system1.layers)  # what step_state_features gives it
        if router is not None and router.net[0].in_features != features:
            raise ValueError(f"the router reads {router.net[0].in_features} features but this System 1 gives {features}: train it on this System 1")
        self.router = None if router is None else router.eval().to(next(system1.parameters()).device)
        if chunking not in ("adaptive", "doubling"):
            raise ValueError(f"chunking must be 'adaptive' or 'doubling', got {chunking!r}")
        self.compaction = compaction
        self.planner = ChunkPlanner(system1.spec.timesteps) if chunking == "adaptive" else None
        self._graphed = GraphedSystem1(system1) if cuda_graphs else None
        # What an answer from the last exit charges (fixed by the architecture, so not rebuilt per batch):
        # the components it needs, and their neuron updates per step.
        self._components = system1.exit_component_mask_for_last().cpu()
        self._neurons_per_step = float((torch.tensor(system1.neurons_per_component(), dtype=torch.float64) * self._components).sum())

    @torch.no_grad()
    def predict(self, x: torch.Tensor, generator: torch.Generator | None = None) -> AdaptiveAnswer:
        """Answers for a batch ``x`` [N, *input_shape]; ``generator`` draws a rate code's spikes."""
        self.system1.check_input(x)
        check_batch(x)
        compaction = x.device.type == "cpu" if self.compaction is None else self.compaction
        if not compaction:
            return self._predict_from_records(x, generator)
        flat = self.system1.prepare(x)
        if self.router is None and self.system1.spec.encoding == "direct" and self.system1.compiled_mlp_applies(flat, None):
            return self._predict_compiled(x, flat)
        return self._predict_compacted(x, generator)

    def _predict_from_records(self, x: torch.Tensor, generator: torch.Generator | None) -> AdaptiveAnswer:
        """All T steps at once; each input's stop and escalation read from the records (the evaluation's rules)."""
        s1 = self.system1
        run = self._graphed.run(x) if self._graphed is not None and x.is_cuda else s1.run(x, generator=generator)
        if self.router is None:
            routing = seenn1_routing(run.logits, self.threshold, temperature=self.temperature, escalate_unconfident=self.escalate)
        else:
            routing = self.router.route(step_router_features(run.logits, run.spike_rates), s1.n_exits - 1)
        steps = routing.timesteps.long()
        predictions = run.logits[steps - 1, -1, torch.arange(len(x), device=x.device)].argmax(-1)
        if routing.escalate.any():
            predictions[routing.escalate] = self.system2(x[routing.escalate]).argmax(1)
        synaptic, dense, neurons = s1_op_counts(run.synaptic_ops, run.dense_macs, run.neuron_updates, s1.exit_layers, steps,
                                                routing.exit_taken.long())
        counts = OpCounts(synaptic_ops=synaptic, s1_dense_macs=dense, neuron_updates=neurons, policy_macs=routing.policy_macs.float(),
                          s2_macs=routing.escalate.to(synaptic.dtype) * self.s2_macs)
        terms = counts.energy_terms_uj(self.profile)
        return AdaptiveAnswer(predictions, routing.escalate, steps, sum(terms.values()), terms)

    def _predict_compacted(self, x: torch.Tensor, generator: torch.Generator | None) -> AdaptiveAnswer:
        """Chunks of steps (planned, or 1, 1, 2, 4, …: :func:`~fastslow.systems.system1.doubling_chunks`), each in one
        multi-step call; each input's decision at each step of the chunk is read from the chunk's
        records (all steps at once: its first stop counts), and the inputs that stopped leave the
        batch before the next chunk."""
        s1 = self.system1
        n, steps = x.shape[0], s1.spec.timesteps
        flat = s1.prepare(x)
        spiking = is_spiking(s1.spec.encoding)
        constant = None if spiking else s1.input_current(flat)
        state = None  # at rest
        active = torch.arange(n, device=x.device)
        # The final exit's output at each step; an input's answer at t is their cumulative mean, computed
        # with the evaluation's own cumsum (which on a CPU accumulates in float64), so that the
        # confidences compared with the threshold are the evaluation's bits, not a float32 running sum's.
        step_outputs = flat.new_zeros(steps, n, s1.spec.n_classes)
        # Synaptic ops, then dense MACs, per component and input: whole numbers, exact in float64 in any
        # order, as the evaluation's cumulative sums on a CPU (which accumulate in double); MPS has no float64.
        charges = flat.new_zeros(2 * s1.n_components, n, dtype=flat.dtype if x.device.type == "mps" else torch.float64)
        stopped_at = torch.full((n,), steps, dtype=torch.long, device=x.device)
        answer = flat.new_zeros(n, s1.spec.n_classes)  # the mean output at each input's stop
        confident = torch.zeros(n, dtype=torch.bool, device=x.device)
        routed_to_s2 = torch.zeros(n, dtype=torch.bool, device=x.device)
        # each input's answer at the step before a chunk (the router reads it)
        last_answer = None if self.router is None else torch.zeros(n, dtype=torch.long, device=x.device)
        last = s1.n_exits - 1
        first = 0
        planner = self.planner
        chunks = doubling_chunks(steps) if planner is None else planner.plan(n)
        batch_started = time.perf_counter()
        for count in chunks:
            started, entering = time.perf_counter(), len(active)
            # The encoder draws for the whole batch every step, as a full run does.
            inp = torch.stack([encode_step(flat, t, steps, s1.spec.encoding, generator)[active] for t in range(first, first + count)]) if spiking else None
            # Once some inputs have left, only the others advance: their rows of the state (updated in
            # place) and of the constant current.
            rows = None if len(active) == n else active
            record, state = s1.advance(inp, state, constant, count, keep_state=first + count < steps, rows=rows)
            # Every step of the chunk at once, for every input that entered it (each input's answers and
            # choices depend on its own outputs only; those after its stop are never read).
            step_outputs[first : first + count, active] = record.outputs[:, last]
            taken = torch.arange(first + 1, first + count + 1, dtype=flat.dtype, device=x.device)[:, None]  # t at each step
            mean_logits = step_outputs[: first + count, active].cumsum(0)[first:] / taken[..., None]  # [count, active, C]
            if self.router is None:
                sure = seenn1_confidence(mean_logits, self.temperature, steps=taken) > self.threshold
                stop = sure
            else:
                choices = []
                for step in range(count):
                    t = first + step + 1
                    previous = None if t == 1 else (last_answer[active] if step == 0 else mean_logits[step - 1].argmax(-1))
                    features = step_state_features(mean_logits[step], previous, t, steps, record.spike_rates[:, step])
                    choices.append(self.router.choose(features, t))
                choice = torch.stack(choices)
                stop = choice != CONTINUE
            if first + count == steps:  # at T every input stops
                stop = stop.clone()
                stop[-1] = True
            stops = stop.any(0)
            first_stop = stop.to(torch.uint8).argmax(0)  # each input's first stop in the chunk (the first maximum)
            # Each input is charged for the steps it ran up to its stop, never for the rest of the chunk.
            ops = torch.cat([record.synaptic_ops, record.dense_macs])  # [2K, count, active]
            if count > 1:
                ops = ops * (torch.arange(count, device=x.device)[:, None] <= torch.where(stops, first_stop, count))
            charges.index_add_(1, active, ops.sum(1, dtype=charges.dtype))
            leaving = stops.nonzero().squeeze(1)
            ids, at = active[leaving], first_stop[leaving]
            stopped_at[ids] = first + at + 1
            answer[ids] = mean_logits[at, leaving]
            if self.router is None:
                confident[ids] = sure[at, leaving]
            else:
                routed_to_s2[ids] = choice[at, leaving] == ESCALATE
                last_answer[active] = mean_logits[-1].argmax(-1)
            first += count
            active = active[~stops]  # the stopped inputs leave the batch
            if planner is not None:  # (reading the survivors' count has waited for the device)
                planner.record_chunk(first - count, count, entering, time.perf_counter() - started)
            if len(active) == 0:
                break
        if planner is not None:
            planner.record_batch(chunks, n, time.perf_counter() - batch_started)
            planner.record_stops(stopped_at)
        escalated = ~confident & self.escalate if self.router is None else routed_to_s2
        return self._answer(x, answer, escalated, stopped_at, charges)

    def _predict_compiled(self, x: torch.Tensor, flat: torch.Tensor) -> AdaptiveAnswer:
        """SEENN-I over an MLP with direct encoding on a CPU, in one compiled call
        (:func:`~fastslow.spiking._cpu_kernels.mlp_until_confident`): each input runs step by step
        until confident or at T, with no chunks and no call per step; its steps, answer and charges
        are those of :meth:`_predict_compacted`. Where the kernel's float64 confidence is too close to
        θ to be sure of the evaluation's float32 one, torch decides (the evaluation's formula), and
        the inputs that go on are stepped again from where they were."""
        s1 = self.system1
        n, steps, classes = x.shape[0], s1.spec.timesteps, s1.spec.n_classes
        constant = s1.input_current(flat).contiguous()
        weights = s1.compiled_weights()
        states = tuple(flat.new_empty(n, layer.neurons) for layer in s1.layers)
        sums = flat.new_zeros(n, classes, dtype=torch.float64)
        charges = flat.new_zeros(n, 2 * s1.n_components, dtype=torch.float64)
        answer = flat.new_empty(n, classes)
        stopped_at = torch.empty(n, dtype=torch.long)
        status = torch.empty(n, dtype=torch.int8)
        rows, starts = torch.arange(n), torch.zeros(n, dtype=torch.long)
        # θ ≥ 1 is never exceeded (a float32 softmax is at most 1): no confidence needs a closer look.
        threshold, margin = (math.inf, -1.0) if self.threshold >= 1.0 else (self.threshold, CONFIDENCE_MARGIN)
        params = s1.lif_params
        while len(rows):
            _cpu_kernels.mlp_until_confident(constant, weights, states, rows, starts, steps, params.beta, params.threshold,
                                             params.reset == "zero", threshold, self.temperature, margin, sums, charges, answer,
                                             stopped_at, status)
            close = rows[status[rows] == _cpu_kernels.TOO_CLOSE]
            if len(close) == 0:
                break
            taken = stopped_at[close]
            sure = seenn1_confidence(answer[close], self.temperature, steps=taken) > self.threshold
            status[close] = torch.where(sure, _cpu_kernels.CONFIDENT, _cpu_kernels.UNCONFIDENT).to(torch.int8)
            going_on = ~sure & (taken < steps)
            rows, starts = close[going_on], taken[going_on]
        escalated = (status != _cpu_kernels.CONFIDENT) & self.escalate
        return self._answer(x, answer, escalated, stopped_at, charges.t())

    def _answer(self, x: torch.Tensor, answer: torch.Tensor, escalated: torch.Tensor, stopped_at: torch.Tensor, charges: torch.Tensor
                ) -> AdaptiveAnswer:
        """Each input's class (System 2's where ``escalated``) and energy from System 1's ``answer`` [N, C]
        at its stop, its steps ``stopped_at`` [N] and its charges [2K, N] (synaptic ops, then dense
        MACs, per component)."""
        s1, dtype = self.system1, answer.dtype
        predictions = answer.argmax(1)
        if escalated.any():
            predictions[escalated] = self.system2(x[escalated]).argmax(1)
        components = self._components.to(answer)
        neurons = stopped_at.to(dtype) * self._neurons_per_step
        synaptic, dense = charges.to(dtype).reshape(2, s1.n_components, x.shape[0])
        counts = OpCounts(
            synaptic_ops=(synaptic * components[:, None]).sum(0),
            s1_dense_macs=(dense * components[:, None]).sum(0),
            neuron_updates=neurons,
            policy_macs=stopped_at.to(dtype) * (confidence_policy_macs(s1.spec.n_classes) if self.router is None else self.router.macs()),
            s2_macs=escalated.to(dtype) * self.s2_macs,
        )
        terms = counts.energy_terms_uj(self.profile)
        return AdaptiveAnswer(predictions, escalated, stopped_at, sum(terms.values()), terms)
