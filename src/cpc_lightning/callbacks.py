"""Checkpointing and logging pieces that make a run safe to kill and resume.

- :func:`atomic_save_checkpoint`: every checkpoint is written to a hidden temporary file in the
  target directory, fsynced and then renamed over the target, so a reader (or a resumed run)
  only ever sees a complete file.
- :class:`AtomicModelCheckpoint`: Lightning's ``ModelCheckpoint`` saving through that path, and
  publishing a checkpoint only once the log rows of its step are on disk.
- :class:`AppendingCSVLogger`: ``metrics.csv`` continued across restarts (Lightning's logger
  deletes it); rows a resumed run logs again replace the old ones.
- :class:`FinalStep`: the last step is always logged and validated.
- :class:`RankStateDump`: test helper, each DDP rank saves its final parameters.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any
from weakref import proxy

import pytorch_lightning as pl
import torch
from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.utilities.rank_zero import rank_zero_only


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


def reached_max_steps(trainer: pl.Trainer) -> bool:
    """Whether the step just taken is the last one ``trainer.max_steps`` allows."""
    return 0 < trainer.max_steps <= trainer.global_step


class AtomicModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose files (``last.ckpt`` included) are replaced atomically.

    The checkpoint of step ``N`` is written (staged) where Lightning saves it, at the end of step
    ``N``, and moved into place when step ``N + 1`` starts (or training ends), after step ``N``'s
    log rows and validation were logged and the loggers flushed. So ``metrics.csv`` holds every
    row up to the step of any visible checkpoint, and a run killed at any moment resumes without
    a gap.
    """

    _staged: list[str]

    @property
    def saved_step(self) -> int:
        """Global step of the newest checkpoint this callback wrote (0 before any)."""
        return int(self._last_global_step_saved)

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
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
        """Save as usual; at ``max_steps`` also ``last.ckpt`` (in the same loop state as the
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


class _AppendingWriter(ExperimentWriter):
    """CSV writer that keeps an existing ``metrics.csv``.

    At the first save after a step was logged it drops the old rows whose step is >= that first
    step (a resumed run logs them again), then appends as usual.
    """

    def __init__(self, log_dir: str) -> None:
        self._trim_pending = False
        self._first_step: int | None = None
        super().__init__(log_dir=log_dir)

    def _check_log_dir_exists(self) -> None:
        self._trim_pending = self._fs.isfile(self.metrics_file_path)
        if self._trim_pending:
            with self._fs.open(self.metrics_file_path, "r", newline="") as fh:
                self.metrics_keys = sorted(csv.DictReader(fh).fieldnames or [])

    def note_trainer_step(self, step: int) -> None:
        """Remember the first step given by the trainer (rows logged with no step don't count)."""
        if self._first_step is None:
            self._first_step = int(step)

    def save(self) -> None:
        # Rows logged without a trainer step (e.g. after fit) do not decide what to replace.
        if self._trim_pending and self._first_step is not None:
            self._trim_pending = False
            self._trim(self._first_step)
        super().save()

    def _trim(self, first_step: int) -> None:
        with self._fs.open(self.metrics_file_path, "r", newline="") as fh:
            reader = csv.DictReader(fh)
            header = list(reader.fieldnames or [])
            rows = [r for r in reader if r.get("step") and int(float(r["step"])) < first_step]
        self.metrics_keys = sorted(set(header) | set(self.metrics_keys))
        tmp = self.metrics_file_path + ".partial"
        with self._fs.open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.metrics_file_path)


class AppendingCSVLogger(CSVLogger):
    """``CSVLogger`` that continues ``metrics.csv`` when a run is resumed in the same dir.

    Rows with a step at or after the first step the new process logs are replaced, so a run
    killed after its last checkpoint leaves neither gaps nor duplicate steps.
    """

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        """The CSV writer (a no-op stand-in on ranks other than 0)."""
        if self._experiment is not None:
            return self._experiment
        self._fs.makedirs(self.root_dir, exist_ok=True)
        self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """Record ``metrics`` at ``step`` (flushed every ``flush_logs_every_n_steps``)."""
        if step is not None:
            self.experiment.note_trainer_step(step)
        super().log_metrics(metrics, step)


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


class RankStateDump(Callback):
    """Save each rank's final ``state_dict`` to ``<dirpath>/rank<global_rank>.pt``.

    For checking that DDP ranks end with identical parameters, e.g.
    ``+callbacks.rank_dump._target_=cpc_lightning.callbacks.RankStateDump
    +callbacks.rank_dump.dirpath=<dir>``.
    """

    def __init__(self, dirpath: str | os.PathLike) -> None:
        self.dirpath = Path(dirpath)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        state: dict[str, Any] = {
            k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()
        }
        torch.save(state, self.dirpath / f"rank{trainer.global_rank}.pt")
