"""``CPCModule``: encoder -> context -> heads -> InfoNCE with a negative sampler.

Takes plain modules, so it is testable without Hydra. Shapes at the boundaries:

- audio: ``x`` ``(B, 1, L)`` -> ``z`` ``(B, T, D)`` -> ``c`` ``(B, T, C)``.
- images: ``x`` ``(B, G, G, C, P, P)`` -> ``z`` ``(B, H, W, D)``; per direction the grid is rotated
  so that the prediction runs "down", the context runs on the grid (``context.grid``) or on
  column sequences, and the loss sees column sequences ``(B * W, H, D)``.

The modality comes from the encoder's ``modality`` attribute, never from tensor ranks.
:meth:`CPCModule.features` and :meth:`CPCModule.all_features` are the frozen-feature paths
(probes, ABX, extract, the API).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from cpc_lightning.model.encoders.audio import frame_mask
from cpc_lightning.model.infonce import InfoNCEOutput, info_nce, info_nce_all
from cpc_lightning.model.layout import (
    check_direction,
    columns_to_grid,
    grid_to_columns,
    rotate_grid,
)
from cpc_lightning.model.negatives import NegativeSampler

MODALITIES = ("audio", "image")
FEATURE_KINDS = ("c", "z")

#: ``(z, c, valid, speaker, head_set)``: one set of sequences for the loss.
Sequences = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, int]


def modality_of(encoder: nn.Module) -> str:
    """The encoder's declared ``modality`` (``audio`` or ``image``)."""
    modality = getattr(encoder, "modality", None)
    if modality not in MODALITIES:
        raise ValueError(
            f"encoder {type(encoder).__name__} must declare modality = 'audio' or 'image' "
            f"(got {modality!r}); see docs/design.md, 'Adding an encoder'"
        )
    return str(modality)


