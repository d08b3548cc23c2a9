"""Callbacks that only tests use (importable in CLI subprocesses as ``helpers.callbacks``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback


class RankStateDump(Callback):
    """Save each rank's final ``state_dict`` to ``<dirpath>/rank<global_rank>.pt``.

    For checking that DDP ranks end with identical parameters, e.g.
    ``+callbacks.rank_dump._target_=helpers.callbacks.RankStateDump
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


class BatchIndexLog(Callback):
    """Append ``{"step": global_step, "index": [...]}`` per training batch to a JSON-lines file:
    which utterances each step trained on (``+callbacks.batch_log._target_=helpers.callbacks.
    BatchIndexLog +callbacks.batch_log.path=<file>``)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        import json

        with open(self.path, "a") as fh:
            index = batch["index"].tolist()
            fh.write(json.dumps({"step": trainer.global_step, "index": index}) + "\n")
