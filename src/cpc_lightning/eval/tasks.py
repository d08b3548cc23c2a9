"""What an evaluation task is (:class:`Task`, registered in ``eval/registry.py``), what its runner
receives (:class:`TaskInputs`), and the rows of the linear-probe tasks.

A linear-probe task turns one utterance's features into labelled rows:

``phones``    one row per 10 ms frame. Encoder frame ``t`` covers samples ``[160 t, 160 t + 160)``
              (``T = L // 160`` for ``L`` a multiple of 160); CPC label frame ``i`` covers
              ``[160 i, 160 i + 400)``. Row ``t`` pairs feature frame ``t`` with label frame ``t``;
              the longer of the two sequences is truncated (the encoder's last, partial frames
              have no label). MFCC frames (25 ms window, 10 ms hop, no centring) are label frames.
``speakers``  features pooled over non-overlapping windows of ``data.window`` samples.
``classes``   features pooled over the utterance (audio) or over the patch grid (images).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cpc_lightning.eval.report import Report
from cpc_lightning.eval.settings import EvalSettings

#: ``(rows (N, D), labels (N,))``
Split = tuple[torch.Tensor, torch.Tensor]
#: ``(features (T, D), record, window_frames, pool) -> rows`` of one utterance (None: no label)
RowsFn = Callable[[torch.Tensor, Any, int, str], "Split | None"]


@dataclass
class TaskInputs:
    """What every task runner receives from ``evaluate`` (or the end-of-run probes)."""

    sources: Sequence[Any]  # eval.features.Source: the trained model first, then the baselines
    datamodule: Any  # set up; has the labels the task needs
    settings: EvalSettings  # features and probe training
    data_key: Mapping[str, Any] = field(default_factory=dict)  # the data config (cache key)
    out_dir: Path | None = None  # reports and the feature cache; None: write nothing
    meta: Mapping[str, Any] = field(default_factory=dict)  # what was evaluated (into the report)
    options: Any = None  # the entry config's node named after the task (abx.*, ...), or None
    items_file: str | None = None  # task=abx: an item file (None: the held-out alignments)


@dataclass(frozen=True)
class Task:
    """One evaluation task: the labels it needs, how it runs, what it reports.

    ``needs``: label kinds a DataModule must list in ``labels`` (``cpc_lightning.data.LABELS``);
    ``run(task, inputs)`` returns a ``report`` instance. A linear-probe task has ``rows`` (one
    utterance's labelled rows) and ``class_names`` (the label names of a DataModule), and
    ``image_labels``: the batch key whose label a grid-pooled image row carries (None: audio
    only)."""

    name: str
    needs: frozenset[str]
    run: Callable[[Task, TaskInputs], Report]
    report: type[Report]
    rows: RowsFn | None = None
    class_names: Callable[[Any], list[str]] | None = None
    image_labels: str | None = None

    def headline(self, report: Mapping[str, Any]) -> float:
        """The trained model's main figure of a report's JSON."""
        return self.report.from_json(report).headline


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


def phone_rows(feats: torch.Tensor, record: Any, window_frames: int, how: str) -> Split | None:
    """``phones``: one row per labelled frame."""
    if getattr(record, "phones", None) is None:
        return None
    return align_phones(feats, record.phones)


def speaker_rows(feats: torch.Tensor, record: Any, window_frames: int, how: str) -> Split | None:
    """``speakers``: one pooled row per window, labelled with the utterance's speaker."""
    if len(feats) == 0 or record.speaker_index < 0:
        return None
    x = torch.stack([pool(feats[sl], how) for sl in window_slices(len(feats), window_frames)])
    return x, torch.full((len(x),), int(record.speaker_index), dtype=torch.long)


def class_rows(feats: torch.Tensor, record: Any, window_frames: int, how: str) -> Split | None:
    """``classes``: one row per utterance (pooled), labelled with its class."""
    if len(feats) == 0 or record.label_index < 0:
        return None
    return pool(feats, how)[None], torch.tensor([int(record.label_index)])


def phone_names(datamodule: Any) -> list[str]:
    """Frame label names (numbered when the corpus has none)."""
    names = list(datamodule.phone_names)
    return names or [str(i) for i in range(int(datamodule.num_phones))]


def speaker_names(datamodule: Any) -> list[str]:
    """Speaker names (index = speaker id)."""
    return list(datamodule.speakers)


def class_names(datamodule: Any) -> list[str]:
    """Class names (index = class id)."""
    return list(datamodule.classes)
