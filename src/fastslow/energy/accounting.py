"""Where the energy of a spike (and of a MAC) is counted.

Operation counts come from real activity: System 1's recorded spikes (see
:class:`fastslow.systems.records.S1Record`), ANN MACs counted per layer by hooks.
Energies are per input, in microjoules (µJ), under an :class:`EnergyProfile`.
Memory traffic is not counted (see the profile's caveat). Where the profile prices a link, an
escalated input also pays for the bytes it sends and receives (:func:`escalation_bytes`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from fastslow.energy.profile import EnergyProfile

# "tx" only under a profile that prices the link (EnergyProfile.has_link).
ENERGY_TERMS: tuple[str, ...] = ("s1_synaptic", "s1_dense", "s1_neuron", "policy", "s2", "tx")
PJ_PER_UJ = 1e6
# Bytes of one value on the link: inputs go as float32, System 2 answers with float32 logits.
LINK_VALUE_BYTES = 4


def escalation_bytes(input_shape: tuple[int, ...], n_classes: int) -> tuple[int, int]:
    """(bytes sent, bytes received) per escalated input: the input as float32 (4 · its values) and
    System 2's logits as float32 (4 · classes). The one definition: the edge client sends exactly
    this payload (``application/x-npy``, float32); headers, framing and retries are not counted."""
    return LINK_VALUE_BYTES * math.prod(input_shape), LINK_VALUE_BYTES * n_classes


@dataclass
class OpCounts:
    """Per-input operation counts, each a float tensor [B]; ``bytes_sent``/``bytes_received``: the
    link's payload (None: nothing crossed it)."""

    synaptic_ops: torch.Tensor
    s1_dense_macs: torch.Tensor
    neuron_updates: torch.Tensor
    policy_macs: torch.Tensor
    s2_macs: torch.Tensor
    bytes_sent: torch.Tensor | None = None
    bytes_received: torch.Tensor | None = None

    def energy_terms_uj(self, profile: EnergyProfile) -> dict[str, torch.Tensor]:
        """Energy terms per input in µJ (keys: :data:`ENERGY_TERMS`; ``tx`` only where ``profile``
        prices the link)."""
        terms = {
            "s1_synaptic": self.synaptic_ops * profile.E_AC_pJ / PJ_PER_UJ,
            "s1_dense": self.s1_dense_macs * profile.E_MAC_pJ / PJ_PER_UJ,
            "s1_neuron": self.neuron_updates * profile.E_NEURON_pJ / PJ_PER_UJ,
            "policy": self.policy_macs * profile.E_MAC_pJ / PJ_PER_UJ,
            "s2": self.s2_macs * profile.E_MAC_pJ / PJ_PER_UJ,
        }
        if profile.has_link:
            zero = torch.zeros_like(self.s2_macs)
            sent = zero if self.bytes_sent is None else self.bytes_sent
            received = zero if self.bytes_received is None else self.bytes_received
            terms["tx"] = (sent * profile.E_TX_BYTE_pJ + received * profile.E_RX_BYTE_pJ) / PJ_PER_UJ
        return terms


def mac_energy_uj(macs: float, profile: EnergyProfile) -> float:
    """µJ of ``macs`` multiply-accumulates under ``profile`` (e.g. System 2's MACs per input)."""
    return macs * profile.E_MAC_pJ / PJ_PER_UJ


def link_energy_uj(link_bytes: tuple[float, float], profile: EnergyProfile) -> float:
    """µJ of one escalation's link traffic, ``link_bytes`` (sent, received), under ``profile``
    (0 where it prices no link)."""
    if not profile.has_link:
        return 0.0
    return (link_bytes[0] * profile.E_TX_BYTE_pJ + link_bytes[1] * profile.E_RX_BYTE_pJ) / PJ_PER_UJ


class RecordedRun(Protocol):
    """What :func:`charge` reads of System 1's record (:class:`fastslow.systems.records.S1Record`)."""

    synaptic_ops: torch.Tensor  # [K, T, N]
    dense_macs: torch.Tensor  # [K, T, N]
    neuron_updates: torch.Tensor  # [K]
    exit_layers: tuple[int, ...]


