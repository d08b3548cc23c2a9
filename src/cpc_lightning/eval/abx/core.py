"""The ABX entry point: tokens, cells, then each mode's groups, distances and score."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cpc_lightning.eval.abx.groups import ModeScore, build_cells, score_mode, token_codes
from cpc_lightning.eval.abx.items import ItemSet
from cpc_lightning.eval.abx.tokens import Tokens

MODES = ("within", "across")


@dataclass
class ABXResult:
    """ABX error rates in percent (NaN: mode not run or no triples) and bookkeeping.

    ``per_pair[mode][a][b]``: error for A phone ``a`` vs B phone ``b`` after averaging over
    contexts (and X speakers) and speakers; the mode's score is the mean of these.
    ``num_triples``/``num_groups``/``num_distances``: per mode, triples scored, cell groups
    scored, distinct DTW distances computed. ``num_tokens``: tokens used; ``num_skipped``:
    tokens without frames or without features.
    """

    within: float = float("nan")
    across: float = float("nan")
    per_pair: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    num_triples: dict[str, int] = field(default_factory=dict)
    num_groups: dict[str, int] = field(default_factory=dict)
    num_distances: dict[str, int] = field(default_factory=dict)
    num_tokens: int = 0
    num_skipped: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict (NaN written as ``None``)."""

        def clean(v: float) -> float | None:
            return None if math.isnan(v) else float(v)

        return {
            "within": clean(self.within),
            "across": clean(self.across),
            "per_pair": {
                m: {a: {b: clean(v) for b, v in row.items()} for a, row in d.items()}
                for m, d in self.per_pair.items()
            },
            "num_triples": dict(self.num_triples),
            "num_groups": dict(self.num_groups),
            "num_distances": dict(self.num_distances),
            "num_tokens": self.num_tokens,
            "num_skipped": self.num_skipped,
        }

    def to_json(self, indent: int | None = 2) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent)


@contextmanager
def _intra_op_threads(num_threads: int | None, device: torch.device) -> Iterator[None]:
    """On CPU, run torch ops on ``num_threads`` intra-op threads (restored afterwards)."""
    previous = torch.get_num_threads()
    if num_threads is None or device.type != "cpu" or num_threads == previous:
        yield
        return
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _record(result: ABXResult, mode: str, scored: ModeScore, phone_names: list[str]) -> None:
    """Store one mode's score (percent), per-pair table by phone names and counts."""
    setattr(result, mode, 100.0 * scored.score)
    per_pair: dict[str, dict[str, float]] = {}
    for (ia, ib), v in sorted(scored.table.items()):
        per_pair.setdefault(phone_names[ia], {})[phone_names[ib]] = 100.0 * v
    result.per_pair[mode] = per_pair
    result.num_triples[mode] = scored.num_triples
    result.num_groups[mode] = scored.num_groups
    result.num_distances[mode] = scored.num_distances


def check_modes(modes: Sequence[str]) -> tuple[str, ...]:
    """``modes`` as a tuple; ``ValueError`` unless a non-empty subset of :data:`MODES`."""
    modes = tuple(modes)
    if not modes or any(m not in MODES for m in modes):
        raise ValueError(f"modes must be a non-empty subset of {MODES}, got {modes}")
    return modes


def abx(
    features: Mapping[str, Tensor] | Callable[[str], Tensor],
    items: ItemSet,
    frame_rate: float,
    modes: Sequence[str] = MODES,
    max_size_group: int | None = None,
    max_x_across: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    batch_size: int = 4000,
    mapping: str = "libri-light",
    num_threads: int | None = 1,
) -> ABXResult:
    """ABX error (%) of frame features on phone tokens, within and/or across speakers.

    ``features``: per-file ``(T, D)`` tensors by file id, or a function of the file id (files
    absent from a mapping are skipped). ``frame_rate``: feature frames per second.
    ``max_size_group``: tokens kept per (context, speaker, phone) cell; ``max_x_across``: X cells
    (other speakers) per A cell; ``None`` = all (seeded sampling otherwise). ``batch_size``: token
    pairs per batched DTW. ``mapping``: seconds-to-frames rule, see :func:`item_frames`.
    ``num_threads``: torch intra-op threads during the call on CPU (``None``: leave torch's
    setting); the work is mostly many small memory-bound ops, for which one thread is about as
    fast as several and does not stall when other processes hold the cores. Each distinct
    (X, other token) distance is computed once. The package docstring gives the exact triples
    and averaging.
    """
    modes = check_modes(modes)
    dev = torch.device(device)
    with _intra_op_threads(num_threads, dev):
        rng = np.random.default_rng(seed)
        toks = Tokens(features, items, frame_rate, mapping, dev)
        ctx, spk, phn, phone_names = token_codes(items, toks.item_index)
        cells = build_cells(ctx, spk, phn, max_size_group, rng)
        result = ABXResult(num_tokens=len(toks), num_skipped=toks.num_skipped)
        for mode in modes:
            scored = score_mode(toks, cells, mode, len(phone_names), max_x_across, rng, batch_size)
            _record(result, mode, scored, phone_names)
        return result
