"""Token frames and the DTW distances of token pairs, batched over rectangles and pairs.

A rectangle is a set of row tokens and a set of column tokens whose pairs all need a distance:
the frame-by-frame distances of a rectangle come from one matmul (batched over rectangles of
similar sizes), then the DTWs of its pairs run batched over pairs of similar lengths.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from cpc_lightning.eval.abx.arrays import ragged
from cpc_lightning.eval.abx.dtw import angular_unit, batched_dtw, unit_frames
from cpc_lightning.eval.abx.items import ItemSet, item_frames

_CELL_BUDGET = 1 << 22  # frame-distance cells computed per batched matmul

PairFilter = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _empty() -> np.ndarray:
    return np.zeros(0, np.int64)


@dataclass
class _Side:
    """The rows or the columns of the rectangles: entry ``e`` is token ``tok[e]`` of
    ``length[e]`` frames in rectangle ``rect[e]`` (sorted). Once laid out (:func:`_relabel`):
    ``off[e]``, its first frame within the rectangle; ``first[q]``, the first entry of
    rectangle ``q`` ``(Q + 1,)``."""

    rect: np.ndarray
    tok: np.ndarray
    length: np.ndarray
    off: np.ndarray = field(default_factory=_empty)
    first: np.ndarray = field(default_factory=_empty)

    def frames(self, n_rect: int) -> np.ndarray:
        """Frames per rectangle ``(Q,)``."""
        return np.bincount(self.rect, self.length, minlength=n_rect).astype(np.int64)

    def offsets(self, n_rect: int) -> np.ndarray:
        """First frame of every entry within its rectangle ``(E,)``."""
        cum = np.cumsum(self.length) - self.length  # exclusive, over all entries
        first = np.searchsorted(self.rect, np.arange(n_rect))
        return cum - cum[first][self.rect]


def _split_rows(
    rows: _Side, cols: _Side, n_rect: int, budget: int, len_np: np.ndarray
) -> tuple[_Side, _Side, int]:
    """Split the rows of rectangles whose frames-by-frames matrix exceeds ``budget``: each
    piece becomes a rectangle with all the columns of its parent. Returns the new count too."""
    fc = cols.frames(n_rect)
    piece = rows.offsets(n_rect) // np.maximum(budget // fc, 1)[rows.rect]
    if not piece.any():
        return rows, cols, n_rect
    width = int(piece.max()) + 1
    parents, row_rect = np.unique(rows.rect * width + piece, return_inverse=True)
    parents //= width
    c_first = np.searchsorted(cols.rect, parents)
    c_n = np.searchsorted(cols.rect, parents, side="right") - c_first
    o, loc = ragged(c_n)
    col_tok = cols.tok[c_first[o] + loc]
    split_rows = _Side(row_rect, rows.tok, rows.length)
    return split_rows, _Side(o, col_tok, len_np[col_tok]), len(parents)


def _relabel(side: _Side, rank: np.ndarray, n_rect: int) -> _Side:
    """``side`` with rectangle ``q`` renamed ``rank[q]``, re-sorted (stably) and laid out."""
    by = np.argsort(rank[side.rect], kind="stable")
    out = _Side(rank[side.rect][by], side.tok[by], side.length[by])
    out.off = out.offsets(n_rect)
    out.first = np.searchsorted(out.rect, np.arange(n_rect + 1))
    return out


def _by_size(rows: _Side, cols: _Side, n_rect: int) -> tuple[_Side, _Side, np.ndarray, np.ndarray]:
    """Rectangles relabelled from the largest down (row frames, then column frames): the laid
    out sides and the row and column frames per rectangle ``(Q,)`` in that order."""
    fr, fc = rows.frames(n_rect), cols.frames(n_rect)
    order = np.lexsort((-fc, -fr))
    rank = np.empty(n_rect, np.int64)
    rank[order] = np.arange(n_rect)
    return _relabel(rows, rank, n_rect), _relabel(cols, rank, n_rect), fr[order], fc[order]


def _matmul_groups(
    fr: np.ndarray, fc: np.ndarray, budget: int
) -> Iterator[tuple[int, int, int, int]]:
    """Runs ``q0..q1-1`` of rectangles (sizes sorted down) that fit in one padded
    ``(q1 - q0, fr_max, fc_max)`` matmul within ``budget``: ``(q0, q1, fr_max, fc_max)``."""
    n_rect, q0 = len(fr), 0
    while q0 < n_rect:
        q1, fc_max = q0 + 1, int(fc[q0])
        while q1 < n_rect and (q1 - q0 + 1) * fr[q0] * max(fc_max, fc[q1]) <= budget:
            fc_max = max(fc_max, int(fc[q1]))
            q1 += 1
        yield q0, q1, int(fr[q0]), fc_max
        q0 = q1


def _pairs(rows: _Side, cols: _Side, q0: int, q1: int) -> tuple[np.ndarray, ...]:
    """Every row entry of rectangles ``q0..q1-1`` with each column entry of its rectangle:
    the rectangle minus ``q0``, the row entry and the column entry of each pair ``(P,)``."""
    n_r = np.diff(rows.first[q0 : q1 + 1])
    n_c = np.diff(cols.first[q0 : q1 + 1])
    o, loc = ragged(n_r * n_c)
    ri = rows.first[q0:q1][o] + loc // n_c[o]
    ci = cols.first[q0:q1][o] + loc % n_c[o]
    return o, ri, ci


def _load(
    features: Mapping[str, Tensor] | Callable[[str], Tensor], file: str, device: torch.device
) -> Tensor | None:
    """Features ``(T, D)`` float32 of ``file`` on ``device``; ``None`` if a mapping lacks it."""
    if isinstance(features, Mapping):
        if file not in features:
            return None
        feat = features[file]
    else:
        feat = features(file)
    feat = torch.as_tensor(feat).detach()
    if feat.dim() != 2:
        raise ValueError(f"features of {file!r} must be (T, D), got {tuple(feat.shape)}")
    return feat.to(device=device, dtype=torch.float32)


class Tokens:
    """Token frames, flattened: unit frames ``(F, D)``, zero mask ``(F,)``, start/len ``(N,)``;
    ``item_index`` ``(N,)``: the item of each token (tokens without frames are skipped)."""

    def __init__(
        self,
        features: Mapping[str, Tensor] | Callable[[str], Tensor],
        items: ItemSet,
        frame_rate: float,
        mapping: str,
        device: torch.device,
    ) -> None:
        by_file: dict[str, list[int]] = {}
        for k, f in enumerate(items.file):
            by_file.setdefault(f, []).append(k)
        onset = np.asarray(items.onset, dtype=np.float64)
        offset = np.asarray(items.offset, dtype=np.float64)
        frames, kept, lens = [], [], []
        first: tuple[str, int] | None = None  # the first file loaded and its dimension
        for f, idx_list in by_file.items():
            feat = _load(features, f, device)
            if feat is None:
                continue
            first = first or (f, feat.shape[1])
            if feat.shape[1] != first[1]:
                raise ValueError(
                    f"features of mixed dimensions: {first[0]!r} has dimension {first[1]} but "
                    f"{f!r} has {feat.shape[1]}; score features of one model and layer at a time"
                )
            idx = np.asarray(idx_list, dtype=np.int64)
            start, end = item_frames(onset[idx], offset[idx], frame_rate, feat.shape[0], mapping)
            ok = end > start
            if not ok.any():
                continue
            idx, start, n = idx[ok], start[ok], (end - start)[ok]
            owner, local = ragged(n)
            pick = torch.as_tensor(start[owner] + local, device=device)
            frames.append(feat.index_select(0, pick))
            kept.append(idx)
            lens.append(n)
        if not kept:
            raise ValueError("no token has feature frames (check file ids, times, frame_rate)")
        self.item_index = np.concatenate(kept)
        self.frames, self.zero = unit_frames(torch.cat(frames))
        self.len_np = np.concatenate(lens)
        self.start_np = np.cumsum(self.len_np) - self.len_np
        self.num_skipped = len(items) - len(self.item_index)

    def __len__(self) -> int:
        return len(self.item_index)

    def _padded(self, side: _Side, q0: int, q1: int, width: int) -> tuple[Tensor, Tensor]:
        """Unit frames ``(q1 - q0, width, D)`` and zero masks ``(q1 - q0, width)`` of the
        rectangles ``q0..q1-1`` of ``side``, each entry at its offset; padding reads frame 0."""
        lo, hi, n_q = side.first[q0], side.first[q1], q1 - q0
        o, loc = ragged(side.length[lo:hi])
        pos = (side.rect[lo:hi][o] - q0) * width + side.off[lo:hi][o] + loc
        idx = np.zeros(n_q * width, np.int64)  # padding: frame 0, never read
        idx[pos] = self.start_np[side.tok[lo:hi][o]] + loc
        idx_t = torch.as_tensor(idx, device=self.frames.device)
        frames = self.frames.index_select(0, idx_t).view(n_q, width, -1)
        return frames, self.zero.index_select(0, idx_t).view(n_q, width)

    def _group_distances(
        self,
        rows: _Side,
        cols: _Side,
        group: tuple[int, int, int, int],
        keep: PairFilter | None,
        batch_size: int,
        budget: int,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows, columns and DTW distances ``(P,)`` of the pairs of one matmul group."""
        q0, q1, fr_max, fc_max = group
        ra, za = self._padded(rows, q0, q1, fr_max)
        cb, zb = self._padded(cols, q0, q1, fc_max)
        # Frame distances (n_q, fr_max, fc_max), flat, plus a margin that keeps the reads of
        # any padding cell in bounds.
        n_cells = (q1 - q0) * fr_max * fc_max
        frame_dist = ra.new_zeros(n_cells + (fr_max + 1) * fc_max + fr_max)
        angular_unit(ra, za, cb, zb, out=frame_dist[:n_cells].view(q1 - q0, fr_max, fc_max))
        o, ri, ci = _pairs(rows, cols, q0, q1)
        if keep is not None:
            m = keep(rows.tok[ri], cols.tok[ci])
            o, ri, ci = o[m], ri[m], ci[m]
        la, lb = rows.length[ri], cols.length[ci]
        base = o * (fr_max * fc_max) + rows.off[ri] * fc_max + cols.off[ci]
        dist = batched_dtw(frame_dist, fc_max, la, lb, base, batch_size, budget)
        return rows.tok[ri], cols.tok[ci], dist

    def rect_distances(
        self,
        row_rect: np.ndarray,
        row_tok: np.ndarray,
        col_rect: np.ndarray,
        col_tok: np.ndarray,
        keep: PairFilter | None,
        batch_size: int,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """DTW distances of all token pairs of rectangles ``rows(q) x cols(q)``.

        ``row_rect``/``col_rect`` ``(R,)``/``(C,)``: rectangle ids, sorted, ``0..Q-1``, each
        with rows and columns; ``row_tok``/``col_tok``: their tokens; ``keep(rows, cols)``
        filters the pairs. Frame-by-frame distances come from one matmul per rectangle
        (batched over rectangles); DTWs are batched over pairs sorted by length. Returns
        ``rows, cols, distance`` ``(P,)`` (float32).
        """
        budget = _CELL_BUDGET
        n_rect = int(row_rect[-1]) + 1 if len(row_rect) else 0
        if n_rect == 0:
            return _empty(), _empty(), np.zeros(0, np.float32)
        rows = _Side(row_rect, row_tok, self.len_np[row_tok])
        cols = _Side(col_rect, col_tok, self.len_np[col_tok])
        rows, cols, n_rect = _split_rows(rows, cols, n_rect, budget, self.len_np)
        rows, cols, fr, fc = _by_size(rows, cols, n_rect)
        out = [
            self._group_distances(rows, cols, group, keep, batch_size, budget)
            for group in _matmul_groups(fr, fc, budget)
        ]
        rows_tok, cols_tok, dist = zip(*out, strict=True)
        return np.concatenate(rows_tok), np.concatenate(cols_tok), np.concatenate(dist)
