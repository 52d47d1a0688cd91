"""Supervised training of System 1 (BPTT, a loss on every timestep) and System 2."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from fastslow.systems.system1 import System1

LossName = Literal["tet", "cumulative", "final"]


def system1_loss(model: System1, x: torch.Tensor, y: torch.Tensor, loss: LossName = "tet") -> torch.Tensor:
    """Loss over every timestep and exit, so stopping early stays viable.

    ``tet``: mean over t and exits of CE(o_t, y) on each step's output (Deng et al. 2022,
    as SEENN trains); ``cumulative``: mean over t of CE on the cumulative mean output;
    ``final``: CE at t = T only.
    """
    run = model.run(x)
    if loss == "tet":
        outputs = run.step_outputs
    elif loss == "cumulative":
        outputs = run.logits
    elif loss == "final":
        outputs = run.logits[-1:]
    else:
        raise ValueError(f"unknown System 1 loss {loss!r}: use tet, cumulative or final")
    steps, exits, batch, classes = outputs.shape
    return F.cross_entropy(outputs.reshape(-1, classes), y.repeat(steps * exits))


def train_classifier(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    on_batch: Callable[[], None] | None = None,
) -> list[float]:
    """Adam with cosine decay over shuffled minibatches; returns the mean loss per epoch."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    batches_per_epoch = max(1, -(-len(x) // batch_size))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * batches_per_epoch)
    history = []
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator).to(x.device)
        total = 0.0
        for start in range(0, len(x), batch_size):
            index = order[start : start + batch_size]
            loss = loss_fn(model, x[index], y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(index)
            if on_batch is not None:
                on_batch()
        history.append(total / len(x))
    model.eval()
    return history


def ce_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x), y)