class WhatRan(Protocol):
    """What :func:`charge` reads of a routing (:class:`fastslow.policies.Routing`), tensors [N]."""

    escalate: torch.Tensor
    timesteps: torch.Tensor
    exit_taken: torch.Tensor
    policy_macs: torch.Tensor
    cascade: bool


@dataclass
class Charge:
    """Per-input operation counts and energy terms (µJ, keys :data:`ENERGY_TERMS`), tensors [N]."""

    ops: OpCounts
    terms_uj: dict[str, torch.Tensor]

    @property
    def total_uj(self) -> torch.Tensor:
        """µJ per input [N]: the sum of the terms."""
        return sum(self.terms_uj.values())


def charge(
    record: RecordedRun,
    routing: WhatRan,
    s2_macs: float,
    profile: EnergyProfile,
    totals: tuple[torch.Tensor, torch.Tensor] | None = None,
    link_bytes: tuple[float, float] = (0.0, 0.0),
) -> Charge:
    """The one energy charge: what ``routing`` ran on each input of ``record`` under ``profile``.

    System 1 is charged from its recorded spikes up to each input's ``timesteps`` at the components
    its exit needs (every head up to it for a cascade), the policy its own MACs, System 2 ``s2_macs``
    per escalated input, and the link ``link_bytes`` (sent, received: :func:`escalation_bytes`) per
    escalated input where ``profile`` prices it. Evaluation and serving both call this. ``totals``: each input's
    (synaptic ops, dense MACs) per component already summed up to its stop, [B, K] each, where the
    caller has them (serving's compiled path); else they are summed from the record's steps.
    """
    synaptic, dense, neurons = s1_op_counts(
        record.synaptic_ops,
        record.dense_macs,
        record.neuron_updates,
        record.exit_layers,
        routing.timesteps.long(),
        routing.exit_taken.long(),
        routing.cascade,
        totals,
    )
    escalated = routing.escalate.to(synaptic.dtype)
    ops = OpCounts(
        synaptic_ops=synaptic,
        s1_dense_macs=dense,
        neuron_updates=neurons,
        policy_macs=routing.policy_macs.to(synaptic.dtype),
        s2_macs=escalated * s2_macs,
        bytes_sent=escalated * link_bytes[0],
        bytes_received=escalated * link_bytes[1],
    )
    return Charge(ops, ops.energy_terms_uj(profile))


def exit_component_mask(exit_layers: tuple[int, ...], n_layers: int, cascade: bool = False) -> torch.Tensor:
    """[E, K] mask of the components an answer from each exit needs: backbone up to its layer, and its
    head (with ``cascade``, every head up to it: a cascade evaluates each shallower head first)."""
    n_exits = len(exit_layers)
    mask = torch.zeros(n_exits, n_layers + n_exits)
    for exit_index, layer in enumerate(exit_layers):
        mask[exit_index, : layer + 1] = 1.0
        first_head = 0 if cascade else exit_index
        mask[exit_index, n_layers + first_head : n_layers + exit_index + 1] = 1.0
    return mask


