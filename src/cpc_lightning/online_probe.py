"""Online linear probe during pre-training (``model.online_probe=true``).

A Lightning Callback that reads the context output ``c`` of each training/validation forward
pass (a forward hook on ``pl_module.context``; detached, so the CPC loss never sees the probe)
and trains a linear layer on it with its own Adam optimiser:

* audio with frame labels (``batch["phones"]``, -100 = none): per frame, ``c[:, t]`` <-> label
  frame ``t`` (both at 10 ms);
* otherwise per sequence, on ``c`` averaged over time (audio, valid frames only) or over the
  grid (images): ``batch["speaker"]``, else ``batch["label"]``.

Logs ``train/online_probe_acc`` (per step) and ``val/online_probe_acc`` (per validation run).
The probe is not part of the model's ``state_dict``.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from cpc_lightning.encoders import frame_mask

IGNORE = -100


class OnlineProbe(pl.Callback):
    """Linear probe on detached ``c``, trained alongside CPC (see the module docstring)."""

    def __init__(self, lr: float = 1e-3, num_classes: int | None = None) -> None:
        self.lr = lr
        self.num_classes = num_classes
        self.task: str | None = None
        self.probe: nn.Linear | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self._c: torch.Tensor | None = None
        self._handle: Any = None
        self._val = [0, 0]

    # --- capture c -------------------------------------------------------------------------
    def _hook(self, module: nn.Module, args: Any, output: torch.Tensor) -> None:
        if self._c is None and isinstance(output, torch.Tensor):
            self._c = output.detach()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._handle = pl_module.context.register_forward_hook(self._hook)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._c = None

    def on_validation_batch_start(
        self, trainer, pl_module, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self._c = None

    # --- rows and labels ---------------------------------------------------------------------
    def _choose(self, batch: dict[str, Any], trainer: pl.Trainer) -> None:
        dm = getattr(trainer, "datamodule", None)
        phones = batch.get("phones")
        if isinstance(phones, torch.Tensor) and bool((phones >= 0).any()):
            self.task, n = "phones", getattr(dm, "num_phones", 0)
        elif isinstance(batch.get("speaker"), torch.Tensor) and bool((batch["speaker"] >= 0).any()):
            self.task, n = "speaker", len(getattr(dm, "speakers", []) or [])
        else:
            self.task, n = "label", len(getattr(dm, "classes", []) or [])
        self.num_classes = self.num_classes or int(n) or None

    def rows(
        self, c: torch.Tensor, batch: dict[str, Any], downsampling: int = 160
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``(N, C)`` and labels ``(N,)`` from ``c`` and the batch (see module doc)."""
        b = batch["x"].shape[0]
        if self.task == "phones":
            t = min(c.shape[1], batch["phones"].shape[1])
            return c[:, :t].reshape(-1, c.shape[-1]), batch["phones"][:, :t].reshape(-1)
        y = batch[self.task]
        if c.dim() == 3 and c.shape[0] == b and "mask" in batch:  # audio (B, T, C)
            valid = frame_mask(batch["mask"], c.shape[1], downsampling).to(c.dtype)
            pooled = (c * valid[..., None]).sum(1) / valid.sum(1, keepdim=True).clamp_min(1)
        else:  # images: (B, H, W, C) grid or (B * W, H, C) columns, batch-major
            pooled = c.reshape(b, -1, c.shape[-1]).mean(1)
        return pooled, torch.as_tensor(y, device=c.device).long().reshape(-1)

    def _logits(self, x: torch.Tensor, pl_module: pl.LightningModule) -> torch.Tensor:
        if self.probe is None:
            k = self.num_classes or 1
            self.probe = nn.Linear(x.shape[-1], k).to(x.device)
            self.optimizer = torch.optim.Adam(self.probe.parameters(), lr=self.lr)
        return self.probe(x.float())

    # --- hooks -----------------------------------------------------------------------------
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._c is None:
            return
        if self.task is None:
            self._choose(batch, trainer)
        down = getattr(pl_module.encoder, "downsampling", 160)
        x, y = self.rows(self._c, batch, down)
        keep = y >= 0
        if not bool(keep.any()):
            return
        x, y = x[keep], y[keep]
        if self.num_classes is None or int(y.max()) >= self.num_classes:
            self.num_classes = max(int(y.max()) + 1, self.num_classes or 0)
            if self.probe is not None and self.probe.out_features < self.num_classes:
                self.probe = None  # grow: restart the probe with more outputs
        with torch.enable_grad():
            logits = self._logits(x, pl_module)
            loss = nn.functional.cross_entropy(logits, y)
            assert self.optimizer is not None
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        acc = (logits.argmax(1) == y).float().mean()
        n = len(y)
        pl_module.log("train/online_probe_acc", acc, on_step=True, on_epoch=False, batch_size=n)
        pl_module.log("train/online_probe_loss", loss.detach(), on_step=True, batch_size=len(y))

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._val = [0, 0]

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if self._c is None or self.probe is None or self.task is None:
            return
        down = getattr(pl_module.encoder, "downsampling", 160)
        x, y = self.rows(self._c, batch, down)
        keep = (y >= 0) & (y < self.probe.out_features)
        if not bool(keep.any()):
            return
        with torch.no_grad():
            pred = self.probe(x[keep].float()).argmax(1)
        self._val[0] += int((pred == y[keep]).sum())
        self._val[1] += int(keep.sum())

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self._val[1]:
            acc = torch.tensor(self._val[0] / self._val[1], device=pl_module.device)
            pl_module.log("val/online_probe_acc", acc, sync_dist=True)
