"""The layout of a run dir: the one place that names its files.

A run dir is Hydra's output dir of ``python -m cpc_lightning.train`` (or what ``convert``
writes). It holds:

- ``.hydra/config.yaml`` and ``.hydra/overrides.yaml``: Hydra's composed config and the
  command line's overrides;
- ``config_resolved.yaml``: the resolved config the run trained with;
- ``checkpoints/``: ``last.ckpt`` (the newest state; ``train resume=`` continues from it) and
  the step files;
- ``metrics.csv``, ``probe.md``, ``eval/`` (the reports of ``evaluate`` and of the end-of-run
  probes, ``<task>.json``, and their feature cache);
- ``result.json``: setup, metrics, global step, environment (written last: a run dir with it
  finished);
- where they apply: ``reused.json`` (a sweep point reused from an earlier launch),
  ``failed.txt`` (a sweep point's traceback; ``failed.previous.txt`` after a retry) and
  ``converted_from.json`` (the source of a converted checkpoint).

Every reader and writer of a run dir goes through :class:`RunDir`. This module imports nothing
of cpc_lightning, so every layer (``runs``, ``training/*``, ``interop/*``) may use it.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: File and folder names inside a run dir (relative paths).
RESOLVED_CONFIG = "config_resolved.yaml"
HYDRA_DIR = ".hydra"
HYDRA_CONFIG = f"{HYDRA_DIR}/config.yaml"
HYDRA_OVERRIDES = f"{HYDRA_DIR}/overrides.yaml"
CHECKPOINTS = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
RESULT = "result.json"
REUSED = "reused.json"
FAILED = "failed.txt"
FAILED_PREVIOUS = "failed.previous.txt"
CONVERTED_FROM = "converted_from.json"
METRICS = "metrics.csv"
PROBE_TABLE = "probe.md"
WANDB_RUN = "wandb_run.json"
EVAL = "eval"


def last_checkpoint_in(folder: str | Path) -> Path:
    """The last checkpoint of a checkpoint folder (a run dir's ``checkpoints/`` or the
    checkpoint callback's ``dirpath``)."""
    return Path(folder) / LAST_CHECKPOINT


def write_json(path: Path, data: Any, indent: int | None = 2) -> Path:
    """Write ``data`` as JSON to ``path`` atomically (a temporary file beside it, renamed)."""
    return write_text(path, json.dumps(data, indent=indent))


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (a temporary file beside it, renamed): a reader
    sees the old file or the new one, never a part."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def run_dirs_under(folder: str | Path) -> set[Path]:
    """Every run dir under ``folder`` (a dir holding Hydra's overrides file), e.g. sweep points."""
    name = Path(HYDRA_OVERRIDES).name
    return {p.parent.parent for p in Path(folder).rglob(name) if p.parent.name == HYDRA_DIR}


@dataclass(frozen=True)
class RunDir:
    """The paths of one run dir, and the small reads and writes every user of it shares."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def of_checkpoint(cls, checkpoint: str | Path) -> RunDir:
        """The run dir of a checkpoint file: the folder above ``checkpoints/``, else its own."""
        ckpt = Path(checkpoint)
        return cls(ckpt.parent.parent if ckpt.parent.name == CHECKPOINTS else ckpt.parent)

    @property
    def config_resolved(self) -> Path:
        """The resolved config the run trained with."""
        return self.root / RESOLVED_CONFIG

    @property
    def hydra_dir(self) -> Path:
        """Hydra's folder (composed config, overrides, its own copy of the config)."""
        return self.root / HYDRA_DIR

    @property
    def hydra_config(self) -> Path:
        """Hydra's composed config of the job."""
        return self.root / HYDRA_CONFIG

    @property
    def hydra_overrides(self) -> Path:
        """The command line's overrides of the job (what a sweep point varies)."""
        return self.root / HYDRA_OVERRIDES

    @property
    def checkpoints(self) -> Path:
        """The checkpoint folder."""
        return self.root / CHECKPOINTS

    @property
    def last_checkpoint(self) -> Path:
        """The newest state, which ``ckpt_path=last`` and ``evaluate run_dir=`` read."""
        return last_checkpoint_in(self.checkpoints)

    @property
    def result(self) -> Path:
        """The result file: setup, metrics, global step, environment."""
        return self.root / RESULT

    @property
    def reused(self) -> Path:
        """Marks a sweep point whose result is from an earlier launch."""
        return self.root / REUSED

    @property
    def failed(self) -> Path:
        """A failed sweep point's traceback."""
        return self.root / FAILED

    @property
    def failed_previous(self) -> Path:
        """The traceback of the attempt before a retried sweep point."""
        return self.root / FAILED_PREVIOUS

    @property
    def converted_from(self) -> Path:
        """Where a converted run dir came from."""
        return self.root / CONVERTED_FROM

    @property
    def metrics(self) -> Path:
        """The CSV logger's rows."""
        return self.root / METRICS

    @property
    def probe_table(self) -> Path:
        """The end-of-run probes' Markdown table."""
        return self.root / PROBE_TABLE

    @property
    def eval(self) -> Path:
        """The reports of ``evaluate`` (without ``out_dir=``) and of the end-of-run probes."""
        return self.root / EVAL

    @property
    def wandb_run(self) -> Path:
        """The W&B run of ``logger=wandb`` (id, project, group, ...; ``evaluate`` joins it)."""
        return self.root / WANDB_RUN

    def config_files(self) -> tuple[Path, Path]:
        """The saved configs, in the order a reader prefers them."""
        return self.config_resolved, self.hydra_config

    def checkpoint_files(self) -> list[Path]:
        """Every checkpoint file, sorted by name."""
        return sorted(self.checkpoints.glob("*.ckpt"))

    def holds_a_run(self) -> Path | None:
        """The file that shows a run wrote results here (last checkpoint, result, a step
        checkpoint, metrics rows), or None. The one rule every writer of a run dir follows: a
        new run goes only into a dir where this is None."""
        if self.last_checkpoint.is_file():
            return self.last_checkpoint
        if self.result.is_file():
            return self.result
        found = self.checkpoint_files()
        if found:
            return found[-1]
        if self.metrics.is_file() and self.metrics.stat().st_size > 0:
            return self.metrics  # killed before its first checkpoint: its rows are still results
        return None

    def read_result(self) -> dict[str, Any] | None:
        """The result file's content; None if the run has not finished."""
        return json.loads(self.result.read_text()) if self.result.is_file() else None

    def write_result(self, result: dict[str, Any]) -> Path:
        """Write the result file atomically; return its path."""
        return write_json(self.result, result)
