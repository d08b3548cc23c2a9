"""Batch samplers for audio windows: DDP-aware, reseeded per epoch, equal batch counts per rank.

``uniform`` (random batches), ``same_speaker`` (one speaker per batch, as CPC_audio's sampler) and
``speaker_groups`` (P speakers x Q windows per batch). They yield lists of dataset indices.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

from cpc_lightning.data.audio.manifest import AudioDataWarning
from cpc_lightning.data.audio.windows import WindowDataset
from cpc_lightning.data.resumable import SkipFirst, seed_of

log = logging.getLogger(__name__)

SAMPLERS = ("uniform", "same_speaker", "speaker_groups")


def dist_rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Explicit values, else ``torch.distributed``'s when initialised, else (0, 1)."""
    if rank is not None and world_size is not None:
        r, w = rank, world_size
    elif torch.distributed.is_available() and torch.distributed.is_initialized():
        r, w = torch.distributed.get_rank(), torch.distributed.get_world_size()
    else:
        r, w = 0, 1
    if not 0 <= r < w:
        raise ValueError(f"rank {r} is not in [0, world_size={w})")
    return r, w


class _EpochHook(Sampler[int]):
    """``batch_sampler.sampler``: Lightning calls ``set_epoch`` on this (not on the batch sampler),
    so it forwards. Iterating it gives the batch sampler's indices, flattened."""

    def __init__(self, owner: _BatchSampler) -> None:
        self.owner = owner

    def set_epoch(self, epoch: int) -> None:
        self.owner.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        return (i for b in self.owner for i in b)

    def __len__(self) -> int:
        return sum(len(b) for b in self.owner)


class _BatchSampler(SkipFirst, Sampler[list[int]]):
    """Shared parts: rank/world, per-epoch reseeding, equal batch counts on every rank, and
    starting an epoch after its first k batches (``resume_at``: exact resume)."""

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
        dataset: WindowDataset | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"data.batch_size={batch_size} must be >= 1")
        if num_items < 1:
            raise ValueError("the sampler got an empty dataset")
        self.num_items = num_items
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.rank, self.world_size = dist_rank_world(rank, world_size)
        self.dataset = dataset
        self.epoch = 0
        self.sampler = _EpochHook(self)

    def set_epoch(self, epoch: int) -> None:
        """Reseed for ``epoch`` (Lightning calls this); also tells the dataset, even in workers."""
        self.epoch = epoch
        if self.dataset is not None:
            self.dataset.set_epoch(epoch)

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng(seed_of(self.seed, self.epoch if self.shuffle else 0, 17))

    def _global_batches(self) -> list[list[int]]:
        raise NotImplementedError

    def _shard(self, batches: list[list[int]]) -> list[list[int]]:
        w = self.world_size
        if w == 1:
            return batches
        if len(batches) % w:  # pad by repeating from the start so every rank gets as many
            if not batches:
                return []
            extra = w - len(batches) % w
            batches = batches + [batches[i % len(batches)] for i in range(extra)]
        return batches[self.rank :: w]

    def _rank_batches(self) -> list[list[int]]:
        """This rank's batches of the current epoch, in order."""
        return self._shard(self._global_batches())

    def __iter__(self) -> Iterator[list[int]]:
        skip = self.take_skip()
        yield from self._rank_batches()[skip:]

    def __len__(self) -> int:
        return math.ceil(self._num_global_batches() / self.world_size)

    def _num_global_batches(self) -> int:
        raise NotImplementedError


class UniformBatchSampler(_BatchSampler):
    """Random batches; each rank gets every ``world_size``-th item of one shared permutation."""

    def _per_rank(self) -> int:
        return math.ceil(self.num_items / self.world_size)

    def _rank_batches(self) -> list[list[int]]:
        order = (
            self._rng().permutation(self.num_items) if self.shuffle else np.arange(self.num_items)
        )
        total = self._per_rank() * self.world_size
        if total > self.num_items:
            order = np.concatenate([order, order[: total - self.num_items]])
        mine = order[self.rank :: self.world_size].tolist()
        return [mine[i * self.batch_size : (i + 1) * self.batch_size] for i in range(len(self))]

    def __len__(self) -> int:
        n = self._per_rank()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)


