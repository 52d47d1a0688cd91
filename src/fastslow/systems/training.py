"""Supervised training of System 1 (BPTT, a loss on every timestep) and System 2."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.distributed as dist
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
    data_parallel: bool = False,
) -> list[float]:
    """Adam with cosine decay over shuffled minibatches; returns the mean loss per epoch.

    ``data_parallel``: train as one of the processes of ``torch.distributed``'s default group (which
    the caller initialised), each holding the whole ``x``: every process draws the same seeded
    permutation, takes every W-th input of each batch of ``batch_size`` (the global batch: the
    learning rate and the steps per epoch mean what they mean in one process), and the gradients
    are summed over processes weighted by each share's size, so a step is the one-process step on
    the same batch up to float rounding (and the draws of a stochastic ``loss_fn``) — except in a
    network with batch norm, which normalises each share by its own statistics (as DDP does without
    SyncBatchNorm). Rank 0's parameters are broadcast first; batch-norm running statistics are
    averaged the same way.
    """
    world, rank = 1, 0
    if data_parallel:
        world, rank = dist.get_world_size(), dist.get_rank()
        _broadcast_state(model)
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
            batch = order[start : start + batch_size]
            index = batch[rank::world]
            optimizer.zero_grad(set_to_none=True)
            if len(index):
                loss = loss_fn(model, x[index], y[index])
                loss.backward()
            else:  # a last batch smaller than the world leaves some processes nothing: they add zeros
                loss = torch.zeros((), device=x.device)
            if data_parallel:
                total += float(_all_reduce_step(model, len(index) / len(batch), loss.detach() * len(index)))
            else:
                total += loss.item() * len(index)
            optimizer.step()
            scheduler.step()
            if on_batch is not None:
                on_batch()
        history.append(total / len(x))
    model.eval()
    return history


def _running_stats(model: nn.Module) -> list[torch.Tensor]:
    """Batch-norm running means and variances (each process's are of its share of the batch)."""
    return [
        buffer
        for module in model.modules()
        if getattr(module, "track_running_stats", False)
        for buffer in (module.running_mean, module.running_var)
        if buffer is not None
    ]


def _broadcast_state(model: nn.Module) -> None:
    """Every process starts from rank 0's parameters and buffers."""
    for tensor in [*model.parameters(), *model.buffers()]:
        dist.broadcast(tensor.data, src=0)


def _all_reduce_step(model: nn.Module, share: float, loss_sum: torch.Tensor) -> torch.Tensor:
    """Sum ``share`` × this process's gradients (the mean over its inputs) over the processes, in
    place, in one all-reduce: the gradient of the mean loss over the whole batch. Running
    statistics are averaged with the same weights; a parameter keeps no gradient where no process
    gave it one (as in one process). Returns the loss summed over the whole batch."""
    params = [p for p in model.parameters() if p.requires_grad]
    stats = _running_stats(model)
    parts = [torch.tensor([0.0 if p.grad is None else 1.0 for p in params], device=loss_sum.device)]
    parts += [(p.grad * share if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
    parts += [(s * share).reshape(-1) for s in stats]
    parts.append(loss_sum.reshape(1))
    flat = torch.cat([part.to(loss_sum.dtype) for part in parts])
    dist.all_reduce(flat)
    had_grad, offset = flat[: len(params)], len(params)
    for i, p in enumerate(params):
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).to(p.dtype) if had_grad[i] > 0 else None
        offset += n
    for s in stats:
        n = s.numel()
        s.copy_(flat[offset : offset + n].view_as(s))
        offset += n
    return flat[offset]


def ce_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x), y)
