"""Straightforward per-triple ABX: the yardstick the vectorised :func:`abx` is tested against.

Plain Python loops over blocks, cells, groups and triples; every triple computes its own two
distances (nothing is cached or batched): a float64 angular cost matrix, then a cell-by-cell
DTW recursion with a back-tracked path length. Triples, tie-breaks (A-X rows: the lower token
index within, X across and for B-X) and averaging are those of :func:`abx` (see the package
docstring), with the ``"libri-light"`` frame mapping and no subsampling. Scores agree with
:func:`abx` up to float32 (there) vs float64 (here) near-ties, which are rare. Slow: for tests
and benchmarks on small item sets.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from cpc_lightning.eval.abx.core import MODES, ABXResult, check_modes
from cpc_lightning.eval.abx.items import ItemSet

_Cell = tuple[tuple[str, str], str, str]  # (context, speaker, phone)


class _Token(NamedTuple):
    """Frames of one token."""

    unit: np.ndarray  # (T, D) float64, rows of L2 norm 1 (or all zero)
    zero: np.ndarray | None  # (T,) all-zero rows, None when there are none


def dtw_reference(cost: np.ndarray | Sequence[Sequence[float]]) -> float:
    """DTW of one cost matrix ``(N, M)`` divided by its back-tracked path length, in float64.

    ``C[i, j] = d[i, j] + min(C[i-1, j], C[i-1, j-1], C[i, j-1])``; back from ``(N-1, M-1)``:
    the diagonal predecessor if ``<=`` both others, else the left one if ``<=`` the upper one,
    else the upper one; once on the first row or column, straight to ``(0, 0)``.
    """
    d = np.asarray(cost, dtype=np.float64).tolist()
    n, m = len(d), len(d[0])
    c = [[0.0] * m for _ in range(n)]
    c[0][0] = d[0][0]
    for i in range(1, n):
        c[i][0] = d[i][0] + c[i - 1][0]
    for j in range(1, m):
        c[0][j] = d[0][j] + c[0][j - 1]
    for i in range(1, n):
        ci, cp, di = c[i], c[i - 1], d[i]
        for j in range(1, m):
            ci[j] = di[j] + min(cp[j], cp[j - 1], ci[j - 1])
    i, j, length = n - 1, m - 1, 1
    while i > 0 and j > 0:
        up, left, diag = c[i - 1][j], c[i][j - 1], c[i - 1][j - 1]
        if diag <= left and diag <= up:
            i, j = i - 1, j - 1
        elif left <= up:
            j -= 1
        else:
            i -= 1
        length += 1
    return c[n - 1][m - 1] / (length + i + j)  # the rest runs along the first row or column


def _distance(x: _Token, y: _Token) -> float:
    """DTW of the angular distances ``arccos(cos) / pi`` between the frames of two tokens; an
    all-zero frame is at 1 from a non-zero frame and at 0 from another all-zero frame."""
    cos = np.clip(x.unit @ y.unit.T, -1.0, 1.0)
    if x.zero is not None or y.zero is not None:
        zx = np.zeros(len(x.unit), bool) if x.zero is None else x.zero
        zy = np.zeros(len(y.unit), bool) if y.zero is None else y.zero
        zx, zy = zx[:, None], zy[None, :]
        cos = np.where(zx & zy, 1.0, np.where(zx ^ zy, -1.0, cos))
    return dtw_reference(np.arccos(cos) / math.pi)


def _tokens(
    features: Mapping[str, Tensor | np.ndarray], items: ItemSet, frame_rate: float
) -> tuple[list[_Token], dict[_Cell, list[int]]]:
    """Frames of the items with features, by ``start = max(0, ceil(r on - 0.5))`` and
    ``end = min(T, floor(r off - 0.5))`` (skipped if empty), and their cells in item order."""
    unit: dict[str, np.ndarray] = {}
    toks: list[_Token] = []
    cells: dict[_Cell, list[int]] = defaultdict(list)
    for k, file in enumerate(items.file):
        if file not in features:
            continue
        if file not in unit:
            a = torch.as_tensor(features[file]).detach().cpu().to(torch.float64).numpy()
            norm = np.linalg.norm(a, axis=1, keepdims=True)
            unit[file] = np.divide(a, norm, out=np.zeros_like(a), where=norm > 0)
        frames = unit[file]
        start = max(0, math.ceil(frame_rate * items.onset[k] - 0.5))
        end = min(len(frames), math.floor(frame_rate * items.offset[k] - 0.5))
        if end <= start:
            continue
        zero = ~frames[start:end].any(axis=1)
        cells[(items.prev[k], items.next[k]), items.speaker[k], items.phone[k]].append(len(toks))
        toks.append(_Token(frames[start:end], zero if zero.any() else None))
    return toks, cells


def _group_error(
    toks: list[_Token], cell_x: list[int], cell_a: list[int], cell_b: list[int], within: bool
) -> tuple[float, int]:
    """Error of one (A, B, X) group and its number of triples (X never A itself)."""
    right, n = 0.0, 0
    for x in cell_x:
        for a in cell_a:
            if a == x:
                continue
            for b in cell_b:
                row, col = (min(a, x), max(a, x)) if within else (x, a)
                d_ax = _distance(toks[row], toks[col])
                d_bx = _distance(toks[x], toks[b])
                right += 1.0 if d_ax < d_bx else 0.5 if d_ax == d_bx else 0.0
                n += 1
    return 1.0 - right / n, n


def _mode_errors(
    toks: list[_Token], cells: dict[_Cell, list[int]], within: bool
) -> tuple[dict[tuple[str, str, str], list[float]], int]:
    """Group errors by (speaker, phone a, phone b), and the number of triples, of one mode."""
    blocks: dict[tuple[tuple[str, str], str], list[str]] = defaultdict(list)
    for c, s, p in cells:
        blocks[c, s].append(p)
    records: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    n_triples = 0
    for (c, s), phones in blocks.items():
        if len(phones) < 2:
            continue
        for a in phones:
            cell_a = cells[c, s, a]
            if within:
                x_cells = [cell_a] if len(cell_a) > 1 else []
            else:
                x_cells = [v for (c2, s2, p2), v in cells.items() if (c2, p2) == (c, a) and s2 != s]
            for cell_x in x_cells:
                for b in phones:
                    if b != a:
                        err, n = _group_error(toks, cell_x, cell_a, cells[c, s, b], within)
                        records[s, a, b].append(err)
                        n_triples += n
    return records, n_triples


def _average(
    records: dict[tuple[str, str, str], list[float]],
) -> tuple[float, dict[str, dict[str, float]]]:
    """Mean over contexts (and X speakers), then speakers, then phone pairs, in percent."""
    by_pair: dict[tuple[str, str], list[float]] = defaultdict(list)
    for (_, a, b), errs in records.items():
        by_pair[a, b].append(sum(errs) / len(errs))
    table: dict[str, dict[str, float]] = defaultdict(dict)
    for (a, b), means in by_pair.items():
        table[a][b] = 100.0 * sum(means) / len(means)
    scores = [v for row in table.values() for v in row.values()]
    return (sum(scores) / len(scores) if scores else float("nan")), dict(table)


def abx_reference(
    features: Mapping[str, Tensor | np.ndarray],
    items: ItemSet,
    frame_rate: float,
    modes: Sequence[str] = MODES,
) -> ABXResult:
    """ABX error (%) by per-triple loops; ``features[file]`` ``(T, D)`` (missing files are
    skipped). Fills ``within``/``across``, ``per_pair``, ``num_triples``, ``num_groups``,
    ``num_tokens``, ``num_skipped`` as :func:`abx` does; ``num_distances`` counts the DTWs
    run, two a triple."""
    modes = check_modes(modes)
    toks, cells = _tokens(features, items, frame_rate)
    result = ABXResult(num_tokens=len(toks), num_skipped=len(items) - len(toks))
    for mode in modes:
        records, n_triples = _mode_errors(toks, cells, mode == "within")
        score, per_pair = _average(records)
        setattr(result, mode, score)
        result.per_pair[mode] = per_pair
        result.num_triples[mode] = n_triples
        result.num_groups[mode] = sum(len(errs) for errs in records.values())
        result.num_distances[mode] = 2 * n_triples
    return result
