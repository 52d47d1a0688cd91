"""Unsupervised STDP networks: Diehl & Cook (2015) and SpikeDyn (Putra & Shafique, DAC 2021).

One layer of conductance-based excitatory LIF neurons with adaptive thresholds receives Poisson
spike trains (one per pixel) through plastic weights. Lateral inhibition makes the neurons
compete: in Diehl & Cook through a layer of inhibitory neurons (excitatory → inhibitory
one-to-one, inhibitory → every other excitatory neuron), in SpikeDyn directly (an excitatory spike
inhibits every other excitatory neuron, no inhibitory neurons to simulate). Learning is
trace-based STDP on the input weights with column normalisation; no labels are used.

Units: time in ms, potentials in mV, rates in Hz. Steps of ``dt_ms``: membranes by exponential
Euler (see :func:`membrane_step`); conductances, traces and thresholds decay exactly. The state of a batch of
presentations is an explicit :class:`STDPState`; the learned parameters are the weights and the
thresholds θ of :class:`STDPNetwork`. Arrays are float32 NumPy (see :class:`STDPNetwork` for why). Every spike, neuron update and weight update is counted
(:class:`STDPCounts`) for the energy model (``fastslow.energy.accounting.stdp_energy_uj``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Literal, NamedTuple

import numpy as np
import torch

from fastslow.errors import ConfigError
from fastslow.stdp.quantize import check_bits, quantize_array

ModelName = Literal["diehl-cook", "spikedyn"]
MODELS: tuple[str, ...] = ("diehl-cook", "spikedyn")


@dataclass(frozen=True)
class DiehlCookConstants:
    """The reference code's constants (peter-u-diehl/stdp-mnist, Brian, dt 0.5 ms)."""

    v_rest_e: float = -65.0
    v_reset_e: float = -65.0
    v_thresh_e: float = -52.0
    theta_offset: float = 20.0  # the threshold is v_thresh_e + θ − offset
    theta_init: float = 20.0
    theta_plus: float = 0.05  # per spike, while learning
    tau_theta: float = 1e7
    refractory_e: float = 5.0
    tau_e: float = 100.0
    v_rest_i: float = -60.0
    v_reset_i: float = -45.0
    v_thresh_i: float = -40.0
    refractory_i: float = 2.0
    tau_i: float = 10.0
    tau_ge: float = 1.0
    tau_gi: float = 2.0
    e_exc: float = 0.0
    e_inh_e: float = -100.0
    e_inh_i: float = -85.0
    w_max: float = 1.0
    w_init_scale: float = 0.3  # weights start at w_init_scale·(U + 0.01)
    column_sum: float | None = None  # each neuron's input weights are scaled to this sum before a sample; None: 78 per 784 inputs
    w_exc_inh: float = 10.4
    w_inh_exc: float = 17.0
    tau_pre: float = 20.0
    tau_post1: float = 20.0
    tau_post2: float = 40.0
    nu_pre: float = 0.0001
    nu_post: float = 0.01
    max_rate_hz: float = 63.75  # a white pixel (intensity 2 in the reference: 255 / 8 · 2)
    min_spikes: int = 5  # fewer excitatory spikes in a presentation: raise intensity and repeat
    max_repeats: int = 8  # the reference repeats without bound; fastslow stops here


@dataclass(frozen=True)
class SpikeDynRules:
    """SpikeDyn's continual-learning mechanisms as fastslow implements them (the paper publishes no
    code and its exact rules could not be read here; each rule is documented in the README and
    measured by the ablation in bench/continual.py). Each flag turns one mechanism on."""

    direct_inhibition: bool = True  # excitatory spikes inhibit the others directly (no inhibitory layer)
    adaptive_rates: bool = True  # uncommitted neurons (θ near an unfired neuron's) potentiate faster, committed ones slower
    rest_relative_commitment: bool = True  # commitment is θ's rise over an unfired neuron's θ now, not over θ_init
    adaptive_threshold: bool = True  # θ rises more for a committed neuron that dominates a presentation
    weight_decay: bool = True  # a firing neuron forgets weights from inputs silent in this presentation
    spurious_reduction: bool = True  # no potentiation on a presentation's first spike; no depression once post1 has faded
    rate_max: float = 2.0  # potentiation × this for a neuron whose θ has not risen yet …
    rate_min: float = 0.5  # … falling to × this as θ rises: × min + (max − min)·exp(−(θ − θ_rest)/theta_commit)
    theta_commit: float = 2.0  # mV of θ rise (0.05 mV per spike) over which a neuron becomes "committed"
    dominance_spikes: float = 5.0  # θ_plus × (1 + theta_dominance · spikes so far in this presentation / this)
    theta_dominance: float = 1.0
    # The dominance rise × (1 − exp(−Δθ/theta_commit)), Δθ as for the rates: a fresh neuron rises as in
    # Diehl & Cook. Off (the rise for every neuron) spread each task over fresh neurons (docs/stdp.md).
    committed_dominance: bool = True
    decay: float = 0.01  # fraction removed per presentation from silent inputs' weights of firing neurons
    min_post_spikes: int = 2  # potentiate only from a neuron's second spike in a presentation on
    depression_trace_floor: float = 0.05  # skip depression where post1 is below this