def s1_op_counts(
    synaptic_ops: torch.Tensor,
    dense_macs: torch.Tensor,
    neuron_updates: torch.Tensor,
    exit_layers: tuple[int, ...],
    timesteps_run: torch.Tensor,
    exit_taken: torch.Tensor,
    cascade: bool = False,
    totals: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """System 1's (synaptic ops, dense MACs, neuron updates) per input for what actually ran.

    ``synaptic_ops``/``dense_macs`` [K, T, B] and ``neuron_updates`` [K] as recorded by a run;
    ``timesteps_run`` [B] in 0..T (0 = System 1 never ran) and ``exit_taken`` [B] in 0..E-1;
    ``cascade``: charge every head up to the exit taken (see :func:`exit_component_mask`);
    ``totals``: the per-step counts already summed up to each input's stop, [B, K] each (then the
    per-step counts are not read).
    """
    n_exits = len(exit_layers)
    n_components = len(neuron_updates)
    mask = exit_component_mask(exit_layers, n_components - n_exits, cascade).to(neuron_updates)[exit_taken]  # [B, K]
    steps = timesteps_run.long()
    if totals is None:
        index = (steps - 1).clamp(min=0)
        batch = torch.arange(synaptic_ops.shape[2], device=synaptic_ops.device)
        totals = synaptic_ops.cumsum(1)[:, index, batch].T, dense_macs.cumsum(1)[:, index, batch].T  # [B, K] each
    syn_upto, dense_upto = totals
    ran = (steps > 0).to(mask.dtype)
    synaptic = (syn_upto.to(mask.dtype) * mask).sum(1) * ran
    dense = (dense_upto.to(mask.dtype) * mask).sum(1) * ran
    neurons = (mask * neuron_updates).sum(1) * steps.to(mask.dtype)
    return synaptic, dense, neurons


def count_macs(module: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """MACs per input of every Conv/Linear layer of an ANN, by a forward pass with hooks.

    Keys are module names; bias additions, batch norm (folded into the convolution at inference)
    and activations are not counted. A module with ``counts_additions = True`` (a residual block) is
    charged one MAC per output value for its residual addition, under ``"<name>.add"`` (an
    over-count: an addition alone is the E_AC part of a MAC).
    """
    counts: dict[str, int] = {}
    hooks = []

    def make_hook(name: str):
        def hook(mod: nn.Module, _inputs, output: torch.Tensor) -> None:
            if isinstance(mod, nn.Linear):
                counts[name] = counts.get(name, 0) + mod.in_features * mod.out_features * (
                    output.numel() // output.shape[0] // mod.out_features
                )
            elif isinstance(mod, nn.modules.conv._ConvNd):
                per_output = (mod.in_channels // mod.groups) * math.prod(mod.kernel_size)
                counts[name] = counts.get(name, 0) + per_output * (output.numel() // output.shape[0])
            elif getattr(mod, "counts_additions", False):
                counts[f"{name}.add"] = counts.get(f"{name}.add", 0) + output.numel() // output.shape[0]

        return hook

    for name, mod in module.named_modules():
        if isinstance(mod, (nn.Linear, nn.modules.conv._ConvNd)) or getattr(mod, "counts_additions", False):
            hooks.append(mod.register_forward_hook(make_hook(name or type(mod).__name__)))
    try:
        device = next((p.device for p in module.parameters()), torch.device("cpu"))
        was_training = module.training
        module.eval()
        with torch.no_grad():
            module(torch.zeros(1, *input_shape, device=device))
        module.train(was_training)
    finally:
        for hook in hooks:
            hook.remove()
    return counts


def memory_bytes(parameters: int, state_neurons: int, profile: EnergyProfile) -> int:
    """Footprint = weights × weight_bits/8 + neuron state × state_bits/8, in bytes."""
    return math.ceil(parameters * profile.weight_bits / 8 + state_neurons * profile.state_bits / 8)


def precision_scale(bits: int, profile: EnergyProfile) -> float:
    """Energy of a b-bit accumulate relative to the profile's: adders scale about linearly with
    width (Horowitz, ISSCC 2014: 8/16/32-bit integer add 0.03/0.05/0.1 pJ), so b / weight_bits,
    never above 1 (a narrower weight does not make the profile's own adder dearer)."""
    return min(1.0, bits / profile.weight_bits)


def stdp_energy_uj(counts, profile: EnergyProfile, bits: int) -> dict[str, float]:
    """Energy terms in µJ per presentation of an STDP network's phase (see
    :class:`fastslow.stdp.STDPCounts`): synaptic events × E_AC at the weights' precision, neuron
    updates × E_NEURON, and, while learning, weight and trace updates × E_MAC (one multiply-add
    each; weight updates at the weights' precision)."""
    per = counts.per_presentation()
    scale = precision_scale(bits, profile)
    return {
        "synaptic": per["synaptic_events"] * profile.E_AC_pJ * scale / PJ_PER_UJ,
        "neuron": per["neuron_updates"] * profile.E_NEURON_pJ / PJ_PER_UJ,
        "learning": (per["weight_updates"] * scale + per["trace_updates"]) * profile.E_MAC_pJ / PJ_PER_UJ,
    }
