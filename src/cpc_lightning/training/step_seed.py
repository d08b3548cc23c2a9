"""Random draws that depend only on (seed, step, rank): a resumed run draws what the
uninterrupted run drew.

The negatives (``torch.rand`` on the device), dropout and any user code drawing from the global
RNGs see, at every training step, torch, numpy and Python generators seeded from ``(seed,
global step, global rank)``, and at every validation run from ``(seed, global step, rank,
"val")``. Nothing that happened before the step (a restart, a validation run, a data-loader
iterator created at another moment) changes what the step draws, so no RNG state needs saving.
The data order is the other half of exact resume: the loaders are
:class:`~cpc_lightning.data.resumable.ResumableLoader`, whose place in the epoch is part of the
checkpoint.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from cpc_lightning.data.resumable import seed_of

_VALIDATION = 0x5EED


def seed_all(seed: int) -> None:
    """Seed torch (CPU and every CUDA device), numpy's global and Python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


class StepSeed(Callback):
    """Reseed the global RNGs from ``(seed, step, rank)`` before each training step and each
    validation run (see the module docstring)."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        seed_all(seed_of(self.seed, trainer.global_step, trainer.global_rank))

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seed_all(seed_of(self.seed, trainer.global_step, trainer.global_rank, _VALIDATION))