# SpikeDyn's mechanisms: the on/off flags of SpikeDynRules (`continual --spikedyn-off`, the ablation).
SPIKEDYN_MECHANISMS: tuple[str, ...] = tuple(f.name for f in fields(SpikeDynRules) if isinstance(f.default, bool))


@dataclass(frozen=True)
class STDPSpec:
    """Everything needed to rebuild an STDP network (stored beside its weights)."""

    model: ModelName = "diehl-cook"
    n_inputs: int = 784
    n_neurons: int = 100
    bits: int = 32
    dt_ms: float = 0.5
    presentation_ms: float = 350.0
    rest_ms: float = 150.0
    constants: DiehlCookConstants = field(default_factory=DiehlCookConstants)
    rules: SpikeDynRules = field(default_factory=SpikeDynRules)

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ConfigError(f"unknown STDP model {self.model!r}: use one of {', '.join(MODELS)}")
        check_bits(self.bits)
        if self.n_neurons < 1 or self.n_inputs < 1:
            raise ConfigError(
                f"an STDP network needs at least one input and one neuron, got {self.n_inputs} and {self.n_neurons}"
            )
        if not (self.dt_ms > 0 and self.presentation_ms >= self.dt_ms and self.rest_ms >= 0):
            raise ConfigError(
                f"need dt > 0 and a presentation of at least one step, got dt {self.dt_ms} ms, presentation {self.presentation_ms} ms"
            )

    @property
    def column_sum(self) -> float:
        """78 for MNIST's 784 inputs (the reference), the same weight per input for other sizes."""
        c = self.constants
        return c.column_sum if c.column_sum is not None else 78.0 * self.n_inputs / 784

    @property
    def steps(self) -> int:
        return int(round(self.presentation_ms / self.dt_ms))

    @property
    def inhibitory_neurons(self) -> int:
        return 0 if self.uses_direct_inhibition else self.n_neurons

    @property
    def uses_direct_inhibition(self) -> bool:
        return self.model == "spikedyn" and self.rules.direct_inhibition

    def rule(self, name: str) -> bool:
        """Whether SpikeDyn mechanism ``name`` is on (always off for Diehl & Cook)."""
        return self.model == "spikedyn" and bool(getattr(self.rules, name))

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(data: dict) -> "STDPSpec":
        data = dict(data)
        data["constants"] = DiehlCookConstants(**data.get("constants", {}))
        data["rules"] = SpikeDynRules(**data.get("rules", {}))
        known = {f.name for f in fields(STDPSpec)}
        return STDPSpec(**{k: v for k, v in data.items() if k in known})


class STDPState(NamedTuple):
    """Fast state of B parallel presentations: excitatory [B, N], inhibitory [B, N_inh], pre [B, inputs]."""

    v_exc: np.ndarray
    ge_exc: np.ndarray
    gi_exc: np.ndarray
    refractory_exc: np.ndarray  # ms left
    v_inh: np.ndarray
    ge_inh: np.ndarray
    refractory_inh: np.ndarray
    pre: np.ndarray
    post1: np.ndarray
    post2: np.ndarray


@dataclass
class STDPCounts:
    """Operations of one phase, summed over its presentations (repeats included)."""

    presentations: int = 0
    input_spikes: float = 0.0
    exc_spikes: float = 0.0
    inh_spikes: float = 0.0
    synaptic_events: float = 0.0  # spike × fan-out: input→exc, exc→inh, inh→exc or exc→exc
    neuron_updates: float = 0.0  # excitatory and inhibitory membrane updates
    weight_updates: float = 0.0  # STDP, decay and normalisation writes to the input weights
    trace_updates: float = 0.0

    def add(self, other: "STDPCounts") -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def per_presentation(self) -> dict[str, float]:
        n = max(self.presentations, 1)
        return {f.name: getattr(self, f.name) / n for f in fields(self) if f.name != "presentations"}


