"""ABX phone discrimination (the Libri-light / ZeroSpeech 2021 metric), vectorised in torch.

This is an independent implementation of the semantics of Libri-light's ``eval/eval_ABX.py``,
``eval/ABX_src/abx_iterators.py``, ``eval/ABX_src/abx_group_computation.py`` and
``eval/ABX_src/dtw.pyx`` (the ``zerospeech/libri-light-abx`` package carries the same code);
item generation follows abkhazia's ``abkhazia2abx.alignment2item``. What is matched:

Item file
    First line a header (``#file onset offset #phone prev-phone next-phone speaker``), then one
    token a line: ``<file id> <onset s> <offset s> <phone> <prev> <next> <speaker>``,
    whitespace separated, exactly seven fields. The context of a token is the pair
    ``(prev, next)``. Upstream drops line 0 whatever it holds; :func:`read_items` drops it only
    when it starts with ``#`` (files written by :func:`write_items` always have the header).

Seconds to frames (``mapping="libri-light"``, the default)
    With ``r`` the frame rate in Hz (upstream ``1 / --feature_size``) and ``T`` the number of
    feature frames of the file, a token uses frames ``[start, end)`` with
    ``start = max(0, ceil(r * onset - 0.5))`` and ``end = min(T, floor(r * offset - 0.5))``
    (float64 arithmetic). Tokens with ``start >= T`` or ``end <= start`` are skipped, as are
    tokens of files without features. Note the exclusive end: a token ``[i0 / r, i1 / r]`` reads
    frames ``[i0, i1 - 1)``, one frame short, so one-frame tokens vanish; this is upstream's
    behaviour on its own item files too. ``mapping="round"`` (not upstream) reads
    ``[round(r * onset), round(r * offset))``, i.e. exactly ``[i0, i1)`` for such tokens.

Frame distance
    Angular distance ``arccos(clamp(cos, -1, 1)) / pi`` between frames; features are L2
    normalised per frame first (upstream always normalises). Upstream's singularity trick puts
    an all-zero frame at distance 1 from every non-zero frame and at distance 0 from another
    all-zero frame; that is reproduced exactly.

DTW
    ``C[i, j] = d[i, j] + min(C[i-1, j], C[i-1, j-1], C[i, j-1])`` (moves: down, diagonal,
    right; ``C[0, 0] = d[0, 0]``; first row and column are cumulative sums), in float32 like
    upstream. The result is ``C[N-1, M-1] / L`` with ``L`` the number of cells on the path
    back-tracked from ``(N-1, M-1)``: at each cell the diagonal predecessor if its cost is
    ``<=`` both others, else the left one ``(i, j-1)`` if ``<=`` the upper one, else the upper
    one ``(i-1, j)``; once on the first row or column, straight to ``(0, 0)``. Here the
    recursion runs over anti-diagonals and the back-tracking for all paths at once, batched
    over pairs. Rows are the X token. Upstream's within mode computes each (A, X) pair of one
    cell once, rows being the token that comes first in its loading order; here that is the
    lower token index (item-file order). Either choice only matters for the path-length
    tie-break.

Triples and groups
    Tokens fall in cells (context, speaker, phone). A mode evaluates groups of cells:

    * within: cells A = (c, s, a) and B = (c, s, b), ``b != a``, in a (c, s) block with at least
      two phones; A needs at least two tokens; X runs over A's tokens and A over A's other
      tokens (X is never A itself): ``n_A (n_A - 1) n_B`` triples.
    * across: A and B as above (A may hold one token; B by A's speaker, as upstream), X runs
      over a cell (c, s', a) of another speaker ``s' != s``; ``n_A n_X n_B`` triples per X cell.

    The group score is the error ``1 - (#[d(A,X) < d(B,X)] + 0.5 #[d(A,X) == d(B,X)]) / n``:
    ties count half. ``max_size_group`` caps tokens per cell and ``max_x_across`` the X cells per
    A cell (upstream ``--max_size_group``, default 10, and ``--max_x_across``, default 5; here
    both default to ``None`` = use all, which is deterministic). Upstream re-samples a cell at
    every use; here each cell (and each A cell's X cells) is sampled once per call, seeded.

Averaging
    Group errors are averaged (1) for each (speaker of A, phone a, phone b) over contexts (within)
    or over (context, speaker of X) (across), then (2) for each ordered phone pair (a, b) over the
    speakers having it, then (3) over the ordered phone pairs present. Reported in percent.

Item generation follows ``alignment2item``: a token's context is its neighbouring tokens in the
utterance; a token is dropped when its phone or a context phone is ignored. Upstream gives edge
tokens the context ``SIL``; here edge tokens are dropped unless ``edge_context`` names a label.

Layout: :mod:`.items` (item sets, item files, item generation, seconds to frames),
:mod:`.dtw` (angular distance, batched DTW), :mod:`.tokens` (token frames, batched pair
distances), :mod:`.groups` (cells, groups, triples, scoring, averaging), :mod:`.core`
(:func:`abx`, :class:`ABXResult`) and :mod:`.reference` (a per-triple loop implementation of
the same metric, the yardstick of the tests and the benchmark).
"""

from cpc_lightning.eval.abx.core import MODES as MODES  # not in __all__, as before
from cpc_lightning.eval.abx.core import ABXResult, abx
from cpc_lightning.eval.abx.dtw import angular_distance, dtw
from cpc_lightning.eval.abx.items import (
    ITEM_HEADER,
    ItemSet,
    item_frames,
    items_from_frame_labels,
    items_from_segments,
    limit_items,
    read_items,
    write_items,
)

__all__ = [
    "ITEM_HEADER",
    "ABXResult",
    "ItemSet",
    "abx",
    "angular_distance",
    "dtw",
    "item_frames",
    "items_from_frame_labels",
    "items_from_segments",
    "limit_items",
    "read_items",
    "write_items",
]
