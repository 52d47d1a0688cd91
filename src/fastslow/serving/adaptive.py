"""Serving: answer a batch with System 1 stopping early and System 2 only where the policy sends.

:class:`FastSlow` deploys any :class:`~fastslow.policies.Policy`. On a CPU, System 1 advances in
chunks of steps; after each chunk the policy's :meth:`~fastslow.policies.Policy.decide` reads the
record of the steps run so far, and the inputs it decided leave the batch before the next chunk
(the others advance their own rows of the state, in place). A policy that reads the input alone
(SEENN-II) decides before System 1 runs. The spike encoder draws for the whole batch every step,
so every input sees exactly the spikes of a full run: answers, timesteps and energies equal the
evaluation's for the same strategy (tests check this for every registered family). A chunk costs a
fixed 0.3–0.5 ms of dispatch and decisions, as much as a small batch's arithmetic, so the chunks
are planned from the timings and stops of the batches served so far
(:mod:`fastslow.serving.chunks`; doubling chunks 1, 1, 2, 4, … until it knows them). An input that
stops inside a chunk is simulated to the chunk's end, never charged for it.

SEENN-I over a direct-encoded MLP on a CPU needs no chunks: one compiled call steps each input
until it is confident or reaches T (:meth:`FastSlow._predict_compiled`), with the same answers.

On a GPU, batches of a few hundred inputs are bound by kernel launches, not arithmetic: stepping
with compaction was 3.3–3.8× slower than one multi-step run of all T steps. There the server runs
all T steps at once and the policy routes over the records, as the evaluation does: the same
answers, timesteps and energies (energy always charges the steps each input needed, which is what
event-driven hardware would run, however the simulation computed them).

System 2 is called through :class:`~fastslow.serving.escalation.System2Endpoint`: a module in this
process, or a service (:class:`~fastslow.serving.remote.RemoteSystem2`). An escalated input the
endpoint could not answer is answered by System 1 at the step and exit it ran last (degraded).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import nn

from fastslow.data import check_batch
from fastslow.energy.accounting import charge, count_macs, escalation_bytes
from fastslow.energy.profile import EnergyProfile, load_profile
from fastslow.policies import Decision, Policy, Routing, Seenn1, SystemOutputs
from fastslow.policies.confidence import confidence_policy_macs
from fastslow.policies.dynamic import seenn1_confidence
from fastslow.policies.seenn2 import policy_input
from fastslow.serving.chunks import ChunkPlanner
from fastslow.serving.escalation import LocalSystem2, System2Endpoint
from fastslow.spiking import backends, encode_step, is_spiking
from fastslow.systems.cuda_graphs import GraphedSystem1
from fastslow.systems.records import S1Record
from fastslow.systems.system1 import System1, doubling_chunks

# How close (absolute) to θ the compiled path's float64 confidence may come before torch's float32 one
# decides: far above their difference (a few float32 roundings of logits, softmax and sum).
CONFIDENCE_MARGIN = 1e-4


@dataclass
class Answer:
    """Per input [N]: the class, whether System 2 answered, the System 1 exit that answered (−1 for
    System 2), System 1 timesteps run, µJ spent and its terms (µJ, keys of
    :data:`fastslow.energy.ENERGY_TERMS`), and whether System 2 was wanted but could not be reached
    (``degraded``: System 1 answered; ``escalated`` is False there)."""

    predictions: torch.Tensor
    escalated: torch.Tensor
    exits: torch.Tensor
    timesteps: torch.Tensor
    energy_uj: torch.Tensor
    energy_terms_uj: dict[str, torch.Tensor]
    degraded: torch.Tensor


class FastSlow:
    """System 1 + System 2 + one policy, for inference: any :class:`~fastslow.policies.Policy` that is deployable."""

    def __init__(
        self,
        system1: System1,
        system2: nn.Module | System2Endpoint,
        policy: Policy,
        *,
        s2_macs: int | None = None,
        profile: EnergyProfile | str = "cmos45nm",
        compaction: bool | None = None,
        chunking: str = "adaptive",
        cuda_graphs: bool = False,
    ) -> None:
        """``system2``: a module, or any :class:`~fastslow.serving.escalation.System2Endpoint` (e.g. a
        :class:`~fastslow.serving.remote.RemoteSystem2`; then ``s2_macs`` is needed).
        ``s2_macs``: System 2's MACs per input (default: counted from ``system2``).
        ``compaction``: advance in chunks of steps with decided inputs leaving the batch between
        them (True), or run all T steps at once and route over the records (False); None picks
        compaction on a CPU only.
        ``chunking`` (with compaction): ``"adaptive"`` plans each batch's chunks from the timings and
        stops of the batches served so far (:class:`~fastslow.serving.chunks.ChunkPlanner`, kept as
        ``self.planner``); ``"doubling"`` always advances 1, 1, 2, 4, … steps. Either way the
        answers, timesteps and energies are the same: only wall time differs.
        ``cuda_graphs``: without compaction on a GPU, replay that run from a CUDA graph per batch
        shape (:class:`~fastslow.systems.GraphedSystem1`; deterministic encodings only)."""
        if not isinstance(policy, Policy):
            raise TypeError(f"policy must be a fastslow.policies.Policy, got a {type(policy).__name__}")
        if not policy.deployable:
            raise ValueError(f"{policy.name} is a reference that reads the labels, not a deployable policy")
        steps = getattr(policy.module, "timesteps", system1.spec.timesteps)
        if steps != system1.spec.timesteps:
            raise ValueError(
                f"the policy decides over {steps} timesteps but System 1 runs {system1.spec.timesteps}: fit it on this System 1"
            )
        exits = getattr(policy.module, "n_exits", system1.n_exits)
        if exits != system1.n_exits:
            raise ValueError(f"the policy answers from {exits} exits but System 1 has {system1.n_exits}: fit it on this System 1")
        if not isinstance(system2, nn.Module | System2Endpoint):
            raise TypeError(f"system2 must be a torch module or a System2Endpoint, got a {type(system2).__name__}")
        if s2_macs is None:
            if not isinstance(system2, nn.Module):
                raise ValueError("s2_macs (System 2's MACs per input) is needed with a System 2 that is not a module")
            s2_macs = sum(count_macs(system2, tuple(system1.spec.input_shape)).values())
        if not s2_macs >= 0:
            raise ValueError(f"s2_macs (System 2's MACs per input) must be ≥ 0, got {s2_macs}")
        if chunking not in ("adaptive", "doubling"):
            raise ValueError(f"chunking must be 'adaptive' or 'doubling', got {chunking!r}")
        # Every path hands the policy CPU records (as the evaluation does): its weights go there too.
        self.system1, self.policy, self.s2_macs = system1.eval(), policy.to("cpu"), s2_macs
        # System 2 through one interface: in this process or behind a service.
        self.system2: System2Endpoint = LocalSystem2(system2) if isinstance(system2, nn.Module) else system2
        self.link_bytes = escalation_bytes(tuple(system1.spec.input_shape), system1.spec.n_classes)
        self._check_policy_reads_system1()
        self.profile = load_profile(profile) if isinstance(profile, str) else profile
        self.compaction = compaction
        self.planner = ChunkPlanner(system1.spec.timesteps) if chunking == "adaptive" else None
        self._graphed = GraphedSystem1(system1) if cuda_graphs else None

    @torch.no_grad()
    def _check_policy_reads_system1(self) -> None:
        """A ValueError, in one line, for a policy fitted on another System 1 (other classes or layers,
        so other features): it routes one blank input over a record of all T steps shaped as this System 1's."""
        s1, policy = self.system1, self.policy
        steps, classes = s1.spec.timesteps, s1.spec.n_classes
        counts = torch.zeros(s1.n_components, steps, 1)
        record = S1Record.from_step_outputs(
            torch.zeros(steps, s1.n_exits, 1, classes),
            synaptic_ops=counts,
            dense_macs=counts,
            neuron_updates=s1.neuron_counts().cpu(),
            spike_rates=torch.zeros(len(s1.layers), steps, 1),
            exit_layers=s1.exit_layers,
        )
        try:
            policy.route(self._outputs(record, policy_input(torch.zeros(1, *s1.spec.input_shape))))
        except (RuntimeError, IndexError) as err:
            raise ValueError(
                f"{policy.name} does not read the features this System 1 gives ({str(err).splitlines()[0]}): "
                "fit it on this System 1"
            ) from None

    @torch.no_grad()
    def predict(self, x: torch.Tensor, generator: torch.Generator | None = None) -> Answer:
        """Answers for a batch ``x`` [N, *input_shape] in [0, 1]; ``generator`` draws a rate code's spikes
        (all T steps' draws are made, so consecutive batches see the spikes of full runs)."""
        self.system1.check_input(x)
        check_batch(x)
        compaction = x.device.type == "cpu" if self.compaction is None else self.compaction
        if not compaction:
            return self._predict_from_records(x, generator)
        flat = self.system1.prepare(x)
        if self._compiled_applies(flat):
            return self._predict_compiled(x, flat)
        return self._predict_compacted(x, flat, generator)

    def _compiled_applies(self, flat: torch.Tensor) -> bool:
        policy = self.policy
        return (
            type(policy) is Seenn1
            and policy.measure == "max_softmax"
            and self.system1.spec.encoding == "direct"
            and self.system1.compiled_mlp_applies(flat, None)
        )

    def _outputs(self, record: S1Record, inputs: torch.Tensor) -> SystemOutputs:
        return SystemOutputs(record, self.system1.spec.timesteps, inputs)

    def _predict_from_records(self, x: torch.Tensor, generator: torch.Generator | None) -> Answer:
        """All T steps at once; the policy routes over the records (the evaluation's rules)."""
        s1 = self.system1
        run = self._graphed.run(x) if self._graphed is not None and x.is_cuda else s1.run(x, generator=generator)
        record = run.to("cpu")
        routing = self.policy.route(self._outputs(record, policy_input(x).cpu()))
        return self._finish(x, record, routing)

    def _predict_compacted(self, x: torch.Tensor, flat: torch.Tensor, generator: torch.Generator | None) -> Answer:
        """Chunks of steps (planned, or 1, 1, 2, 4, …: :func:`~fastslow.systems.system1.doubling_chunks`), each in
        one multi-step call; after each, the policy decides over the steps recorded so far and the inputs
        it decided leave the batch."""
        s1, policy = self.system1, self.policy
        n, steps, classes = x.shape[0], s1.spec.timesteps, s1.spec.n_classes
        spiking = is_spiking(s1.spec.encoding)
        constant = None if spiking else s1.input_current(flat)
        inputs = policy_input(x).cpu()
        # The record of every step each input ran (zeros after its last): the evaluation's charge and
        # answers read it as they read a full run's.
        step_outputs = flat.new_zeros(steps, s1.n_exits, n, classes)
        synaptic = flat.new_zeros(s1.n_components, steps, n)
        dense = flat.new_zeros(s1.n_components, steps, n)
        rates = flat.new_zeros(len(s1.layers), steps, n)
        neuron_updates = s1.neuron_counts(flat.dtype)
        zeros = torch.zeros(n, dtype=torch.long)
        routing = Routing(zeros.bool(), zeros.clone(), zeros.clone(), torch.zeros(n), cascade=False)
        active = torch.arange(n, device=x.device)

        def settle(decision: Decision, among: torch.Tensor) -> torch.Tensor:
            """Write the decided inputs' routing; the inputs still running."""
            decided = decision.decided.to(among.device)
            ids = among[decided].cpu()
            picked = decision.routing
            for name in ("escalate", "timesteps", "exit_taken", "policy_macs"):
                getattr(routing, name)[ids] = getattr(picked, name)[decided.cpu()].to(getattr(routing, name).dtype)
            routing.cascade = routing.cascade or picked.cascade
            return among[~decided]

        def recorded(upto: int, among: torch.Tensor | slice) -> S1Record:
            """The record of steps 1..``upto`` for the inputs ``among``."""
            return S1Record.from_step_outputs(
                step_outputs[:upto, :, among],
                synaptic_ops=synaptic[:, :upto, among],
                dense_macs=dense[:, :upto, among],
                neuron_updates=neuron_updates,
                spike_rates=rates[:, :upto, among],
                exit_layers=s1.exit_layers,
            )

        if policy.decides_before_system1:
            active = settle(policy.decide(self._outputs(recorded(0, slice(None)).to("cpu"), inputs)), active)
        state, in_state = None, active  # at rest; the inputs the state's rows hold
        first = 0
        planner = self.planner
        chunks = doubling_chunks(steps) if planner is None else planner.plan(n)
        batch_started = time.perf_counter()
        for count in chunks:
            if len(active) == 0:
                break
            started, entering = time.perf_counter(), len(active)
            # The encoder draws for the whole batch every step, as a full run does.
            inp = (
                torch.stack(
                    [encode_step(flat, t, steps, s1.spec.encoding, generator)[active] for t in range(first, first + count)]
                )
                if spiking
                else None
            )
            if state is None and len(in_state) < n and constant is not None:
                constant = constant[in_state]
            # Once some inputs have left, only the others advance: their rows of the state, in place.
            rows = None if len(active) == len(in_state) else torch.searchsorted(in_state, active)
            record, state = s1.advance(inp, state, constant, count, keep_state=first + count < steps, rows=rows)
            window = slice(first, first + count)
            step_outputs[window, :, active] = record.outputs
            synaptic[:, window, active] = record.synaptic_ops
            dense[:, window, active] = record.dense_macs
            rates[:, window, active] = record.spike_rates
            first += count
            active = settle(policy.decide(self._outputs(recorded(first, active).to("cpu"), inputs[active.cpu()])), active)
            if planner is not None:  # (reading the survivors' count has waited for the device)
                planner.record_chunk(first - count, count, entering, time.perf_counter() - started)
        if len(active):
            raise RuntimeError(f"policy {policy.name} left {len(active)} inputs undecided after all {steps} steps")
        if spiking and generator is not None:
            for t in range(first, steps):  # the draws of the steps nobody ran: the next batch sees a full run's spikes
                encode_step(flat, t, steps, s1.spec.encoding, generator)
        if planner is not None:
            planner.record_batch(chunks, n, time.perf_counter() - batch_started)
            planner.record_stops(routing.timesteps)
        return self._finish(x, recorded(steps, slice(None)).to("cpu"), routing)

    def _predict_compiled(self, x: torch.Tensor, flat: torch.Tensor) -> Answer:
        """SEENN-I over an MLP with direct encoding on a CPU, in one compiled call
        (:func:`~fastslow.spiking.backends.mlp_until_confident`): each input runs step by step
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
        policy = self.policy
        # θ ≥ 1 is never exceeded (a float32 softmax is at most 1): no confidence needs a closer look.
        threshold, margin = (math.inf, -1.0) if policy.threshold >= 1.0 else (policy.threshold, CONFIDENCE_MARGIN)
        params = s1.lif_params
        while len(rows):
            backends.mlp_until_confident(
                constant,
                weights,
                states,
                rows,
                starts,
                steps,
                params.beta,
                params.threshold,
                params.reset == "zero",
                threshold,
                policy.temperature,
                margin,
                sums,
                charges,
                answer,
                stopped_at,
                status,
            )
            close = rows[status[rows] == backends.TOO_CLOSE]
            if len(close) == 0:
                break
            taken = stopped_at[close]
            sure = seenn1_confidence(answer[close], policy.temperature, steps=taken) > policy.threshold
            status[close] = torch.where(sure, backends.CONFIDENT, backends.UNCONFIDENT).to(torch.int8)
            going_on = ~sure & (taken < steps)
            rows, starts = close[going_on], taken[going_on]
        escalated = (status != backends.CONFIDENT) & policy.escalate
        routing = Routing(
            escalate=escalated,
            timesteps=stopped_at,
            exit_taken=torch.full_like(stopped_at, s1.n_exits - 1),
            policy_macs=stopped_at.to(flat.dtype) * confidence_policy_macs(classes),
        )
        # The kernel summed each input's charges up to its stop: the charge reads those totals.
        synaptic, dense = charges.to(flat.dtype).split(s1.n_components, dim=1)  # [N, K] each
        empty = flat.new_zeros(0)
        record = S1Record(
            step_outputs=empty,
            logits=empty,
            synaptic_ops=empty,
            dense_macs=empty,
            neuron_updates=s1.neuron_counts(flat.dtype),
            spike_rates=empty,
            exit_layers=s1.exit_layers,
        )
        return self._finish(x, record, routing, answer, totals=(synaptic, dense))

    def _finish(
        self,
        x: torch.Tensor,
        record: S1Record,
        routing: Routing,
        answer: torch.Tensor | None = None,
        totals: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> Answer:
        """Each input's class (System 2's where escalated, else System 1's at its exit and step: ``answer``
        [N, C] or read from ``record``) and its charge (:func:`fastslow.energy.charge`).

        An escalated input System 2 could not answer is degraded: System 1's answer at its exit and
        last step stands, and it is charged as if it had stopped there (no System 2, no link). One
        that System 1 never ran for (sent straight to System 2) runs all T steps now, to its last exit."""
        n = x.shape[0]
        escalated = routing.escalate.bool().cpu()
        degraded = torch.zeros(n, dtype=torch.bool)
        if escalated.any():
            reply = self.system2.answer(x[escalated.to(x.device)])
            sent = escalated.nonzero().flatten()
            degraded[sent[~reply.reached.cpu()]] = True
            escalated = escalated & ~degraded
            routing = Routing(
                escalated,
                routing.timesteps.long().cpu().clone(),
                routing.exit_taken.long().cpu().clone(),
                routing.policy_macs,
                routing.cascade,
            )
            never_ran = degraded & (routing.timesteps == 0)
            if never_ran.any():
                answer, totals = self._run_system1_for(x, never_ran, record, routing, answer, totals)
            answers = reply.answers.cpu()[reply.reached.cpu()]
        steps, exits = routing.timesteps.long().cpu(), routing.exit_taken.long().cpu()
        if answer is None:
            answer = record.logits[(steps - 1).clamp(min=0), exits, torch.arange(n)]
        predictions = answer.argmax(-1).cpu()
        if escalated.any():
            predictions[escalated] = answers.to(predictions.dtype)
        charged = charge(record, routing, self.s2_macs, self.profile, totals, link_bytes=self.link_bytes)
        return Answer(
            predictions, escalated, torch.where(escalated, -1, exits), steps, charged.total_uj, charged.terms_uj, degraded
        )

    def _run_system1_for(
        self,
        x: torch.Tensor,
        rows: torch.Tensor,
        record: S1Record,
        routing: Routing,
        answer: torch.Tensor | None,
        totals: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor | None, tuple[torch.Tensor, torch.Tensor] | None]:
        """System 1's all T steps for the inputs at ``rows`` [N] bool, which it had not run: their
        record (or ``totals``, and ``answer``) and routing (T steps, last exit) are filled in place.
        A rate code draws fresh spikes for them (not the generator's: later batches see theirs)."""
        s1 = self.system1
        index = rows.nonzero().flatten()
        run = s1.run(x[rows.to(x.device)]).to("cpu")
        routing.timesteps[index] = s1.spec.timesteps
        routing.exit_taken[index] = s1.n_exits - 1
        if answer is not None:
            answer[index] = run.final_logits.to(answer.dtype)
        if totals is not None:
            totals[0][index] = run.synaptic_ops.sum(1).T.to(totals[0].dtype)
            totals[1][index] = run.dense_macs.sum(1).T.to(totals[1].dtype)
        else:
            for name in ("step_outputs", "logits", "synaptic_ops", "dense_macs", "spike_rates"):
                getattr(record, name)[:, :, index] = getattr(run, name).to(getattr(record, name).dtype)
        return answer, totals