def init_state(spec: STDPSpec, batch: int) -> STDPState:
    """Rest: potentials at their resting values, conductances, timers and traces at zero."""
    c = spec.constants
    exc = lambda: np.zeros((batch, spec.n_neurons), np.float32)  # noqa: E731
    inh = lambda: np.zeros((batch, spec.inhibitory_neurons), np.float32)  # noqa: E731
    return STDPState(
        v_exc=exc() + np.float32(c.v_rest_e),
        ge_exc=exc(),
        gi_exc=exc(),
        refractory_exc=exc(),
        v_inh=inh() + np.float32(c.v_rest_i),
        ge_inh=inh(),
        refractory_inh=inh(),
        pre=np.zeros((batch, spec.n_inputs), np.float32),
        post1=exc(),
        post2=exc(),
    )


def membrane_step(v, ge, gi, refractory, threshold, *, v_rest, v_reset, tau, e_exc, e_inh, refractory_ms, dt) -> np.ndarray:
    """One step of conductance-based LIF neurons, in place on ``v`` and ``refractory``; returns the
    boolean spikes. A refractory neuron's potential is held.

    τ dv/dt = (v_rest − v) + ge (e_exc − v) + gi (e_inh − v) is linear in v for the step's
    conductances, so it is integrated exactly over the step (exponential Euler): v relaxes toward
    its equilibrium with time constant τ / (1 + ge + gi). Forward Euler would diverge once many
    inhibitory spikes land in one step (dt·(1 + ge + gi)/τ > 2, i.e. gi > ~400 at dt 0.5 ms).
    """
    free = refractory <= 0
    leak = 1.0 + ge + gi
    target = (v_rest + ge * e_exc + gi * e_inh) / leak
    relaxed = target + (v - target) * np.exp(leak * np.float32(-dt / tau))
    np.copyto(v, relaxed, where=free)
    fired = (v > threshold) & free
    refractory -= dt
    if fired.any():
        v[fired] = v_reset
        refractory[fired] = refractory_ms
    return fired


def uncommitted(theta: np.ndarray, baseline: float, rules: SpikeDynRules) -> np.ndarray:
    """How uncommitted each neuron is [N], in (0, 1]: exp(−max(θ − baseline, 0) / theta_commit), the
    one commitment both SpikeDyn rules read (the adaptive rate and the dominance θ rise).

    ``baseline`` is what θ would be had the neuron never fired (``STDPNetwork.theta_rest``), so the
    rise counts only the neuron's own spikes: θ also decays (τ_θ) with every simulated ms, and over a
    protocol with many repeated presentations an unfired neuron's θ falls several mV below θ_init,
    more than ``theta_commit``; measured from θ_init, every neuron would look uncommitted again."""
    rise = np.maximum(theta - np.float32(baseline), np.float32(0.0))
    return np.exp(-rise / np.float32(rules.theta_commit))


def potentiation_scale(free: np.ndarray, rules: SpikeDynRules) -> np.ndarray:
    """SpikeDyn's adaptive rate [N] from ``free`` = :func:`uncommitted`: rate_min + (rate_max − rate_min)·free."""
    return np.float32(rules.rate_min) + np.float32(rules.rate_max - rules.rate_min) * free


def stdp_depress(weights: np.ndarray, active_inputs: np.ndarray, post1: np.ndarray, nu_pre: float) -> np.ndarray:
    """Rows of ``weights`` for pre-synaptic spikes at ``active_inputs`` [k]: w[i, j] − nu_pre · post1[j] (unclipped)."""
    return weights[active_inputs] - np.float32(nu_pre) * post1[None, :]


def stdp_potentiate(weights: np.ndarray, fired: np.ndarray, pre: np.ndarray, post2_before: np.ndarray, nu_post) -> np.ndarray:
    """Columns of ``weights`` for post-synaptic spikes at ``fired`` [m]: w[i, j] + nu_post[j] · pre[i] · post2_before[j] (unclipped)."""
    rate = nu_post[fired] if isinstance(nu_post, np.ndarray) else nu_post
    return weights[:, fired] + pre[:, None] * (rate * post2_before[fired])[None, :]


