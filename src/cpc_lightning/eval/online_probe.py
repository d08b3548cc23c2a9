"""Online linear probe during pre-training (``callbacks=online_probe``).

A Lightning Callback that reads the context ``c`` each training/validation step already computed
(the step's ``outputs["context"]``, detached: the CPC loss never sees the probe, and there is no
second forward pass) and trains a linear layer on it with its own Adam optimiser. The task is the
first the DataModule has labels for:

* ``phones`` (frame labels): per frame, ``c[:, t]`` <-> label frame ``t`` (both at 10 ms);
* else ``speakers`` / ``classes``: per sequence, ``c`` averaged over its valid frames (audio) or
  over the grid (images).

Logs ``train/online_probe_acc`` (per step) and ``val/online_probe_acc`` (per validation run,
counts pooled over every rank with ``torchmetrics``). Its weights and optimizer state are part of
the checkpoint (``state_dict``), so a resumed run continues the same probe.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from cpc_lightning.data import IGNORE_INDEX
from cpc_lightning.model.encoders.audio import frame_mask

#: task -> batch key holding its labels
BATCH_KEYS = {"phones": "phones", "speakers": "speaker", "classes": "label"}


def choose_task(datamodule: Any) -> tuple[str, int] | None:
    """``(task, num_classes)``: phones, else speakers, else classes (None: no labels)."""
    have = datamodule.labels
    if "phones" in have:
        return "phones", int(datamodule.num_phones)
    if "speakers" in have:
        return "speakers", len(datamodule.speakers)
    if "classes" in have:
        return "classes", len(datamodule.classes)
    return None


class OnlineProbe(pl.Callback):
    """Linear probe on detached ``c``, trained alongside CPC (see the module docstring)."""

    def __init__(self, lr: float = 1e-3) -> None:
        self.lr = float(lr)
        self.task: str | None = None
        self.num_classes = 0
        self.probe: nn.Linear | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.val_accuracy: MulticlassAccuracy | None = None
        self._pending: dict[str, Any] | None = None

    # --- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Task, probe weights and optimizer state (saved in every checkpoint)."""
        if self.probe is None or self.optimizer is None:  # not built yet: keep what was loaded
            return {**(self._pending or {}), "task": self.task, "num_classes": self.num_classes}
        return {
            "task": self.task,
            "num_classes": self.num_classes,
            "in_features": self.probe.in_features,
            "probe": self.probe.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore on the first batch (when the device is known)."""
        self._pending = dict(state_dict)
        self.task = state_dict.get("task")
        self.num_classes = int(state_dict.get("num_classes") or 0)

    def _build(self, in_features: int, device: torch.device) -> None:
        self.probe = nn.Linear(in_features, max(self.num_classes, 1)).to(device)
        self.optimizer = torch.optim.Adam(self.probe.parameters(), lr=self.lr)
        pending, self._pending = self._pending, None
        if pending and "probe" in pending:
            self.probe.load_state_dict(pending["probe"])
            self.optimizer.load_state_dict(pending["optimizer"])

    # --- rows and labels --------------------------------------------------------------------
    def rows(
        self, c: torch.Tensor, batch: dict[str, Any], downsampling: int = 160
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``(N, C)`` and labels ``(N,)`` from ``c`` and the batch (see module doc)."""
        assert self.task is not None
        b = batch["x"].shape[0]
        if self.task == "phones":
            t = min(c.shape[1], batch["phones"].shape[1])
            return c[:, :t].reshape(-1, c.shape[-1]), batch["phones"][:, :t].reshape(-1)
        y = torch.as_tensor(batch[BATCH_KEYS[self.task]], device=c.device).long().reshape(-1)
        if "mask" in batch and c.shape[0] == b:  # audio (B, T, C): mean over valid frames
            valid = frame_mask(batch["mask"], c.shape[1], downsampling).to(c.dtype)
            pooled = (c * valid[..., None]).sum(1) / valid.sum(1, keepdim=True).clamp_min(1)
        else:  # images: (B * W, H, C) columns, batch-major
            pooled = c.reshape(b, -1, c.shape[-1]).mean(1)
        return pooled, y

    def _labelled(self, outputs: Any, batch: dict[str, Any], pl_module: pl.LightningModule):
        c = outputs.get("context") if isinstance(outputs, dict) else None
        if c is None or self.task is None:
            return None
        x, y = self.rows(c, batch, getattr(pl_module.encoder, "downsampling", 160))
        keep = (y >= 0) & (y < max(self.num_classes, 1))
        if not bool(keep.any()):
            return None
        return x[keep].float(), y[keep]

    # --- hooks ------------------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        chosen = choose_task(trainer.datamodule)
        if chosen is None:
            self.task = None
            return
        if self.task is not None and self.task != chosen[0]:
            self._pending = None  # resumed on other data: start a fresh probe
        self.task, self.num_classes = chosen
        self.val_accuracy = MulticlassAccuracy(
            max(self.num_classes, 2), average="micro", ignore_index=IGNORE_INDEX
        ).to(pl_module.device)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        got = self._labelled(outputs, batch, pl_module)
        if got is None:
            return
        x, y = got
        if self.probe is None:
            self._build(x.shape[-1], x.device)
        assert self.probe is not None and self.optimizer is not None
        with torch.enable_grad():
            logits = self.probe(x)
            loss = nn.functional.cross_entropy(logits, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        acc = (logits.argmax(1) == y).float().mean()
        pl_module.log("train/online_probe_acc", acc, on_step=True, batch_size=len(y))
        pl_module.log("train/online_probe_loss", loss.detach(), on_step=True, batch_size=len(y))

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if self.val_accuracy is not None:
            self.val_accuracy.reset()

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        got = self._labelled(outputs, batch, pl_module)
        if got is None or self.probe is None or self.val_accuracy is None:
            return
        x, y = got
        with torch.no_grad():
            self.val_accuracy.update(self.probe(x).argmax(1), y)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self.val_accuracy is None or self.task is None:
            return
        # Every rank calls compute(): it sums the correct/total counts of all ranks.
        count = int(self.val_accuracy.tp.sum() + self.val_accuracy.fn.sum())
        total = torch.tensor(count, device=pl_module.device)
        if trainer.world_size > 1:
            total = trainer.strategy.reduce(total, reduce_op="sum")
        if int(total) == 0:
            return
        pl_module.log("val/online_probe_acc", self.val_accuracy.compute(), sync_dist=False)
