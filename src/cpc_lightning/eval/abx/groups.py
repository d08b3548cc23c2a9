"""Cells, cell groups and triples of one ABX mode, their distances, scores and averaging.

Cells are runs of the token list sorted by (context, speaker, phone, token); a block is the
cells of one (context, speaker). All arrays are numpy; cells and tokens are integer ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cpc_lightning.eval.abx.arrays import chunks, ragged, segments
from cpc_lightning.eval.abx.items import ItemSet
from cpc_lightning.eval.abx.tokens import PairFilter, Tokens

_TRIPLE_BUDGET = 1 << 22  # triples scored per numpy chunk


def token_codes(
    items: ItemSet, item_index: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Context, speaker and phone ids ``(N,)`` of the tokens ``items[item_index]`` (in order of
    first appearance), and the phone names by id."""

    def codes(values: Sequence[Any]) -> tuple[np.ndarray, list[Any]]:
        table: dict[Any, int] = {}
        out = [table.setdefault(values[k], len(table)) for k in item_index]
        return np.array(out, dtype=np.int64), list(table)

    ctx, _ = codes(list(zip(items.prev, items.next, strict=True)))
    spk, _ = codes(items.speaker)
    phn, phone_names = codes(items.phone)
    return ctx, spk, phn, phone_names


@dataclass
class Cells:
    """Cells of the sorted token list ``srt`` (subsampled: tokens ``(N',)``): ``start``, ``n``,
    ``context``, ``speaker``, ``phone`` ``(K,)`` per cell; ``of_tok`` ``(N,)``: cell of each
    token, -1 if dropped. Derived: ``block`` ``(K,)``, the block of each cell, and ``ncell``
    ``(K,)``, the cells in it; per block ``(B,)``: ``blk_first`` (its first cell),
    ``blk_tok_start`` and ``blk_tok_n`` (its run of ``srt``)."""

    srt: np.ndarray
    start: np.ndarray
    n: np.ndarray
    context: np.ndarray
    speaker: np.ndarray
    phone: np.ndarray
    of_tok: np.ndarray
    block: np.ndarray = field(init=False)
    ncell: np.ndarray = field(init=False)
    blk_first: np.ndarray = field(init=False)
    blk_tok_start: np.ndarray = field(init=False)
    blk_tok_n: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.blk_first, blk_ncell = segments(np.stack([self.context, self.speaker], 1))
        self.block = np.repeat(np.arange(len(self.blk_first)), blk_ncell)
        self.ncell = blk_ncell[self.block]
        self.blk_tok_start = self.start[self.blk_first]
        first = self.blk_first
        self.blk_tok_n = np.add.reduceat(self.n, first) if len(first) else first

    def tokens(self, cell: np.ndarray, local: np.ndarray) -> np.ndarray:
        """Token ``local`` of each ``cell``."""
        return self.srt[self.start[cell] + local]


def _subsample(
    srt: np.ndarray, keys: np.ndarray, max_size_group: int, rng: np.random.Generator
) -> np.ndarray:
    """``srt`` keeping at most ``max_size_group`` random tokens of each run of ``keys[srt]``."""
    n_tok = len(srt)
    first, n = segments(keys[srt])
    prio = rng.random(n_tok)
    owner = np.repeat(np.arange(len(n)), n)
    by_prio = np.lexsort((prio[srt], owner))
    rank = np.empty(n_tok, np.int64)
    rank[by_prio] = np.arange(n_tok) - first[owner[by_prio]]
    return srt[rank < max_size_group]


def build_cells(
    ctx: np.ndarray,
    spk: np.ndarray,
    phn: np.ndarray,
    max_size_group: int | None,
    rng: np.random.Generator,
) -> Cells:
    """Cells (context, speaker, phone) of tokens with ids ``ctx, spk, phn`` ``(N,)``, at most
    ``max_size_group`` random tokens each (``None``: all)."""
    n_tok = len(ctx)
    keys = np.stack([ctx, spk, phn], 1)
    srt = np.lexsort((np.arange(n_tok, dtype=np.int64), phn, spk, ctx))
    if max_size_group is not None:
        srt = _subsample(srt, keys, max_size_group, rng)
    cell_start, cell_n = segments(keys[srt])
    head = srt[cell_start]
    of_tok = np.full(n_tok, -1, np.int64)
    of_tok[srt] = np.repeat(np.arange(len(cell_n)), cell_n)
    return Cells(srt, cell_start, cell_n, ctx[head], spk[head], phn[head], of_tok)


