"""A W&B logger that also records what it hands to W&B (read back from wandb's own run object)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities.rank_zero import rank_zero_only


class RecordingWandbLogger(WandbLogger):
    """``WandbLogger`` that writes ``<save_dir>/wandb_record.json`` when it finishes: the run's
    project, tags and config as ``wandb.run`` holds them, and every metric key it logged."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.logged: set[str] = set()

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        self.logged.update(metrics)
        super().log_metrics(metrics, step)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        run = self.experiment
        record = {
            "project": run.project,
            "tags": list(run.tags),
            "offline": bool(run.settings._offline),
            "config": dict(run.config),
            "logged": sorted(self.logged),
        }
        Path(self.save_dir, "wandb_record.json").write_text(json.dumps(record, default=str))
        super().finalize(status)
