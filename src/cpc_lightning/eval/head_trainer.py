"""The probe-head trainer both probes use (the linear/MLP probe and the CTC head): Adam with a
cosine schedule over shuffled mini-batches, for at least ``min_steps`` updates."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from cpc_lightning.progress import track


def epochs_for(num_items: int, batch_size: int, epochs: int, min_steps: int) -> int:
    """``epochs``, raised so that there are at least ``min_steps`` updates."""
    per_epoch = max(1, math.ceil(num_items / batch_size))
    return max(epochs, math.ceil(min_steps / per_epoch))


def train_head(
    head: nn.Module,
    num_items: int,
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    *,
    epochs: int,
    min_steps: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    generator: torch.Generator,
    desc: str | None = None,
) -> int:
    """Train ``head`` in place; return the epochs run.

    Each epoch draws one permutation of ``num_items`` from ``generator`` and calls
    ``batch_loss(indices (b,))`` per mini-batch of ``batch_size``; Adam (``lr``, L2
    ``weight_decay``) steps and a cosine schedule over every update. ``desc``: show progress
    (epochs) under that name."""
    epochs = epochs_for(num_items, batch_size, epochs, min_steps)
    per_epoch = max(1, math.ceil(num_items / batch_size))
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, epochs * per_epoch))
    loop = track(range(epochs), desc, unit="epoch") if desc else range(epochs)
    for _ in loop:
        order = torch.randperm(num_items, generator=generator)
        for i in range(0, num_items, batch_size):
            loss = batch_loss(order[i : i + batch_size])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return epochs
