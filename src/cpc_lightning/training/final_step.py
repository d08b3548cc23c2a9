"""The step that reaches ``trainer.max_steps`` is always logged and validated."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback


def reached_max_steps(trainer: pl.Trainer) -> bool:
    """Whether the step just taken is the last one ``trainer.max_steps`` allows."""
    return 0 < trainer.max_steps <= trainer.global_step


class FinalStep(Callback):
    """Makes the step that reaches ``trainer.max_steps`` a logging and validation step.

    Lightning logs every ``log_every_n_steps`` and validates every ``val_check_interval`` steps,
    so a run whose ``max_steps`` falls between them would end without its last rows in
    ``metrics.csv`` and without the ``val/`` metric a sweeper optimises. Asking the trainer to
    stop at that step (where it stops anyway) makes Lightning log, validate and flush once more.
    """

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Request the stop once the global step reaches ``max_steps``."""
        if reached_max_steps(trainer):
            trainer.should_stop = True