@dataclass
class Groups:
    """Groups (A cell, B cell, X cell) ``(G,)`` of one mode, and its distance rectangles: one
    per block, rows the tokens of ``rect_cells`` (block ``rect_blocks``), columns all tokens
    of the block; ``keep`` filters the (row, column) token pairs."""

    a: np.ndarray
    b: np.ndarray
    x: np.ndarray
    rect_cells: np.ndarray
    rect_blocks: np.ndarray
    keep: PairFilter | None


def _with_b(cells: Cells, a: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, ...]:
    """(A, B, X) cells: each (A, X) with every other cell B of A's block."""
    o, loc = ragged(cells.ncell[a])
    g_a, g_x = a[o], x[o]
    g_b = cells.blk_first[cells.block[g_a]] + loc
    real = g_b != g_a
    return g_a[real], g_b[real], g_x[real]


def within_groups(cells: Cells) -> Groups:
    """X and A from one cell of at least two tokens, B another cell of the block. The (A, X)
    pairs of one cell are computed once, the lower token index as the row."""
    a_cells = np.flatnonzero((cells.n >= 2) & (cells.ncell >= 2))
    of_tok = cells.of_tok

    def keep(r: np.ndarray, c: np.ndarray) -> np.ndarray:
        return (of_tok[r] != of_tok[c]) | (c > r)

    g_a, g_b, g_x = _with_b(cells, a_cells, a_cells)
    return Groups(g_a, g_b, g_x, a_cells, cells.block[a_cells], keep)