class CPCModule(pl.LightningModule):
    """Contrastive Predictive Coding for audio frame sequences and image patch grids.

    ``heads`` maps ``c`` ``(..., C)`` to ``(K, ..., D)`` predictions and declares ``num_steps``,
    ``num_sets`` and (optionally) ``score_factor`` (scores are ``score_factor * z^T pred``).
    """

    def __init__(
        self,
        encoder: nn.Module,
        context: nn.Module,
        heads: nn.Module,
        negatives: NegativeSampler,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        prediction_steps: int = 12,
        step_offset: int = 0,
        directions: Sequence[str] = ("down",),
        temperature: float = 1.0,
        compile: bool = False,
        all_anchors: bool = False,
    ) -> None:
        super().__init__()
        if prediction_steps != heads.num_steps:
            raise ValueError(
                f"model.prediction_steps={prediction_steps} but the heads predict {heads.num_steps}"
            )
        for d in directions:
            check_direction(d)
        self.modality = modality_of(encoder)
        self.encoder, self.context, self.heads = encoder, context, heads
        self.negatives = negatives
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.prediction_steps = int(prediction_steps)
        self.step_offset = int(step_offset)
        self.directions = list(directions)
        self.temperature = float(temperature)
        # heads.score_scale (e.g. CPC_audio's dot product / D) folded into the temperature
        self.score_temperature = self.temperature / float(getattr(heads, "score_factor", 1.0))
        self.compile_parts = bool(compile)
        self.steps = list(range(self.step_offset + 1, self.step_offset + self.prediction_steps + 1))
        # False: anchors t < T - K_max for every k; True: every t with t + k < T, per k
        self.all_anchors = bool(all_anchors)
        self.context_per_direction = bool(getattr(context, "per_direction", False))
        if self.context_per_direction:
            missing = [d for d in self.directions if d not in context.directions]
            if missing:
                raise ValueError(
                    f"context.per_direction=true has no network for direction(s) {missing}: "
                    f"context.directions={list(context.directions)} must list model.directions"
                )

    def configure_model(self) -> None:
        """``model.compile=true``: compile encoder and context in place (same state-dict keys)."""
        if self.compile_parts and not getattr(self, "_compiled", False):
            self.encoder.compile()
            self.context.compile()
            self._compiled = True

    # ------------------------------------------------------------------ features
    def _on_layout(self, fn: Callable[[torch.Tensor], Any], z: torch.Tensor) -> Any:
        """Apply a sequence function of the context to ``z`` in ``z``'s own layout.

        Audio and grid contexts take ``z`` as it is; a sequence context on an image grid runs on
        the columns, and its outputs are turned back into grids ``(B, H, W, C)``.
        """
        if self.modality == "audio" or getattr(self.context, "grid", False):
            return fn(z)
        out = fn(grid_to_columns(z))
        if isinstance(out, list):
            return [columns_to_grid(s, z.shape[0]) for s in out]
        return columns_to_grid(out, z.shape[0])

    def context_layers(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Every context layer's output for ``z`` (``hidden_states``); the last is ``c``."""
        states = getattr(self.context, "hidden_states", None)
        if states is None:
            return [self._on_layout(self.context, z)]
        return self._on_layout(states, z)

    def features(self, x: torch.Tensor, kind: str = "c", layer: int | None = None) -> torch.Tensor:
        """The frozen-feature path: audio ``(B, T, D)``, images ``(B, H, W, D)``.

        ``kind="z"``: the encoder output; ``"c"``: the context output ("down" for image grids),
        or with ``layer`` the output of that context layer (0-based; negative counts from the
        top, ``-1`` is ``c``).
        """
        if kind not in FEATURE_KINDS:
            raise ValueError(f"feature={kind!r} must be 'c' (context) or 'z' (encoder)")
        z = self.encoder(x)
        if kind == "z":
            if layer is not None:
                raise ValueError(f"layer={layer} selects a context layer: use it with feature=c")
            return z
        if layer is None:
            return self._on_layout(self.context, z)
        states = self.context_layers(z)
        if not -len(states) <= layer < len(states):
            raise ValueError(
                f"layer={layer} is out of range: {type(self.context).__name__} has "
                f"{len(states)} layer output(s) (0..{len(states) - 1}, or negative from the top)"
            )
        return states[layer]

    def all_features(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``z`` and every context layer's output (``hidden_states``, last = ``c``), one pass.

        Audio ``lengths`` ``(B,)``: valid samples of right-padded waveforms, passed to the
        encoder (which must accept it) so every sequence gets the frames it gets alone; the
        causal context needs nothing more.
        """
        z = self.encoder(x) if lengths is None else self.encoder(x, lengths=lengths)
        return z, self.context_layers(z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z, c)``; images: ``c`` is the "down" context over the grid, ``(B, H, W, C)``."""
        z = self.encoder(x)
        return z, self._on_layout(self.context, z)

    # ------------------------------------------------------------------ loss
    def sequences(self, batch: dict[str, torch.Tensor]) -> Iterator[Sequences]:
        """Yield ``(z, c, valid, speaker, head_set)`` frame/column sequences to score."""
        z = self.encoder(batch["x"])
        if self.modality == "audio":
            b, t, _ = z.shape
            if "mask" in batch:
                valid = frame_mask(batch["mask"], t, self.encoder.downsampling)
            else:
                valid = torch.ones(b, t, dtype=torch.bool, device=z.device)
            yield z, self.context(z), valid, batch.get("speaker"), 0
            return
        grid_context = getattr(self.context, "grid", False)
        for i, direction in enumerate(self.directions):
            zr = rotate_grid(z, direction)
            zs = grid_to_columns(zr)
            kw = {"direction": direction} if self.context_per_direction else {}
            cs = grid_to_columns(self.context(zr, **kw)) if grid_context else self.context(zs)
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
        """InfoNCE over sequences ``z`` ``(B, T, D)``, ``c`` ``(B, T, C)``, ``valid`` ``(B, T)``.

        Anchors are ``t < Ta``: ``Ta = T - K_max`` for every k, or (``all_anchors``) ``Ta = T -
        k_min`` with step k weighting out anchors whose ``t + k`` does not exist, so every k keeps
        one score matmul. Negatives: N drawn indices, or (``num_negatives: all``) every
        candidate the sampler's mask allows.
        """
        b, t, _ = z.shape
        kmax = self.steps[-1]
        if t - kmax < 1:
            raise ValueError(
                f"sequences of {t} steps are too short to predict {kmax} steps ahead: lengthen "
                "data.window (audio) or reduce model.prediction_steps"
            )
        ta = t - (self.steps[0] if self.all_anchors else kmax)
        k = len(self.steps)
        pred = self.heads(c[:, :ta], head_set).reshape(k, b * ta, -1)
        cand, cand_valid, cand_speaker, anchor_seqs = self._candidates(z, valid, speaker)
        steps = torch.tensor(self.steps, device=z.device)
        tt = torch.arange(ta, device=z.device)
        target_t = tt[None, :] + steps[:, None]  # (K, Ta)
        exists = target_t < t  # all True unless all_anchors
        target_t = target_t.clamp(max=t - 1)
        pos = (anchor_seqs[None, :, None] * t + target_t[:, None, :]).reshape(k, -1)
        weight = valid[None, :, :ta] & valid[:, target_t].permute(1, 0, 2)  # (K, B, Ta)
        weight = (weight & exists[:, None, :]).reshape(k, -1)
        if getattr(self.negatives, "use_all", False):
            mask = self.negatives.candidate_mask(cand_valid, cand_speaker, anchor_seqs)
            allowed = mask[:, None, :].expand(-1, ta, -1).reshape(b * ta, -1)  # (B * Ta, Nc)
            return info_nce_all(pred, cand, pos, allowed, weight, self.score_temperature)
        neg = self.negatives.sample(cand_valid, cand_speaker, anchor_seqs, ta, k)
        return info_nce(pred, cand, pos, neg, weight, self.score_temperature)

    def loss_and_context(self, batch: dict[str, torch.Tensor]) -> tuple[InfoNCEOutput, Any]:
        """The InfoNCE outputs averaged over sequence sets (one per image direction), and the
        context of the first set, detached (audio ``(B, T, C)``; images ``(B * W, H, C)``)."""
        outs, first_c = [], None
        for seq in self.sequences(batch):
            if first_c is None:
                first_c = seq[1].detach()
            outs.append(self.sequence_loss(*seq))
        if len(outs) == 1:
            return outs[0], first_c
        merged = InfoNCEOutput(
            *(
                torch.stack([getattr(o, f) for o in outs]).mean(0)
                for f in InfoNCEOutput.__annotations__
            )
        )
        return merged, first_c

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> InfoNCEOutput:
        """Average the InfoNCE outputs over sequence sets (one per image direction)."""
        return self.loss_and_context(batch)[0]

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

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, Any]:
        """Loss for the optimizer; ``context`` (detached) for callbacks such as the online probe."""
        out, c = self.loss_and_context(batch)
        self._log_outputs("train", out, batch["x"].shape[0])
        return {"loss": out.loss, "context": c}

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, Any]:
        out, c = self.loss_and_context(batch)
        self._log_outputs("val", out, batch["x"].shape[0])
        return {"context": c}

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
