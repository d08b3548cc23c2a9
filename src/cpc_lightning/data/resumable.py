"""Exact resume for the data: a loader whose place in the epoch is part of the checkpoint.

:class:`ResumableLoader` is a ``DataLoader`` over a batch sampler with per-epoch seeded order
(``set_epoch``) that can start an epoch after its first ``k`` batches (``resume_at``). Lightning
stores ``state_dict()`` of a stateful training loader in the checkpoint (``loops.fit_loop.
state_dict.combined_loader``) and calls ``load_state_dict`` on resume, so a run killed at any
step continues with the batch the uninterrupted run would have drawn next; the skipped batches
are never loaded. Iteration is lazy (the underlying iterator, and its worker prefetching, start
at the first ``next``), so the sampler sees the epoch Lightning sets after creating the iterator.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
from torch.utils.data import DataLoader


def seed_of(*parts: int) -> int:
    """A 32-bit seed derived from integers (order matters)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


class EpochBatches(Protocol):
    """What :class:`ResumableLoader` needs from its batch sampler."""

    epoch: int

    def set_epoch(self, epoch: int) -> None:
        """Order the batches of ``epoch`` (seeded)."""
        ...

    def resume_at(self, epoch: int, batches: int) -> None:
        """Make the next iteration of ``epoch`` start after its first ``batches`` batches."""
        ...

    def pending_skip(self) -> int:
        """Batches the next iteration skips (0 unless ``resume_at`` named the current epoch)."""
        ...


class SkipFirst:
    """The ``resume_at`` bookkeeping of a batch sampler (mixed into the samplers)."""

    epoch: int
    _resume: tuple[int, int] | None = None

    def resume_at(self, epoch: int, batches: int) -> None:
        """The next iteration of ``epoch`` skips its first ``batches`` batches."""
        self._resume = (int(epoch), int(batches))

    def pending_skip(self) -> int:
        """Batches the next iteration skips (the resume point is dropped for another epoch)."""
        r = self._resume
        return r[1] if r is not None and r[0] == self.epoch else 0

    def take_skip(self) -> int:
        """:meth:`pending_skip`, consumed (call it when an iteration starts)."""
        skip, self._resume = self.pending_skip(), None
        return skip


class ResumableLoader(DataLoader):
    """A ``DataLoader`` (``batch_sampler`` an :class:`EpochBatches`) that counts the batches it
    delivered in the current epoch and restores that count from a checkpoint."""

    def __init__(self, dataset: Any, batch_sampler: EpochBatches, **kwargs: Any) -> None:
        super().__init__(dataset, batch_sampler=batch_sampler, **kwargs)
        self.delivered = 0

    def __iter__(self) -> Iterator[Any]:
        return self._batches()

    def _batches(self) -> Iterator[Any]:
        sampler: EpochBatches = self.batch_sampler  # type: ignore[assignment]
        self.delivered = sampler.pending_skip()
        for batch in super().__iter__():
            self.delivered += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """Epoch and batches delivered in it (saved by Lightning in every checkpoint)."""
        sampler: EpochBatches = self.batch_sampler  # type: ignore[assignment]
        return {"epoch": int(sampler.epoch), "batches": int(self.delivered)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue after the saved batch when Lightning resumes that epoch (a finished epoch
        is simply not resumed: Lightning moves to the next one, which starts at its beginning)."""
        sampler: EpochBatches = self.batch_sampler  # type: ignore[assignment]
        sampler.resume_at(int(state["epoch"]), int(state["batches"]))
