"""Where escalated inputs go: System 2 in this process, or behind a service (:mod:`fastslow.serving.remote`).

:class:`~fastslow.serving.FastSlow` calls System 2 through :class:`System2Endpoint` alone, so the
local and the remote paths share every other line. An endpoint may fail to answer some inputs
(the service is down): it says which in :attr:`S2Reply.reached`, and those inputs are answered by
System 1 instead (degraded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn


@dataclass
class S2Reply:
    """System 2's reply for M escalated inputs: ``answers`` [M] (class indices; rows not reached
    hold anything) and ``reached`` [M] bool (False: System 2 could not be reached for that input)."""

    answers: torch.Tensor
    reached: torch.Tensor


@runtime_checkable
class System2Endpoint(Protocol):
    """What answers escalated inputs: ``answer(x)`` for ``x`` [M, *input_shape] in [0, 1]."""

    def answer(self, x: torch.Tensor) -> S2Reply: ...


class LocalSystem2:
    """System 2 as a module in this process: it always answers."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module.eval()

    @torch.no_grad()
    def answer(self, x: torch.Tensor) -> S2Reply:
        answers = self.module(x).argmax(1).cpu()
        return S2Reply(answers, torch.ones(len(answers), dtype=torch.bool))
