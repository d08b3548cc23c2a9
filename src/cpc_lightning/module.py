"""``CPCModule``: encoder -> context -> heads -> InfoNCE with a negative sampler.

Takes plain modules, so it is testable without Hydra. Shapes at the boundaries:

- audio: ``x`` ``(B, 1, L)`` -> ``z`` ``(B, T, D)`` -> ``c`` ``(B, T, C)``.
- images: ``x`` ``(B, G, G, C, P, P)`` -> ``z`` ``(B, H, W, D)``; per direction the grid is rotated
  so that the prediction runs "down", the context runs on the grid (``context.grid``) or on
  column sequences, and the loss sees column sequences ``(B * W, H, D)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from cpc_lightning.encoders import frame_mask
from cpc_lightning.heads import PredictionHeads
from cpc_lightning.infonce import InfoNCEOutput, info_nce
from cpc_lightning.negatives import NegativeSampler

#: ``torch.rot90`` turns per direction so that "down" in the rotated grid is the direction.
DIRECTIONS: dict[str, int] = {"down": 0, "left": 1, "up": 2, "right": 3}


def rotate_grid(z: torch.Tensor, direction: str) -> torch.Tensor:
    """Rotate ``(B, H, W, D)`` so that predicting rows below means predicting ``direction``."""
    if direction not in DIRECTIONS:
        raise ValueError(f"model.directions: {direction!r} is not one of {sorted(DIRECTIONS)}")
    return torch.rot90(z, DIRECTIONS[direction], dims=(1, 2))


def grid_to_columns(g: torch.Tensor) -> torch.Tensor:
    """``(B, H, W, D)`` -> column sequences ``(B * W, H, D)``."""
    b, h, w, d = g.shape
    return g.transpose(1, 2).reshape(b * w, h, d)


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int = 0,
    min_ratio: float = 0.0,
    cosine: bool = True,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up for ``warmup_steps``, then cosine decay to ``min_ratio`` (or constant)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if not cosine:
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class CPCModule(pl.LightningModule):
    """Contrastive Predictive Coding for audio frame sequences and image patch grids."""

    def __init__(
        self,
        encoder: nn.Module,
        context: nn.Module,
        heads: PredictionHeads,
        negatives: NegativeSampler,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        prediction_steps: int = 12,
        step_offset: int = 0,
        directions: Sequence[str] = ("down",),
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if prediction_steps != heads.num_steps:
            raise ValueError(
                f"model.prediction_steps={prediction_steps} but the heads predict {heads.num_steps}"
            )
        for d in directions:
            rotate_grid(torch.zeros(1, 1, 1, 1), d)
        self.encoder, self.context, self.heads = encoder, context, heads
        self.negatives = negatives
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.prediction_steps = int(prediction_steps)
        self.step_offset = int(step_offset)
        self.directions = list(directions)
        self.temperature = float(temperature)
        self.steps = list(range(self.step_offset + 1, self.step_offset + self.prediction_steps + 1))

    # ------------------------------------------------------------------ forward
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder output ``z``: audio ``(B, T, D)``, images ``(B, H, W, D)``."""
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z, c)``. Images: the "down" context over the grid, ``(B, H, W, C)``."""
        z = self.encode(x)
        if z.dim() == 3:
            return z, self.context(z)
        if getattr(self.context, "grid", False):
            return z, self.context(z)
        b, h, w, _ = z.shape
        c = self.context(grid_to_columns(z))
        return z, c.reshape(b, w, h, -1).transpose(1, 2)

    def sequences(self, batch: dict[str, torch.Tensor]):
        """Yield ``(z, c, valid, speaker, head_set)`` column/frame sequences to score."""
        z = self.encode(batch["x"])
        if z.dim() == 3:
            b, t, _ = z.shape
            if "mask" in batch:
                valid = frame_mask(batch["mask"], t, self.encoder.downsampling)
            else:
                valid = torch.ones(b, t, dtype=torch.bool, device=z.device)
            speaker = batch.get("speaker")
            yield z, self.context(z), valid, speaker, 0
            return
        for i, direction in enumerate(self.directions):
            zr = rotate_grid(z, direction)
            zs = grid_to_columns(zr)
            if getattr(self.context, "grid", False):
                cs = grid_to_columns(self.context(zr))
            else:
                cs = self.context(zs)
            valid = torch.ones(zs.shape[:2], dtype=torch.bool, device=z.device)
            yield zs, cs, valid, None, i % self.heads.num_sets

    def _candidates(self, z: torch.Tensor, valid: torch.Tensor, speaker: torch.Tensor | None):
        """Candidate frames: the local batch, or (``global``) the batch of every DDP rank."""
        b = z.shape[0]
        anchor_seqs = torch.arange(b, device=z.device)
        world = self.trainer.world_size if self._trainer is not None else 1
        if not self.negatives.is_global or world == 1:
            return z.reshape(-1, z.shape[-1]), valid, speaker, anchor_seqs
        zg = self.all_gather(z, sync_grads=True).reshape(world * b, *z.shape[1:])
        vg = self.all_gather(valid).reshape(world * b, -1)
        sg = None if speaker is None else self.all_gather(speaker).reshape(-1)
        return zg.reshape(-1, z.shape[-1]), vg, sg, anchor_seqs + self.global_rank * b

    def sequence_loss(
        self,
        z: torch.Tensor,
        c: torch.Tensor,
        valid: torch.Tensor,
        speaker: torch.Tensor | None,
        head_set: int = 0,
    ) -> InfoNCEOutput:
        """InfoNCE over sequences ``z`` ``(B, T, D)``, ``c`` ``(B, T, C)``, ``valid`` ``(B, T)``."""
        b, t, _ = z.shape
        kmax = self.steps[-1]
        ta = t - kmax
        if ta < 1:
            raise ValueError(
                f"sequences of {t} steps are too short to predict {kmax} steps ahead: lengthen "
                "data.window (audio) or reduce model.prediction_steps"
            )
        k = len(self.steps)
        pred = self.heads(c[:, :ta], head_set).reshape(k, b * ta, -1)
        cand, cand_valid, cand_speaker, anchor_seqs = self._candidates(z, valid, speaker)
        steps = torch.tensor(self.steps, device=z.device)
        tt = torch.arange(ta, device=z.device)
        target_t = tt[None, :] + steps[:, None]  # (K, Ta)
        pos = (anchor_seqs[None, :, None] * t + target_t[:, None, :]).reshape(k, -1)
        weight = valid[None, :, :ta] & valid[:, target_t].permute(1, 0, 2)  # (K, B, Ta)
        neg = self.negatives.sample(cand_valid, cand_speaker, anchor_seqs, ta, k)
        return info_nce(pred, cand, pos, neg, weight.reshape(k, -1), self.temperature)

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> InfoNCEOutput:
        """Average the InfoNCE outputs over sequences (one per image direction)."""
        outs = [self.sequence_loss(*seq) for seq in self.sequences(batch)]
        if len(outs) == 1:
            return outs[0]
        return InfoNCEOutput(
            *(
                torch.stack([getattr(o, f) for o in outs]).mean(0)
                for f in InfoNCEOutput.__annotations__
            )
        )

    # ------------------------------------------------------------------ steps
    def _log_outputs(self, stage: str, out: InfoNCEOutput, batch_size: int) -> None:
        on_step = stage == "train"
        kw = dict(
            on_step=on_step, on_epoch=not on_step, batch_size=batch_size, sync_dist=not on_step
        )
        self.log(f"{stage}/loss", out.loss, prog_bar=True, **kw)
        metrics = {}
        for i, k in enumerate(self.steps):
            metrics[f"{stage}/loss_k{k}"] = out.loss_k[i]
            metrics[f"{stage}/acc_k{k}"] = out.acc_k[i]
            metrics[f"{stage}/mi_k{k}"] = out.mi_k[i]
        metrics[f"{stage}/acc"] = out.acc_k.mean()
        self.log_dict(metrics, **kw)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self.compute_loss(batch)
        self._log_outputs("train", out, batch["x"].shape[0])
        return out.loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        out = self.compute_loss(batch)
        self._log_outputs("val", out, batch["x"].shape[0])

    def configure_optimizers(self):
        factory = self.optimizer_factory or (lambda p: torch.optim.Adam(p, lr=2e-4))
        optimizer = factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches) if self._trainer else 1
        scheduler = self.scheduler_factory(optimizer, total_steps=total)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
