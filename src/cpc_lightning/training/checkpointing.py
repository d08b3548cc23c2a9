"""Checkpoints that make a run safe to kill and resume.

- :func:`atomic_save_checkpoint`: every checkpoint is written to a hidden temporary file in the
  target directory, fsynced and then renamed over the target, so a reader (or a resumed run)
  only ever sees a complete file.
- :class:`AtomicModelCheckpoint`: Lightning's ``ModelCheckpoint`` saving through that path, and
  publishing a checkpoint only once the log rows of its step are on disk.
- :func:`save_final_checkpoint`: the last checkpoint at the last step when the callback wrote
  none.

No checkpoint is written from non-finite weights, nor while the divergence guard is skipping
steps (``training/guard.py``), and file names never get Lightning's ``-v1`` versions: one
last checkpoint (``RunDir.last_checkpoint``), replaced in place.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any
from weakref import proxy

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.strategies.launchers import _MultiProcessingLauncher

from cpc_lightning.training.final_step import reached_max_steps
from cpc_lightning.training.finite import steps_being_skipped, weights_finite

log = logging.getLogger(__name__)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _is_local(path: str | os.PathLike) -> bool:
    return "://" not in str(path)


def _partial_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.partial")


def commit_checkpoint(trainer: pl.Trainer, filepath: str | os.PathLike) -> None:
    """Move a staged ``.<name>.partial`` over ``filepath``: fsync, ``os.replace``, fsync the dir.

    Call it on every rank; global rank 0 renames."""
    target = Path(filepath)
    if trainer.is_global_zero:
        tmp = _partial_path(target)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    trainer.strategy.barrier("commit_checkpoint")


def atomic_save_checkpoint(
    trainer: pl.Trainer,
    filepath: str | os.PathLike,
    weights_only: bool = False,
    commit: bool = True,
) -> None:
    """``trainer.save_checkpoint`` into ``.<name>.partial``, then (``commit``) renamed into place.

    Call it on every rank (as ``trainer.save_checkpoint``); global rank 0 writes and renames. With
    ``commit=False`` the file stays staged until :func:`commit_checkpoint`. Remote
    (``scheme://``) paths are saved directly: a rename is not atomic there.
    """
    if not _is_local(filepath):
        trainer.save_checkpoint(filepath, weights_only)
        return
    tmp = _partial_path(Path(filepath))
    try:
        trainer.save_checkpoint(tmp, weights_only)
    except BaseException:
        if trainer.is_global_zero and tmp.exists():
            tmp.unlink()
        raise
    if commit:
        commit_checkpoint(trainer, filepath)


class AtomicModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose files (the last checkpoint included) are replaced atomically.

    The checkpoint of step ``N`` is written (staged) where Lightning saves it, at the end of step
    ``N``, and moved into place when step ``N + 1`` starts (or training ends), after step ``N``'s
    log rows and validation were logged and the loggers flushed. So ``metrics.csv`` holds every
    row up to the step of any visible checkpoint, and a run killed at any moment resumes without
    a gap.
    """

    _staged: list[str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # A re-run in the same dir replaces the last checkpoint (atomically) instead of writing a
        # `-v1` version beside a stale one that `evaluate run_dir=...` would then read.
        kwargs.setdefault("enable_version_counter", False)
        super().__init__(*args, **kwargs)

    @property
    def saved_step(self) -> int:
        """Global step of the newest checkpoint this callback wrote (0 before any)."""
        return int(self._last_global_step_saved)

    def _should_skip_saving_checkpoint(self, trainer: pl.Trainer) -> bool:
        """Also skip while the divergence guard is skipping steps (a suspect state)."""
        return super()._should_skip_saving_checkpoint(trainer) or steps_being_skipped(trainer)

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        # every save path goes through here (Lightning's on_train_end and on_exception too)
        if steps_being_skipped(trainer):
            return
        if not weights_finite(trainer, trainer.lightning_module):
            if trainer.is_global_zero:
                log.warning(
                    "not writing %s at step %d: the weights hold NaN/inf",
                    filepath,
                    trainer.global_step,
                )
            return
        if not _is_local(filepath):
            super()._save_checkpoint(trainer, filepath)
            return
        atomic_save_checkpoint(trainer, filepath, self.save_weights_only, commit=False)
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        staged = self.__dict__.setdefault("_staged", [])
        if filepath not in staged:
            staged.append(filepath)

    def commit(self, trainer: pl.Trainer) -> None:
        """Flush the loggers, then move the staged checkpoints into place."""
        staged, self._staged = self.__dict__.get("_staged", []), []
        if not staged:
            return
        for logger in trainer.loggers:
            logger.save()
        for filepath in staged:
            commit_checkpoint(trainer, filepath)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Commit the previous step's checkpoints (its rows are logged by now)."""
        self.commit(trainer)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Save as usual; at ``max_steps`` also the last checkpoint (in the same loop state as the
        periodic saves: one saved after ``fit`` returns resumes with shifted logger steps)."""
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if (
            self.save_last
            and reached_max_steps(trainer)
            and not self._should_skip_saving_checkpoint(trainer)
        ):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Save as usual, then commit what is staged."""
        super().on_train_end(trainer, pl_module)
        self.commit(trainer)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Save as usual (if ``save_on_exception``), then commit what is staged (one process
        only: other ranks may never reach the commit's barrier)."""
        super().on_exception(trainer, pl_module, exception)
        if trainer.world_size == 1:
            self.commit(trainer)


def save_final_checkpoint(trainer: pl.Trainer, last: Path) -> int:
    """After ``fit``: make ``last`` hold the final step; return that global step.

    A final checkpoint is written when the checkpoint callback has none at the last step (stopped
    by ``max_epochs``, ``max_time``, ...) and the weights are finite: every rank calls it, temp
    file + rename. After
    ``ddp_spawn`` this process's loops never ran (the workers saved the checkpoints), so the step
    is read from ``last`` instead.
    """
    spawned = isinstance(trainer.strategy.launcher, _MultiProcessingLauncher)
    callback = trainer.checkpoint_callback
    if (
        callback is not None
        and not spawned
        and getattr(callback, "saved_step", -1) != trainer.global_step
        and weights_finite(trainer, trainer.lightning_module)
    ):
        atomic_save_checkpoint(trainer, last)
    if spawned and last.is_file():
        return int(torch.load(last, "cpu", mmap=True, weights_only=False)["global_step"])
    return trainer.global_step
