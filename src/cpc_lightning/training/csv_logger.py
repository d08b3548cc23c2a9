"""``metrics.csv`` continued across restarts (Lightning's CSV logger deletes it).

Rows a resumed run logs again replace the old ones, so a run killed after its last checkpoint
leaves neither gaps nor duplicate steps.
"""

from __future__ import annotations

import csv
import os
from typing import Any

from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.utilities.rank_zero import rank_zero_only


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
        if self.metrics and self._fs.isfile(self.metrics_file_path):
            # another process may have written columns this one never logged (ddp_spawn: the
            # workers log training, the parent the end-of-run probes): keep them in the header
            with self._fs.open(self.metrics_file_path, "r", newline="") as fh:
                header = csv.DictReader(fh).fieldnames or []
            if not set(header) <= set(self.metrics_keys):
                self.metrics_keys = sorted(set(header) | set(self.metrics_keys))
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
