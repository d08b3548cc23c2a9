"""Training windows: random ``window``-sample crops of utterances, with masks and frame labels."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from cpc_lightning.data import IGNORE_INDEX
from cpc_lightning.data.audio.frames import LABEL_HOP
from cpc_lightning.data.audio.manifest import AudioDataWarning, Utterance
from cpc_lightning.data.audio.reader import AudioReader
from cpc_lightning.data.resumable import seed_of


def window_start(
    num_samples: int, window: int, seed: int, epoch: int, index: int, train: bool
) -> int:
    """Start (a multiple of 160) of the window of dataset item ``index``: drawn from
    (seed, epoch, index) in training, from (seed, index) only for evaluation; 0 if it is short."""
    slots = (num_samples - window) // LABEL_HOP
    if slots <= 0:
        return 0
    parts = (seed, epoch, index) if train else (seed, 7919, index)
    return LABEL_HOP * int(np.random.default_rng(seed_of(*parts)).integers(0, slots + 1))


def window_item(
    rec: Utterance,
    utterance: int,
    start: int,
    window: int,
    real: torch.Tensor,
    augment: Any | None = None,
    augment_seed: int | None = None,
) -> dict[str, torch.Tensor | int]:
    """One batch item from ``real`` (the samples ``[start, start + window)`` that exist): the
    zero-padded window ``x (1, window)``, ``mask``, frame ``phones`` and the utterance labels.
    ``augment`` runs with a generator seeded by ``augment_seed``."""
    x = torch.zeros(window, dtype=torch.float32)
    mask = torch.zeros(window, dtype=torch.bool)
    n = min(real.numel(), window)
    if n and augment is not None:
        gen = torch.Generator().manual_seed(int(augment_seed or 0))
        real = augment(real[:n], gen)
    x[:n] = real[:n]
    mask[:n] = True
    nf = window // LABEL_HOP
    phones = torch.full((nf,), IGNORE_INDEX, dtype=torch.int64)
    if rec.phones is not None:
        seg = rec.phones[start // LABEL_HOP : start // LABEL_HOP + nf]
        phones[: len(seg)] = torch.from_numpy(seg.astype(np.int64))
    return {
        "x": x.unsqueeze(0),
        "mask": mask,
        "speaker": rec.speaker_index,
        "phones": phones,
        "label": rec.label_index,
        "index": utterance,
    }


class WindowDataset(Dataset):
    """Random ``window``-sample crops, ``windows_per_utterance`` per utterance per epoch.

    Item ``i`` is utterance ``i % len(records)``. Training starts are drawn from (seed, epoch, i);
    evaluation starts from (seed, i) only. Starts are multiples of 160 so that window frame j is
    label frame ``start // 160 + j``. Shorter utterances are zero-padded (``mask`` False there).
    The epoch lives in shared memory so that worker processes see ``set_epoch``.
    """

    def __init__(
        self,
        records: Sequence[Utterance],
        reader: AudioReader,
        window: int,
        windows_per_utterance: int = 1,
        train: bool = True,
        seed: int = 0,
        augment: Any | None = None,
    ) -> None:
        if window <= 0 or window % LABEL_HOP:
            raise ValueError(
                f"data.window must be a positive multiple of {LABEL_HOP}, got {window}"
            )
        if windows_per_utterance < 1:
            raise ValueError(
                f"data.windows_per_utterance must be >= 1, got {windows_per_utterance}"
            )
        self.records = list(records)
        self.reader = reader
        self.window = window
        self.windows_per_utterance = windows_per_utterance
        self.train = train
        self.seed = seed
        self.augment = augment
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._failed: set[str] = set()

    def __len__(self) -> int:
        return len(self.records) * self.windows_per_utterance

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def utterance_of(self, index: int) -> int:
        return index % len(self.records)

    def start_of(self, index: int) -> int:
        """Window start (multiple of 160) for dataset item ``index`` at the current epoch."""
        rec = self.records[self.utterance_of(index)]
        return window_start(rec.num_samples, self.window, self.seed, self.epoch, index, self.train)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        u = self.utterance_of(index)
        rec = self.records[u]
        start = self.start_of(index)
        try:
            real = self.reader.window(rec, start, self.window)
            if not bool(torch.isfinite(real).all()):
                raise ValueError("non-finite samples (NaN/inf; changed since it was indexed?)")
        except Exception as err:  # noqa: BLE001 - a file broken after indexing: keep training
            if rec.path not in self._failed:
                self._failed.add(rec.path)
                warnings.warn(
                    f"could not read {rec.path}: {err}; using silence", AudioDataWarning, 2
                )
            real = torch.zeros(0)
        augment = self.augment if self.train else None
        return window_item(
            rec, u, start, self.window, real, augment, seed_of(self.seed, self.epoch, index, 1)
        )
