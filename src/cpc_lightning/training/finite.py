"""Finiteness checks shared by the divergence guard and the checkpoints.

:func:`weights_finite` keeps ``AtomicModelCheckpoint`` (and the final checkpoint) from writing
NaN/inf weights; :func:`steps_being_skipped` keeps checkpoints from being written while the guard
is skipping steps or the loss is exploded. Imports nothing of cpc_lightning, so
``training/guard.py`` and ``training/checkpointing.py`` both build on it without a circle.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch


def tensors_finite(tensors: list[torch.Tensor]) -> bool:
    """Whether every element of every tensor is finite (one reduction per device, one sync)."""
    if not tensors:
        return True
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for t in tensors:
        by_device.setdefault(t.device, []).append(t.detach())
    for group in by_device.values():
        # inf-norm = max |x|: inf for an inf anywhere, NaN for a NaN anywhere
        norms = torch._foreach_norm(group, float("inf"))
        if not bool(torch.isfinite(torch.stack(norms)).all()):
            return False
    return True


def weights_finite(trainer: pl.Trainer, module: torch.nn.Module) -> bool:
    """Whether every parameter and floating buffer of ``module`` is finite, on every rank."""
    tensors = [p for p in module.parameters()]
    tensors += [b for b in module.buffers() if b.is_floating_point()]
    return not trainer.strategy.reduce_boolean_decision(not tensors_finite(tensors), all=False)


def steps_being_skipped(trainer: pl.Trainer) -> bool:
    """Whether a callback of ``trainer`` (the divergence guard) finds the weights suspect right
    now (steps being skipped, or the loss exploded): its ``suspect`` is True, so the state is
    not worth a checkpoint."""
    return any(bool(getattr(cb, "suspect", False)) for cb in trainer.callbacks)
