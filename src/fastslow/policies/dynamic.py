"""Policies that stop System 1 early: SEENN-I over timesteps, cascade exits over layers, the AET oracle.

All take System 1's recorded cumulative-mean logits ``logits`` [T, E, N, C] (see
:class:`fastslow.systems.system1.S1Run`) and return a :class:`Routing` whose
``timesteps``/``exit_taken`` say where each input stopped, so energy is charged for
exactly that.
"""

from __future__ import annotations

import torch

from fastslow.policies.base import Routing
from fastslow.policies.confidence import ConfidenceMeasure, confidence_policy_macs, confidence_score


def _first_true(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the first True along dim 0 of ``mask`` [T, N] (T where none) and whether any was True."""
    steps = mask.shape[0]
    order = torch.arange(steps, 0, -1, device=mask.device)[:, None]  # earlier steps weigh more
    first = torch.where(mask.any(0), (mask * order).argmax(0), torch.full_like(mask[0], steps - 1, dtype=torch.long))
    return first.long(), mask.any(0)


def seenn1_confidence(logits: torch.Tensor, temperature: float = 1.0, measure: ConfidenceMeasure = "max_softmax",
                      steps: torch.Tensor | None = None) -> torch.Tensor:
    """SEENN-I's confidence at every step [T, N]: softmax(S_t / τ) of the cumulative *sum* S_t of outputs.

    ``logits`` [T, N, C] are cumulative means, so S_t = t · logits[t-1]. ``steps``: the t of each row
    of ``logits`` instead, shaped as its leading dimensions or broadcast to them (serving's chunks
    start after step 1, and its stragglers each have their own t).
    """
    if steps is None:
        steps = torch.arange(1, logits.shape[0] + 1, device=logits.device)[:, None]
    return confidence_score(logits * steps[..., None].to(logits.dtype) / temperature, measure)


def seenn1_routing(
    logits: torch.Tensor,
    threshold: float,
    *,
    temperature: float = 1.0,
    measure: ConfidenceMeasure = "max_softmax",
    escalate_unconfident: bool = False,
) -> Routing:
    """SEENN-I (Li et al. 2023): stop at the first t whose confidence exceeds ``threshold``, else run to T.

    ``logits`` [T, E, N, C]; the final exit answers. With ``escalate_unconfident``, inputs that
    reach T still below the threshold go to System 2. The policy costs C MACs per step checked.
    """
    final = logits[:, -1]
    confident = seenn1_confidence(final, temperature, measure) > threshold
    first, any_confident = _first_true(confident)
    steps = first + 1
    n_classes = logits.shape[-1]
    return Routing(
        escalate=(~any_confident) & escalate_unconfident,
        timesteps=steps,
        exit_taken=torch.full_like(steps, logits.shape[1] - 1),
        policy_macs=steps.float() * confidence_policy_macs(n_classes),
    )


def aet_oracle_routing(logits: torch.Tensor, labels: torch.Tensor) -> Routing:
    """The oracle's average exit time (AET): each input stops at the first t where System 1 is right."""
    final = logits[:, -1]
    right = final.argmax(-1) == labels[None]
    first, _ = _first_true(right)
    steps = first + 1
    return Routing(
        escalate=torch.zeros_like(steps, dtype=torch.bool),
        timesteps=steps,
        exit_taken=torch.full_like(steps, logits.shape[1] - 1),
        policy_macs=torch.zeros(len(steps)),
    )


def cascade_routing(
    logits: torch.Tensor,
    threshold: float,
    *,
    measure: ConfidenceMeasure = "max_softmax",
    escalate_unconfident: bool = False,
) -> Routing:
    """Cascade exits (Leroux et al. 2017): heads are checked in depth order after T steps; an input
    leaves at the first head whose confidence reaches ``threshold`` (else the last head answers, or
    System 2 with ``escalate_unconfident``). Every head checked is charged (``cascade=True``).
    """
    at_t = logits[-1]  # [E, N, C]
    confident = confidence_score(at_t, measure) >= threshold  # [E, N]
    first, any_confident = _first_true(confident)
    steps = torch.full_like(first, logits.shape[0])
    n_classes = logits.shape[-1]
    return Routing(
        escalate=(~any_confident) & escalate_unconfident,
        timesteps=steps,
        exit_taken=first,
        policy_macs=(first + 1).float() * confidence_policy_macs(n_classes),
        cascade=True,
    )
