"""Angular frame distance and batched DTW with upstream's back-tracked path length."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

# DTW on CPU: at most this many cells per anti-diagonal (Ta + 1) x B, so that a diagonal and
# its two predecessors stay in cache.
_DIAG_BUDGET = 1 << 16


def unit_frames(x: Tensor) -> tuple[Tensor, Tensor]:
    """Frames divided by their L2 norm ``(..., T, D)`` and the all-zero mask ``(..., T)``."""
    norm2 = (x * x).sum(-1, keepdim=True)
    zero = norm2.squeeze(-1) == 0
    unit = torch.where(norm2 == 0, torch.zeros_like(x), x / torch.sqrt(norm2))
    return unit, zero


def angular_unit(
    ua: Tensor, za: Tensor, ub: Tensor, zb: Tensor, out: Tensor | None = None
) -> Tensor:
    """Angular distance of unit frames ``(..., Ta, D)``, ``(..., Tb, D)`` -> ``(..., Ta, Tb)``."""
    cos = torch.matmul(ua, ub.transpose(-1, -2), out=out)
    if bool(za.any()) or bool(zb.any()):
        za, zb = za.unsqueeze(-1), zb.unsqueeze(-2)
        cos.copy_(torch.where(za & zb, 1.0, torch.where(za ^ zb, -1.0, cos)))
    return cos.clamp_(-1.0, 1.0).acos_().div_(math.pi)


def angular_distance(a: Tensor, b: Tensor) -> Tensor:
    """Frame-wise ``arccos(cos_sim) / pi`` in ``[0, 1]``: ``(..., Ta, D), (..., Tb, D)`` ->
    ``(..., Ta, Tb)``. An all-zero frame is at 1 from any non-zero frame and 0 from another."""
    ua, za = unit_frames(a)
    ub, zb = unit_frames(b)
    return angular_unit(ua, za, ub, zb)


def _dtw_forward(flat: Tensor, base: Tensor, stride: int, ta: int, tb: int) -> Tensor:
    """Accumulated costs ``hist`` ``(Ta + Tb - 1, Ta + 1, B)``: ``hist[k, 1 + i] = C[i, k - i]``.

    Row 0 of every diagonal is a sentinel for row -1 (cost +inf), and so are the cells left of
    the matrix (``j < 0``). One anti-diagonal at a time: two ``minimum`` and an ``add`` over
    ``(Ta, B)``.
    """
    bsz = base.numel()
    n_diag = ta + tb - 1
    dev = flat.device
    inf = float("inf")
    # grid[i, j, b] = cost (i, j) of pair b. The cells (i, k - i) of anti-diagonal k are then
    # the strided view grid.flat[(k + i (tb - 1)) B + b]; for j = k - i < 0 it reads a cell of
    # row i - 1 instead, and that result is overwritten by +inf.
    cell = torch.arange(ta, device=dev)[:, None] * stride + torch.arange(tb, device=dev)[None, :]
    grid = flat.take(cell[:, :, None] + base[None, None, :])  # (Ta, Tb, B)
    hist = flat.new_empty((n_diag, ta + 1, bsz))
    hist[:, 0] = inf
    none = flat.new_full((ta, bsz), inf)  # diagonal -1
    tmp = flat.new_empty((ta, bsz))
    for k in range(n_diag):
        diag_k = grid.as_strided((ta, bsz), ((tb - 1) * bsz, 1), k * bsz)
        if k == 0:
            hist[0, 1:] = diag_k
        else:
            prev1 = hist[k - 1]
            torch.minimum(prev1[1:], prev1[:-1], out=tmp)  # (i, j - 1) and (i - 1, j)
            torch.minimum(tmp, hist[k - 2, :-1] if k > 1 else none, out=tmp)  # (i - 1, j - 1)
            torch.add(tmp, diag_k, out=hist[k, 1:])
        hist[k, k + 2 :] = inf  # rows i > k: left of the matrix (j < 0)
    return hist


def _dtw_backtrack(hist: Tensor, len_a: Tensor, len_b: Tensor) -> tuple[Tensor, Tensor]:
    """Cost ``(B,)`` at ``(len_a - 1, len_b - 1)`` of :func:`_dtw_forward`'s ``hist`` and the
    number of cells ``(B,)`` on the back-tracked path (all paths at once, one move a step)."""
    _, rows, bsz = hist.shape
    flat = hist.view(-1)
    cols = torch.arange(bsz, device=hist.device)

    def at(i: Tensor, j: Tensor) -> Tensor:
        """C[i, j] of every pair (``i >= -1``, ``i + j >= 0``)."""
        return flat.index_select(0, ((i + j) * rows + i + 1) * bsz + cols)

    i, j = len_a - 1, len_b - 1
    total = at(i, j)
    length = torch.ones_like(i)
    active = (i > 0) & (j > 0)
    while bool(active.any()):
        i1, j1 = (i - 1).clamp(min=0), (j - 1).clamp(min=0)
        up, left, diag = at(i1, j), at(i, j1), at(i1, j1)
        take_diag = (diag <= left) & (diag <= up)
        take_left = ~take_diag & (left <= up)
        i = i - (active & ~take_left).long()
        j = j - (active & (take_diag | take_left)).long()
        length += active.long()
        active = (i > 0) & (j > 0)
    return total, (length + i + j).to(total.dtype)


def dtw_flat(
    flat: Tensor, base: Tensor, stride: int, ta: int, tb: int, len_a: Tensor, len_b: Tensor
) -> tuple[Tensor, Tensor]:
    """Accumulated cost ``(B,)`` and path length ``(B,)`` at ``(len_a - 1, len_b - 1)``.

    Cell ``(i, j)`` of pair ``b`` is ``flat[base[b] + i * stride + j]`` for ``i < len_a[b]``,
    ``j < len_b[b]``; all of ``i < ta``, ``j < tb`` is read (padding never reaches a valid
    cell, but must be in bounds). Forward: one anti-diagonal ``(i, k - i)`` at a time, keeping
    every diagonal. Backward: all paths are back-tracked at once, one move a step, with
    upstream's preferences, to count cells.
    """
    hist = _dtw_forward(flat, base, stride, ta, tb)
    return _dtw_backtrack(hist, len_a, len_b)


def dtw(cost: Tensor, len_a: Tensor, len_b: Tensor) -> Tensor:
    """Path-length-normalised DTW cost of padded cost matrices.

    ``cost`` ``(B, Ta, Tb)``, valid in ``[:len_a[b], :len_b[b]]`` (padding is ignored);
    ``len_a``, ``len_b`` ``(B,)`` in ``[1, Ta]``, ``[1, Tb]``. Returns ``(B,)`` float32: the
    accumulated cost over moves (1, 0), (0, 1), (1, 1) divided by the number of cells on the
    back-tracked optimal path (ties: diagonal, then ``(i, j - 1)``, then ``(i - 1, j)``), all
    in float32 like upstream. Batched over anti-diagonals and pairs.
    """
    if cost.dim() != 3:
        raise ValueError(f"cost must be (B, Ta, Tb), got {tuple(cost.shape)}")
    bsz, ta, tb = cost.shape
    dev = cost.device
    len_a = torch.as_tensor(len_a, device=dev).long()
    len_b = torch.as_tensor(len_b, device=dev).long()
    if bsz == 0:
        return cost.new_zeros(0, dtype=torch.float32)
    if bool((len_a < 1).any() | (len_a > ta).any() | (len_b < 1).any() | (len_b > tb).any()):
        raise ValueError("lengths must lie in [1, Ta] and [1, Tb]")
    flat = torch.cat([cost.to(torch.float32).reshape(-1), cost.new_zeros(ta + tb)])
    base = torch.arange(bsz, device=dev) * (ta * tb)
    total, length = dtw_flat(flat, base, tb, ta, tb, len_a, len_b)
    return total / length


def _next_batch(
    by_len: np.ndarray,
    s: int,
    la: np.ndarray,
    lb: np.ndarray,
    batch_size: int,
    budget: int,
    on_cpu: bool,
) -> tuple[np.ndarray, int, int]:
    """The pairs ``by_len[s:s + n]`` of the next batch and their longest lengths ``ta, tb``.

    ``n = batch_size``, halved for long tokens until all diagonals ``(Ta + Tb - 1, Ta, n)`` fit
    in ``budget`` and, on CPU, one diagonal ``(Ta + 1, n)`` in ``_DIAG_BUDGET``.
    """
    n = batch_size
    while True:
        sel = by_len[s : s + n]
        ta, tb = int(la[sel].max()), int(lb[sel].max())
        fits = not on_cpu or len(sel) * (ta + 1) <= _DIAG_BUDGET
        if n == 1 or (fits and len(sel) * (ta + tb - 1) * ta <= budget):
            return sel, ta, tb
        n = max(1, n // 2)


def batched_dtw(
    flat: Tensor,
    stride: int,
    la: np.ndarray,
    lb: np.ndarray,
    base: np.ndarray,
    batch_size: int,
    budget: int,
) -> np.ndarray:
    """Normalised DTW ``(P,)`` float32 of pairs whose cell ``(i, j)`` is
    ``flat[base + i * stride + j]``, in batches of similar lengths."""
    dev = flat.device
    dist = np.empty(len(la), np.float32)
    by_len = np.lexsort((base, lb, la))  # similar lengths; nearby cells (cache) among equals
    s = 0
    while s < len(by_len):
        sel, ta, tb = _next_batch(by_len, s, la, lb, batch_size, budget, dev.type == "cpu")
        s += len(sel)
        la_t = torch.as_tensor(la[sel], device=dev)
        lb_t = torch.as_tensor(lb[sel], device=dev)
        base_t = torch.as_tensor(base[sel], device=dev)
        total, length = dtw_flat(flat, base_t, stride, ta, tb, la_t, lb_t)
        dist[sel] = (total / length).cpu().numpy()
    return dist
