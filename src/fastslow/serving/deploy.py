"""A fit, deployed: every strategy it evaluated, answering new inputs (``fastslow.load(DIR)``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fastslow.data import check_inputs
from fastslow.energy.profile import EnergyProfile
from fastslow.policies import Policy
from fastslow.serving.adaptive import Answer, FastSlow
from fastslow.serving.escalation import System2Endpoint
from fastslow.systems.system1 import System1


class UnknownStrategy(ValueError):
    """A strategy name that the fit does not deploy (the message lists those it does)."""


@dataclass
class Deployment:
    """System 1, System 2 and every policy point of one fit, with its energy profile.

    ``seed`` seeds the spike encoder's draws and ``batch_size`` splits the inputs as the evaluation
    did, so predicting on the fit's test split reproduces its results.json entry for the strategy.
    ``system2_checkpoint`` and ``system2_sha256`` (hex SHA-256 of its bytes) name the System 2 a
    fit's folder holds, so an edge and a server can check they run the same one; ``default_strategy``
    is the fit's cheapest strategy within half a point of System 2 (``"system2"`` if none).
    """

    system1: System1
    system2: nn.Module
    policies: list[Policy]
    profile: EnergyProfile
    s2_macs: int
    seed: int = 0
    batch_size: int = 256
    system2_checkpoint: Path | None = None
    system2_sha256: str | None = None
    default_strategy: str = "system2"
    # Where escalations go when not to ``system2`` in this process (fastslow.load(DIR, s2_url=URL)).
    remote: System2Endpoint | None = None

    def __post_init__(self) -> None:
        self._servers: dict[str, FastSlow] = {}

    @property
    def strategies(self) -> list[str]:
        """The names :meth:`predict` takes (the references that read labels are left out)."""
        return [p.name for p in self.policies if p.deployable]

    def policy(self, strategy: str) -> Policy:
        """The policy point named ``strategy``; :class:`UnknownStrategy` lists the known ones."""
        for policy in self.policies:
            if policy.name == strategy:
                if not policy.deployable:
                    raise UnknownStrategy(
                        f"strategy {strategy!r} is a reference that reads the labels, not deployable: "
                        f"use one of {', '.join(self.strategies)}"
                    )
                return policy
        raise UnknownStrategy(f"unknown strategy {strategy!r}: use one of {', '.join(self.strategies)}")

    def server(self, strategy: str) -> FastSlow:
        """The :class:`FastSlow` that answers with ``strategy`` (kept, so its chunk planner learns)."""
        if strategy not in self._servers:
            self._servers[strategy] = FastSlow(
                self.system1,
                self.system2 if self.remote is None else self.remote,
                self.policy(strategy),
                s2_macs=self.s2_macs,
                profile=self.profile,
            )
        return self._servers[strategy]

    @torch.no_grad()
    def predict(self, x: torch.Tensor, strategy: str, *, seed: int | None = None, on_batch=None) -> Answer:
        """Answers for inputs ``x`` [N, *input_shape] in [0, 1] with ``strategy`` (a name in
        :attr:`strategies`), in batches of ``batch_size``; ``seed`` (default the fit's evaluation seed)
        seeds a rate code's spikes; ``on_batch()`` is called after each batch. Inputs outside [0, 1]
        or NaN/inf raise a :class:`~fastslow.errors.DataError` before any batch runs."""
        server = self.server(strategy)
        check_inputs(x)
        device = next(self.system1.parameters()).device
        generator = torch.Generator(device=device).manual_seed(self.seed if seed is None else seed)
        parts = []
        for start in range(0, len(x), self.batch_size):
            parts.append(server.predict(x[start : start + self.batch_size].to(device), generator=generator))
            if on_batch is not None:
                on_batch()
        if not parts:
            raise ValueError("no inputs to predict: pass a non-empty batch")
        return Answer(
            *(
                torch.cat([getattr(p, name) for p in parts])
                for name in ("predictions", "escalated", "exits", "timesteps", "energy_uj")
            ),
            {term: torch.cat([p.energy_terms_uj[term] for p in parts]) for term in parts[0].energy_terms_uj},
            torch.cat([p.degraded for p in parts]),
        )


def prediction_rows(answer: Answer, labels: torch.Tensor | None = None) -> list[dict]:
    """One dict per input, in input order, as ``fastslow predict`` writes them and ``fastslow serve``
    answers: index, answer, system, exit (None for System 2), timesteps, energy_uj (µJ), degraded
    (System 2 could not be reached, so System 1 answered); with ``labels`` [N] also label and correct."""
    rows = []
    for i in range(len(answer.predictions)):
        escalated = bool(answer.escalated[i])
        row = {
            "index": i,
            "answer": int(answer.predictions[i]),
            "system": "system2" if escalated else "system1",
            "exit": None if escalated else int(answer.exits[i]),
            "timesteps": int(answer.timesteps[i]),
            "energy_uj": float(answer.energy_uj[i]),
            "degraded": bool(answer.degraded[i]),
        }
        if labels is not None:
            row.update(label=int(labels[i]), correct=row["answer"] == int(labels[i]))
        rows.append(row)
    return rows
