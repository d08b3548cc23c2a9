"""Probe tasks: which rows and labels one utterance (or image) contributes.

``phones``    one row per 10 ms frame. Encoder frame ``t`` covers samples ``[160 t, 160 t + 160)``
              (``T = L // 160`` for ``L`` a multiple of 160); CPC label frame ``i`` covers
              ``[160 i, 160 i + 400)``. Row ``t`` pairs feature frame ``t`` with label frame ``t``;
              the longer of the two sequences is truncated (the encoder's last, partial frames
              have no label). MFCC frames (25 ms window, 10 ms hop, no centring) are label frames.
``speakers``  features pooled over non-overlapping windows of ``data.window`` samples.
``classes``   features pooled over the utterance (audio) or over the patch grid (images).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cpc_lightning.data import TASKS

#: ``(rows (N, D), labels (N,))``
Split = tuple[torch.Tensor, torch.Tensor]


def window_slices(num_frames: int, window_frames: int) -> list[slice]:
    """Non-overlapping windows of ``window_frames`` covering an utterance (>= 1 window)."""
    if num_frames <= window_frames:
        return [slice(0, num_frames)]
    return [
        slice(s, s + window_frames) for s in range(0, num_frames - window_frames + 1, window_frames)
    ]


def pool(frames: torch.Tensor, how: str) -> torch.Tensor:
    """``(T, D)`` -> ``(D,)`` mean, or ``(2 D,)`` mean and std (``meanstd``)."""
    mean = frames.mean(0)
    if how == "mean":
        return mean
    std = frames.std(0, unbiased=False) if len(frames) > 1 else torch.zeros_like(mean)
    return torch.cat([mean, std])


def align_phones(feats: torch.Tensor, phones: np.ndarray | torch.Tensor) -> Split:
    """Pair feature frame t with label frame t; truncate to the shorter; drop negative labels."""
    labels = torch.as_tensor(np.asarray(phones), dtype=torch.long)
    n = min(len(feats), len(labels))
    x, y = feats[:n], labels[:n]
    keep = y >= 0
    return x[keep], y[keep]


def task_rows(
    task: str, feats: torch.Tensor, record: Any, window_frames: int, how: str
) -> Split | None:
    """Rows ``(N, D)`` and labels ``(N,)`` of one utterance for ``task`` (None: no label)."""
    if task == "phones":
        if getattr(record, "phones", None) is None:
            return None
        return align_phones(feats, record.phones)
    if len(feats) == 0:
        return None
    if task == "speakers":
        if record.speaker_index < 0:
            return None
        rows = [pool(feats[sl], how) for sl in window_slices(len(feats), window_frames)]
        x = torch.stack(rows)
        return x, torch.full((len(x),), int(record.speaker_index), dtype=torch.long)
    if task == "classes":
        if record.label_index < 0:
            return None
        return pool(feats, how)[None], torch.tensor([int(record.label_index)])
    raise ValueError(f"task={task!r} is not one of {', '.join(TASKS)}")


def class_names(task: str, datamodule: Any) -> list[str]:
    """Names of the label indices of ``task`` for this DataModule."""
    if task == "phones":
        names = list(datamodule.phone_names)
        return names or [str(i) for i in range(int(datamodule.num_phones))]
    if task == "speakers":
        return list(datamodule.speakers)
    return list(datamodule.classes)
