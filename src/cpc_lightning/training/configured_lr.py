"""A resumed run trains with the learning rate of its config, not the checkpoint's.

Lightning restores the optimizer's ``param_groups`` (``lr``, ``initial_lr``) and the
scheduler's ``base_lrs`` from the checkpoint, so ``resume=<dir> model.optimizer.lr=<lower>`` (the
divergence guard's first fix) would silently keep the old rate. :class:`ConfiguredLR` records
the configured initial rates before the restore (``on_fit_start``) and, after it
(``on_train_start``), rescales every group and the scheduler's base rates to them: the schedule
goes on from the restored step, at the configured scale.
"""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

log = logging.getLogger("cpc_lightning.train")


def _initial(group: dict[str, Any]) -> float:
    return float(group.get("initial_lr", group["lr"]))


class ConfiguredLR(Callback):
    """Apply the configured initial learning rates after a checkpoint restored others."""

    def __init__(self) -> None:
        self._configured: list[list[float]] = []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Record each optimizer group's configured initial rate (before the restore)."""
        self._configured = [[_initial(g) for g in opt.param_groups] for opt in trainer.optimizers]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Rescale restored rates that differ from the configured ones."""
        schedulers = [cfg.scheduler for cfg in trainer.lr_scheduler_configs]
        for opt, configured in zip(trainer.optimizers, self._configured, strict=False):
            for i, (group, want) in enumerate(zip(opt.param_groups, configured, strict=False)):
                had = _initial(group)
                if had == want or had == 0:
                    continue
                group["lr"] = group["lr"] * want / had
                group["initial_lr"] = want
                for sched in schedulers:
                    if getattr(sched, "optimizer", None) is opt and i < len(sched.base_lrs):
                        sched.base_lrs[i] = want
                if trainer.is_global_zero:
                    log.info(
                        "resume: learning rate %g (configured), not the checkpoint's %g", want, had
                    )
