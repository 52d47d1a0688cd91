"""An STDP network as fastslow's System 1: class votes, a confidence, escalation to System 2.

The network's answer is the class whose assigned neurons fired most on average; its confidence is
that class's share of all votes (0 when nothing fired, so silence always escalates). The
``confidence@θ`` policy escalates an input to System 2 when the confidence is below θ. Energy per
input is charged for what ran: System 1's synaptic events and neuron updates (repeats included)
for every input, System 2's MACs for the escalated ones; ``training_energy_uj`` is the STDP
learning's arithmetic (System 2's supervised training is not modelled).
"""

from __future__ import annotations

import numpy as np
import torch

from fastslow.energy.accounting import PJ_PER_UJ, count_macs, precision_scale
from fastslow.energy.profile import EnergyProfile
from fastslow.stdp.network import STDPNetwork
from fastslow.systems.system2 import System2Spec, build_system2
from fastslow.systems.training import ce_loss, train_classifier

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def votes_and_confidence(
    network: STDPNetwork, images: np.ndarray, n_classes: int
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(answers [S], confidences [S] in [0, 1], per-input operations) of the frozen network."""
    responses, ops = network.respond_per_input(images)
    votes = network.class_votes(responses, n_classes)
    total = votes.sum(1)
    confidence = np.divide(votes.max(1), total, out=np.zeros_like(total), where=total > 0)
    return votes.argmax(1), confidence, ops


def train_system2(
    x: np.ndarray, y: np.ndarray, input_shape: tuple[int, ...], n_classes: int, epochs: int, seed: int
) -> tuple[torch.nn.Module, int]:
    """fastslow's default System 2 for the shape, trained with labels; returns (model, MACs per input)."""
    torch.manual_seed(seed)
    model = build_system2(System2Spec(input_shape=tuple(input_shape), n_classes=n_classes))
    train_classifier(
        model,
        torch.as_tensor(x).reshape(len(x), *input_shape),
        torch.as_tensor(y),
        ce_loss,
        epochs=epochs,
        lr=2e-3,
        batch_size=64,
        seed=seed,
    )
    return model.eval(), sum(count_macs(model, tuple(input_shape)).values())


def escalation_strategies(
    network: STDPNetwork,
    system2: torch.nn.Module,
    s2_macs: int,
    x_test: np.ndarray,
    y_test: np.ndarray,
    input_shape: tuple[int, ...],
    n_classes: int,
    profile: EnergyProfile,
    training_energy_uj: float,
    thresholds: tuple[float, ...] = THRESHOLDS,
) -> list[dict]:
    """``system1``, ``system2`` and ``confidence@θ`` rows (results.json's strategy fields)."""
    s1_answer, confidence, ops = votes_and_confidence(network, x_test, n_classes)
    with torch.no_grad():
        s2_answer = system2(torch.as_tensor(x_test).reshape(len(x_test), *input_shape)).argmax(1).numpy()
    scale = precision_scale(network.spec.bits, profile)
    s1_synaptic = ops["synaptic_events"] * profile.E_AC_pJ * scale / PJ_PER_UJ
    s1_neuron = ops["neuron_updates"] * profile.E_NEURON_pJ / PJ_PER_UJ
    s2_energy = s2_macs * profile.E_MAC_pJ / PJ_PER_UJ
    s2_energy_uj = float(s2_energy)

    def row(name: str, family: str, escalate: np.ndarray, runs_s1: bool, knob: dict) -> dict:
        answer = np.where(escalate, s2_answer, s1_answer)
        terms = {
            "s1_synaptic": float(s1_synaptic.mean()) if runs_s1 else 0.0,
            "s1_neuron": float(s1_neuron.mean()) if runs_s1 else 0.0,
            "s2": float(escalate.mean() * s2_energy),
        }
        energy = sum(terms.values())
        return {
            "name": name,
            "family": family,
            "accuracy": float((answer == y_test).mean()),
            "escalation_rate": float(escalate.mean()),
            "energy_uj": energy,
            "energy_terms_uj": terms,
            "energy_ratio_vs_s2": energy / s2_energy_uj,
            "training_energy_uj": training_energy_uj if runs_s1 else 0.0,
            "knob": knob,
        }

    none, every = np.zeros(len(y_test), bool), np.ones(len(y_test), bool)
    rows = [row("system1", "system1", none, True, {}), row("system2", "system2", every, False, {})]
    rows += [
        row(f"confidence@{t:g}", "confidence", confidence < t, True, {"threshold": t, "measure": "vote_share"})
        for t in thresholds
    ]
    return rows