class STDPNetwork:
    """An STDP network's learned parameters — ``weights`` [inputs, N] and thresholds ``theta`` [N]
    (float32 NumPy arrays), the neurons' class ``assignments`` — with :meth:`learn` (unsupervised,
    one presentation at a time) and :meth:`respond` (frozen, batched).

    The simulation runs in NumPy on the CPU: learning updates a few hundred values per 0.5 ms step
    one presentation at a time, where NumPy's per-call cost is several times below torch's (and a
    GPU cannot help); inference batches presentations.
    """

    def __init__(self, spec: STDPSpec, seed: int = 0) -> None:
        self.spec = spec
        self.rng = np.random.default_rng(seed)
        c = spec.constants
        weights = np.float32(c.w_init_scale) * (
            self.rng.random((spec.n_inputs, spec.n_neurons), dtype=np.float32) + np.float32(0.01)
        )
        self.weights = self._store(weights)
        self.theta = np.full(spec.n_neurons, c.theta_init, np.float32)
        # θ of a neuron that has never fired: θ_init decayed, by the same float32 steps as ``theta``,
        # over all the simulated learning time so far (it falls by mV over a protocol with many repeats).
        self.theta_rest = np.full(1, c.theta_init, np.float32)
        self.assignments = np.full(spec.n_neurons, -1, np.int64)

    # -- learning -----------------------------------------------------------
    def learn(self, images, progress=None) -> STDPCounts:
        """Present ``images`` [S, inputs] in [0, 1] one after another, learning from each. No labels."""
        images = self._check_images(images)
        counts = STDPCounts()
        for image in images:
            self._normalise()
            counts.weight_updates += self.weights.size
            intensity = 1.0
            for _ in range(self.spec.constants.max_repeats + 1):
                spikes, phase = self._present_learning(image, intensity)
                counts.add(phase)
                if spikes >= self.spec.constants.min_spikes:
                    break
                intensity += 0.5  # the reference's intensity 2 → 3 → 4 …: rates ×1.5, ×2, …
            if progress is not None:
                progress()
        return counts

    def _normalise(self) -> None:
        sums = np.maximum(self.weights.sum(0), np.float32(1e-12))
        self.weights = self._store(self.weights * (np.float32(self.spec.column_sum) / sums))

    def _store(self, weights: np.ndarray) -> np.ndarray:
        """Weights as stored: clipped to [0, w_max], stochastically rounded to the precision's grid."""
        return quantize_array(weights, self.spec.bits, self.spec.constants.w_max, self.rng)

    def _input_spikes(self, images: np.ndarray, intensity: float) -> np.ndarray:
        """Poisson input [steps, B, inputs] (bool): rate = pixel · max_rate · intensity."""
        spec = self.spec
        p = np.minimum(images * np.float32(spec.constants.max_rate_hz * intensity * spec.dt_ms / 1000.0), 1.0)
        return self.rng.random((spec.steps, *images.shape), dtype=np.float32) < p

    def _present_learning(self, image: np.ndarray, intensity: float) -> tuple[int, STDPCounts]:
        """One presentation of one image with plasticity on; returns (excitatory spikes, counts)."""
        spec, c, r = self.spec, self.spec.constants, self.spec.rules
        dt = spec.dt_ms
        inputs = self._input_spikes(image[None], intensity)[:, 0]  # [steps, inputs]
        steps_with, index = np.nonzero(inputs)
        active_by_step = np.split(index, np.cumsum(np.bincount(steps_with, minlength=spec.steps))[:-1])
        state = init_state(spec, 1)
        v, ge, gi, ref = (a[0] for a in state[:4])
        v_i, ge_i, ref_i = (a[0] for a in state[4:7])
        pre, post1, post2 = (a[0] for a in state[7:])
        weights, theta, theta_rest = self.weights, self.theta, self.theta_rest
        f32 = np.float32
        d_ge, d_gi = f32(math.exp(-dt / c.tau_ge)), f32(math.exp(-dt / c.tau_gi))
        d_pre, d_post1, d_post2 = (
            f32(math.exp(-dt / c.tau_pre)),
            f32(math.exp(-dt / c.tau_post1)),
            f32(math.exp(-dt / c.tau_post2)),
        )
        d_theta = f32(math.exp(-dt / c.tau_theta))
        direct = spec.uses_direct_inhibition
        adaptive_rates, dominance, spurious = (
            spec.rule("adaptive_rates"),
            spec.rule("adaptive_threshold"),
            spec.rule("spurious_reduction"),
        )
        exc = dict(
            v_rest=c.v_rest_e,
            v_reset=c.v_reset_e,
            tau=c.tau_e,
            e_exc=c.e_exc,
            e_inh=c.e_inh_e,
            refractory_ms=c.refractory_e,
            dt=dt,
        )
        inh = dict(
            v_rest=c.v_rest_i,
            v_reset=c.v_reset_i,
            tau=c.tau_i,
            e_exc=c.e_exc,
            e_inh=c.e_inh_i,
            refractory_ms=c.refractory_i,
            dt=dt,
        )
        no_gi = np.zeros_like(ge_i)
        base_threshold = f32(c.v_thresh_e - c.theta_offset)
        fired_so_far = np.zeros(spec.n_neurons, np.float32)
        counts = STDPCounts(presentations=1)
        weight_updates = 0
        inh_spikes = 0
        for active in active_by_step:
            fired = membrane_step(v, ge, gi, ref, base_threshold + theta, **exc)
            ge *= d_ge
            gi *= d_gi
            theta *= d_theta
            theta_rest *= d_theta
            if not direct:
                fired_i = membrane_step(v_i, ge_i, no_gi, ref_i, c.v_thresh_i, **inh)
                ge_i *= d_ge
            pre *= d_pre
            post1 *= d_post1
            post2 *= d_post2
            # Synaptic events after the threshold and reset, as Brian schedules them.
            if active.size:
                ge += weights[active].sum(0)
                pre[active] = 1.0
                if spurious:
                    live = np.flatnonzero(post1 >= r.depression_trace_floor)
                    if live.size:
                        block = np.ix_(active, live)
                        weights[block] = self._store(weights[block] - f32(c.nu_pre) * post1[live][None, :])
                        weight_updates += active.size * live.size
                else:
                    weights[active] = self._store(stdp_depress(weights, active, post1, c.nu_pre))
                    weight_updates += active.size * spec.n_neurons
            if not direct and fired_i.any():
                gi += f32(c.w_inh_exc) * (fired_i.sum() - fired_i)
                inh_spikes += int(fired_i.sum())
            if fired.any():
                if direct:
                    gi += f32(c.w_inh_exc) * (fired.sum() - fired)
                else:
                    ge_i += f32(c.w_exc_inh) * fired
                fired_so_far += fired
                winners = np.flatnonzero(fired)
                rate = c.nu_post
                if adaptive_rates or (dominance and r.committed_dominance):  # both rules read one commitment
                    baseline = theta_rest[0] if r.rest_relative_commitment else f32(c.theta_init)
                    free = uncommitted(theta, baseline, r)
                if adaptive_rates:
                    rate = f32(c.nu_post) * potentiation_scale(free, r)
                learn = winners[fired_so_far[winners] >= r.min_post_spikes] if spurious else winners
                if learn.size:
                    weights[:, learn] = self._store(stdp_potentiate(weights, learn, pre, post2, rate))
                    weight_updates += spec.n_inputs * learn.size
                plus = f32(c.theta_plus) * fired
                if dominance:
                    extra = f32(r.theta_dominance) * fired_so_far / f32(r.dominance_spikes)
                    if r.committed_dominance:
                        extra *= f32(1.0) - free  # θ is unchanged since free was computed
                    plus *= 1.0 + extra
                theta += plus
                post1[winners] = 1.0
                post2[winners] = 1.0
        exc_spikes = int(fired_so_far.sum())
        if spec.rule("weight_decay") and exc_spikes:
            block = np.ix_(np.flatnonzero(~inputs.any(0)), np.flatnonzero(fired_so_far))
            weights[block] = self._store(weights[block] * f32(1.0 - r.decay))
            weight_updates += len(block[0]) * block[1].shape[1]
        theta *= f32(math.exp(-spec.rest_ms / c.tau_theta))  # the rest period, in closed form
        theta_rest *= f32(math.exp(-spec.rest_ms / c.tau_theta))
        counts.input_spikes = float(inputs.sum())
        counts.exc_spikes = float(exc_spikes)
        counts.inh_spikes = float(inh_spikes)
        counts.synaptic_events = self._synaptic_events(counts.input_spikes, counts.exc_spikes, counts.inh_spikes)
        counts.neuron_updates = float(spec.steps * (spec.n_neurons + spec.inhibitory_neurons))
        counts.trace_updates = float(spec.steps * (spec.n_inputs + 2 * spec.n_neurons))
        counts.weight_updates = float(weight_updates)
        return exc_spikes, counts

    def _synaptic_events(self, input_spikes: float, exc_spikes: float, inh_spikes: float) -> float:
        n = self.spec.n_neurons
        lateral = exc_spikes * (n - 1) if self.spec.uses_direct_inhibition else exc_spikes + inh_spikes * (n - 1)
        return input_spikes * n + lateral

    # -- inference ----------------------------------------------------------
    def respond(self, images, batch_size: int = 256) -> tuple[np.ndarray, STDPCounts]:
        """Excitatory spike counts [S, N] for ``images`` [S, inputs], weights and θ frozen, presented in
        parallel batches; an input with fewer than ``min_spikes`` spikes is presented again at a higher
        intensity (as in training). Also returns the operation counts."""
        responses, counts, _ = self._respond(images, batch_size)
        return responses, counts

    def respond_per_input(self, images, batch_size: int = 256) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """As :meth:`respond`, with each input's own operations ([S] arrays: ``synaptic_events``,
        ``neuron_updates``, ``presentations``), repeats included."""
        responses, _, per_input = self._respond(images, batch_size)
        return responses, per_input

    def _respond(self, images, batch_size: int) -> tuple[np.ndarray, STDPCounts, dict[str, np.ndarray]]:
        images = self._check_images(images)
        spec = self.spec
        responses = np.zeros((len(images), spec.n_neurons), np.float32)
        per_input = {k: np.zeros(len(images)) for k in ("synaptic_events", "neuron_updates", "presentations")}
        counts = STDPCounts()
        for start in range(0, len(images), batch_size):
            part = images[start : start + batch_size]
            pending = np.arange(len(part))
            intensity = 1.0
            for _ in range(spec.constants.max_repeats + 1):
                spikes, phase, input_spikes, inh_spikes = self._present_frozen(part[pending], intensity)
                counts.add(phase)
                rows = start + pending
                responses[rows] = spikes
                per_input["synaptic_events"][rows] += self._synaptic_events(input_spikes, spikes.sum(1), inh_spikes)
                per_input["neuron_updates"][rows] += spec.steps * (spec.n_neurons + spec.inhibitory_neurons)
                per_input["presentations"][rows] += 1
                pending = pending[spikes.sum(1) < spec.constants.min_spikes]
                if len(pending) == 0:
                    break
                intensity += 0.5
        return responses, counts, per_input

    def _present_frozen(self, images: np.ndarray, intensity: float) -> tuple[np.ndarray, STDPCounts, np.ndarray, np.ndarray]:
        """One frozen presentation of a batch: (spike counts [B, N], counts, input spikes [B], inhibitory spikes [B])."""
        spec, c = self.spec, self.spec.constants
        dt = spec.dt_ms
        inputs = self._input_spikes(images, intensity)  # [steps, B, inputs]
        currents = (inputs.reshape(-1, spec.n_inputs).astype(np.float32) @ self.weights).reshape(
            spec.steps, len(images), spec.n_neurons
        )
        state = init_state(spec, len(images))
        v, ge, gi, ref, v_i, ge_i, ref_i = state[:7]
        threshold = np.float32(c.v_thresh_e - c.theta_offset) + self.theta
        d_ge, d_gi = np.float32(math.exp(-dt / c.tau_ge)), np.float32(math.exp(-dt / c.tau_gi))
        exc = dict(
            v_rest=c.v_rest_e,
            v_reset=c.v_reset_e,
            tau=c.tau_e,
            e_exc=c.e_exc,
            e_inh=c.e_inh_e,
            refractory_ms=c.refractory_e,
            dt=dt,
        )
        inh = dict(
            v_rest=c.v_rest_i,
            v_reset=c.v_reset_i,
            tau=c.tau_i,
            e_exc=c.e_exc,
            e_inh=c.e_inh_i,
            refractory_ms=c.refractory_i,
            dt=dt,
        )
        no_gi = np.zeros_like(ge_i)
        total = np.zeros_like(v)
        inh_total = np.zeros(len(images), np.float32)
        for t in range(spec.steps):
            fired = membrane_step(v, ge, gi, ref, threshold, **exc)
            ge *= d_ge
            ge += currents[t]
            gi *= d_gi
            if spec.uses_direct_inhibition:
                gi += np.float32(c.w_inh_exc) * (fired.sum(1, keepdims=True) - fired)
            else:
                fired_i = membrane_step(v_i, ge_i, no_gi, ref_i, c.v_thresh_i, **inh)
                ge_i *= d_ge
                ge_i += np.float32(c.w_exc_inh) * fired
                gi += np.float32(c.w_inh_exc) * (fired_i.sum(1, keepdims=True) - fired_i)
                inh_total += fired_i.sum(1)
            total += fired
        input_spikes = inputs.sum((0, 2)).astype(np.float64)
        counts = STDPCounts(
            presentations=len(images),
            input_spikes=float(input_spikes.sum()),
            exc_spikes=float(total.sum()),
            inh_spikes=float(inh_total.sum()),
        )
        counts.synaptic_events = self._synaptic_events(counts.input_spikes, counts.exc_spikes, counts.inh_spikes)
        counts.neuron_updates = float(len(images) * spec.steps * (spec.n_neurons + spec.inhibitory_neurons))
        return total, counts, input_spikes, inh_total.astype(np.float64)

    # -- readout ------------------------------------------------------------
    def assign_labels(self, responses: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
        """Each neuron's class: the one whose inputs made it fire most on average (labels used only here);
        −1 for a neuron that never fired."""
        responses, labels = np.asarray(responses), np.asarray(labels)
        if responses.ndim != 2 or responses.shape[1] != self.spec.n_neurons:
            raise ValueError(
                f"responses must be [S, {self.spec.n_neurons}] spike counts (one column per neuron), got {list(responses.shape)}"
            )
        if labels.shape != (len(responses),) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"labels must be {len(responses)} integers, one per response, got {labels.dtype} {list(labels.shape)}"
            )
        if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
            raise ValueError(f"labels must lie in 0..{n_classes - 1}, got {labels.min()}..{labels.max()}")
        per_class = np.zeros((n_classes, self.spec.n_neurons), np.float32)
        for cls in range(n_classes):
            chosen = labels == cls
            if chosen.any():
                per_class[cls] = responses[chosen].mean(0)
        self.assignments = np.where(per_class.sum(0) > 0, per_class.argmax(0), -1)
        return self.assignments

    def class_votes(self, responses: np.ndarray, n_classes: int) -> np.ndarray:
        """[S, C] mean spike count of the neurons assigned to each class (0 for a class with none)."""
        votes = np.zeros((len(responses), n_classes), np.float32)
        for cls in range(n_classes):
            members = self.assignments == cls
            if members.any():
                votes[:, cls] = responses[:, members].mean(1)
        return votes

    def _check_images(self, images) -> np.ndarray:
        images = np.asarray(images.cpu() if isinstance(images, torch.Tensor) else images, dtype=np.float32)
        if images.ndim == 0 or len(images) == 0 or images.size == 0:
            raise ConfigError("no inputs to present: the task or split is empty; give it at least one sample")
        images = images.reshape(len(images), -1)
        if images.shape[1] != self.spec.n_inputs:
            raise ConfigError(
                f"inputs have {images.shape[1]} values each, the network {self.spec.n_inputs}: use data of the shape it was built for"
            )
        if not np.isfinite(images).all() or images.min() < 0 or images.max() > 1:
            raise ConfigError("inputs must be finite pixel intensities in [0, 1]: rescale them")
        return images

    def memory_bytes(self) -> int:
        return memory_bytes(self.spec)


def memory_bytes(spec: STDPSpec) -> int:
    """Bytes to store the network: input weights at ``bits`` each, and per neuron its float32 state
    (excitatory: v, ge, gi, refractory timer, θ, two post traces; inhibitory: v, ge, timer), an
    int32 label, and a float32 pre trace per input."""
    weights = spec.n_inputs * spec.n_neurons * spec.bits / 8
    excitatory = spec.n_neurons * (7 * 4 + 4)
    inhibitory = spec.inhibitory_neurons * 3 * 4
    return int(math.ceil(weights + excitatory + inhibitory + spec.n_inputs * 4))


def with_overrides(spec: STDPSpec, **changes) -> STDPSpec:
    """``spec`` with some fields changed (validated again)."""
    return replace(spec, **changes)
