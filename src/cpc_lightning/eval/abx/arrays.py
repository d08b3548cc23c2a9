"""Index helpers for ragged groups stored flat in numpy arrays."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def ragged(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For counts ``(G,)``: owner ``g`` and local index ``0..counts[g]-1`` of every element."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    owner = np.repeat(np.arange(counts.size), counts)
    first = np.cumsum(counts) - counts
    return owner, np.arange(total, dtype=np.int64) - first[owner]


def chunks(counts: np.ndarray, budget: int) -> Iterator[slice]:
    """Consecutive slices of groups whose counts sum to about ``budget`` (>= 1 group each)."""
    cum = np.cumsum(counts)
    start, n = 0, len(counts)
    while start < n:
        base = cum[start - 1] if start else 0
        stop = max(int(np.searchsorted(cum, base + budget, side="right")), start + 1)
        yield slice(start, stop)
        start = stop


def segments(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First index and length of the runs of equal rows in sorted ``keys`` ``(N, K)``."""
    if len(keys) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    change = np.flatnonzero((keys[1:] != keys[:-1]).any(axis=1)) + 1
    first = np.concatenate([[0], change]).astype(np.int64)
    return first, np.diff(np.concatenate([first, [len(keys)]])).astype(np.int64)