def _across_pairs(
    cells: Cells, max_x_across: int | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(A cell, X cell) pairs: X of A's context and phone, another speaker; at most
    ``max_x_across`` random X cells per A cell (``None``: all)."""
    cell_c, cell_s, cell_p = cells.context, cells.speaker, cells.phone
    a_cells = np.flatnonzero(cells.ncell >= 2)
    cp_order = np.lexsort((cell_s, cell_p, cell_c))
    cp_first, cp_n = segments(np.stack([cell_c, cell_p], 1)[cp_order])
    cp_of = np.empty(len(cell_c), np.int64)
    cp_of[cp_order] = np.repeat(np.arange(len(cp_first)), cp_n)
    o, loc = ragged(cp_n[cp_of[a_cells]])
    as_a = a_cells[o]
    as_x = cp_order[cp_first[cp_of[as_a]] + loc]
    other = cell_s[as_x] != cell_s[as_a]
    as_a, as_x = as_a[other], as_x[other]
    if max_x_across is not None and len(as_a):
        by_prio = np.lexsort((rng.random(len(as_a)), as_a))
        as_a, as_x = as_a[by_prio], as_x[by_prio]
        first, n = segments(as_a[:, None])
        rank = np.arange(len(as_a)) - np.repeat(first, n)
        as_a, as_x = as_a[rank < max_x_across], as_x[rank < max_x_across]
    return as_a, as_x


def across_groups(cells: Cells, max_x_across: int | None, rng: np.random.Generator) -> Groups:
    """A and B cells of one block, X cells of A's context and phone by other speakers. The
    rows of a block's rectangle are the tokens of the X cells of its A cells."""
    as_a, as_x = _across_pairs(cells, max_x_across, rng)
    by_blk = np.argsort(cells.block[as_a], kind="stable")
    g_a, g_b, g_x = _with_b(cells, as_a, as_x)
    return Groups(g_a, g_b, g_x, as_x[by_blk], cells.block[as_a][by_blk], None)


class _Lookup:
    """Distances by pair key ``row * N + col``."""

    def __init__(self, keys: np.ndarray, values: np.ndarray) -> None:
        order = np.argsort(keys, kind="stable")
        self.keys, self.values = keys[order], values[order]
        if len(self.keys) > 1 and (self.keys[1:] == self.keys[:-1]).any():
            raise AssertionError("duplicate token pair")

    def __call__(self, keys: np.ndarray) -> np.ndarray:
        if len(keys) == 0:
            return np.empty(0, dtype=self.values.dtype)
        pos = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        if (self.keys[pos] != keys).any():
            raise AssertionError("missing token pair")
        return self.values[pos]


def _distances(toks: Tokens, cells: Cells, groups: Groups, batch_size: int) -> tuple[_Lookup, int]:
    """The DTW distances of the mode's rectangles by (row, column) token pair, and how many."""
    blocks, rect_of = np.unique(groups.rect_blocks, return_inverse=True)
    o1, l1 = ragged(cells.n[groups.rect_cells])
    o2, l2 = ragged(cells.blk_tok_n[blocks])
    rows, cols, dist = toks.rect_distances(
        rect_of[o1],
        cells.tokens(groups.rect_cells[o1], l1),
        o2,
        cells.srt[cells.blk_tok_start[blocks][o2] + l2],
        groups.keep,
        batch_size,
    )
    return _Lookup(rows * len(toks) + cols, dist), len(rows)


def _triple_counts(cells: Cells, groups: Groups, within: bool) -> np.ndarray:
    """Triples per group ``(G,)``: ``n_A (n_A - 1) n_B`` within, ``n_A n_X n_B`` across."""
    na, nb, nx = cells.n[groups.a], cells.n[groups.b], cells.n[groups.x]
    return na * (na - 1) * nb if within else na * nx * nb


def _triples(
    cells: Cells, groups: Groups, part: slice, count: np.ndarray, within: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every triple of the groups ``part``: its group (within ``part``) and X, A, B tokens."""
    o, loc = ragged(count[part])
    g_a, g_b, g_x = groups.a[part][o], groups.b[part][o], groups.x[part][o]
    na_o, nb_o = cells.n[g_a], cells.n[g_b]
    if within:
        per_x = (na_o - 1) * nb_o
        xi, rem = loc // per_x, loc % per_x
        ai, bi = rem // nb_o, rem % nb_o
        ai = ai + (ai >= xi)  # X is never A itself
    else:
        xi, ai, bi = loc // (na_o * nb_o), (loc // nb_o) % na_o, loc % nb_o
    return o, cells.tokens(g_x, xi), cells.tokens(g_a, ai), cells.tokens(g_b, bi)


def _group_errors(
    cells: Cells, groups: Groups, lookup: _Lookup, n_tok: int, count: np.ndarray, within: bool
) -> np.ndarray:
    """Error ``(G,)`` of each group: ``1 - (#[d(A,X) < d(B,X)] + 0.5 #[==]) / n``."""
    err = np.empty(len(groups.a), np.float64)
    for part in chunks(count, _TRIPLE_BUDGET):
        o, x, a, b = _triples(cells, groups, part, count, within)
        if within:
            d_ax = lookup(np.minimum(x, a) * n_tok + np.maximum(x, a))
        else:
            d_ax = lookup(x * n_tok + a)
        d_bx = lookup(x * n_tok + b)
        right = (d_ax < d_bx) + 0.5 * (d_ax == d_bx)
        err[part] = 1.0 - np.bincount(o, right, minlength=len(count[part])) / count[part]
    return err


def average(
    speaker: np.ndarray, pa: np.ndarray, pb: np.ndarray, err: np.ndarray, n_phones: int
) -> tuple[float, dict[tuple[int, int], float]]:
    """Upstream averaging of group errors ``(G,)``: over contexts (and X speakers) for each
    (speaker, phone a, phone b), then over speakers for each (a, b), then over (a, b). Returns
    the score and the per-(a, b) errors (fractions; NaN and ``{}`` without groups)."""
    if len(err) == 0:
        return float("nan"), {}
    p2 = n_phones * n_phones
    key = speaker.astype(np.int64) * p2 + pa.astype(np.int64) * n_phones + pb
    uniq, inv = np.unique(key, return_inverse=True)
    per_spk = np.bincount(inv, err) / np.bincount(inv)
    pair_key = uniq % p2
    pairs, inv2 = np.unique(pair_key, return_inverse=True)
    per_pair = np.bincount(inv2, per_spk) / np.bincount(inv2)
    table = {
        (int(k // n_phones), int(k % n_phones)): float(v)
        for k, v in zip(pairs.tolist(), per_pair.tolist(), strict=True)
    }
    return float(per_pair.mean()), table


@dataclass
class ModeScore:
    """One mode's score and per-(phone a, phone b) errors (fractions) and its counts."""

    score: float
    table: dict[tuple[int, int], float]
    num_triples: int
    num_groups: int
    num_distances: int


def score_mode(
    toks: Tokens,
    cells: Cells,
    mode: str,
    n_phones: int,
    max_x_across: int | None,
    rng: np.random.Generator,
    batch_size: int,
) -> ModeScore:
    """Groups, distances, group errors and averaging of ``mode`` (``"within"``/``"across"``)."""
    within = mode == "within"
    groups = within_groups(cells) if within else across_groups(cells, max_x_across, rng)
    lookup, n_dist = _distances(toks, cells, groups, batch_size)
    count = _triple_counts(cells, groups, within)
    err = _group_errors(cells, groups, lookup, len(toks), count, within)
    sp, pa, pb = cells.speaker[groups.a], cells.phone[groups.a], cells.phone[groups.b]
    score, table = average(sp, pa, pb, err, n_phones)
    return ModeScore(score, table, int(count.sum()), len(groups.a), n_dist)