def _group_by_speaker(speakers: Sequence[int]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(speakers):
        if s < 0:
            raise ValueError(
                "speaker-grouped sampling needs a speaker for every utterance, but some have none; "
                "use data.sampler=uniform or a data.pattern with a (?P<speaker>...) group"
            )
        groups.setdefault(int(s), []).append(i)
    return groups


class SameSpeakerBatchSampler(_BatchSampler):
    """Every batch holds windows of one speaker (as CPC_audio's speaker sampler).

    Each speaker's items are shuffled and cut into batches of ``batch_size`` (the last one smaller
    unless ``drop_last``); the batch order is shuffled and dealt to ranks.
    """

    def __init__(self, speakers: Sequence[int], batch_size: int, **kw: Any) -> None:
        super().__init__(len(speakers), batch_size, **kw)
        self.groups = _group_by_speaker(speakers)

    def _global_batches(self) -> list[list[int]]:
        rng = self._rng()
        batches: list[list[int]] = []
        for s in sorted(self.groups):
            items = np.array(self.groups[s])
            if self.shuffle:
                items = rng.permutation(items)
            for i in range(0, len(items), self.batch_size):
                b = items[i : i + self.batch_size].tolist()
                if len(b) == self.batch_size or not self.drop_last:
                    batches.append(b)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def _num_global_batches(self) -> int:
        f = math.floor if self.drop_last else math.ceil
        return sum(f(len(v) / self.batch_size) for v in self.groups.values())


class SpeakerGroupsBatchSampler(_BatchSampler):
    """P speakers x Q windows each per batch (``batch_size = P * Q``), batch-major by speaker.

    Speakers are drawn without replacement within a batch, weighted by how many of their items the
    epoch has not used yet, so an epoch of ``num_items // (P*Q)`` batches covers nearly everything.
    A speaker with fewer than Q items is sampled with replacement (warned once).
    """

    def __init__(
        self,
        speakers: Sequence[int],
        speakers_per_batch: int,
        windows_per_speaker: int,
        **kw: Any,
    ) -> None:
        size = check_sampler("speaker_groups", 0, speakers_per_batch, windows_per_speaker)
        kw.pop("batch_size", None)
        super().__init__(len(speakers), size, **kw)
        self.p, self.q = int(speakers_per_batch), int(windows_per_speaker)
        self.groups = _group_by_speaker(speakers)
        if len(self.groups) < self.p:
            raise ValueError(
                f"data.speakers_per_batch={self.p} but the data has only {len(self.groups)} "
                "speakers; lower data.speakers_per_batch"
            )
        few = sorted(s for s, v in self.groups.items() if len(v) < self.q)
        if few:
            warnings.warn(
                f"{len(few)} speakers have fewer than data.windows_per_speaker={self.q} items; "
                "they are sampled with replacement",
                AudioDataWarning,
                2,
            )

    def _num_global_batches(self) -> int:
        return max(1, self.num_items // self.batch_size)

    def _global_batches(self) -> list[list[int]]:
        rng = self._rng()
        spk = sorted(self.groups)
        queues = {s: list(rng.permutation(self.groups[s])) for s in spk}
        left = np.array([len(self.groups[s]) for s in spk], dtype=np.float64)
        batches: list[list[int]] = []
        for _ in range(self._num_global_batches()):
            w = left + 1e-3
            chosen = rng.choice(len(spk), size=self.p, replace=False, p=w / w.sum())
            batch: list[int] = []
            for c in chosen:
                s = spk[c]
                for _ in range(self.q):
                    if not queues[s]:
                        queues[s] = list(rng.permutation(self.groups[s]))
                    batch.append(int(queues[s].pop()))
                left[c] = max(0.0, left[c] - self.q)
            batches.append(batch)
        return batches


def check_sampler(
    name: str,
    batch_size: int,
    speakers_per_batch: int | None = None,
    windows_per_speaker: int | None = None,
) -> int:
    """Validate a sampler choice (``data.sampler`` and its sizes); return its batch size
    (``P * Q`` for ``speaker_groups``, else ``batch_size``)."""
    if name not in SAMPLERS:
        raise ValueError(f"data.sampler={name!r} is not one of {', '.join(SAMPLERS)}")
    if name != "speaker_groups":
        if int(batch_size) < 1:
            raise ValueError(f"data.batch_size={batch_size} must be >= 1")
        return int(batch_size)
    p, q = speakers_per_batch, windows_per_speaker
    if p is None or q is None or int(p) < 1 or int(q) < 1:
        raise ValueError(
            "data.sampler=speaker_groups needs data.speakers_per_batch (P) >= 1 and "
            f"data.windows_per_speaker (Q) >= 1, got {p} and {q}"
        )
    return int(p) * int(q)


def make_batch_sampler(
    name: str,
    speakers: Sequence[int],
    batch_size: int,
    speakers_per_batch: int | None = None,
    windows_per_speaker: int | None = None,
    **kw: Any,
) -> _BatchSampler:
    """Build ``uniform`` | ``same_speaker`` | ``speaker_groups`` (``kw``: seed, shuffle, drop_last,
    rank, world_size, dataset)."""
    size = check_sampler(name, batch_size, speakers_per_batch, windows_per_speaker)
    if name == "uniform":
        return UniformBatchSampler(len(speakers), size, **kw)
    if name == "same_speaker":
        return SameSpeakerBatchSampler(speakers, size, **kw)
    if size != batch_size:
        log.info(
            "speaker_groups: batch size is P*Q = %d (data.batch_size=%d ignored)", size, batch_size
        )
    kw.pop("drop_last", None)
    return SpeakerGroupsBatchSampler(speakers, speakers_per_batch, windows_per_speaker, **kw)
