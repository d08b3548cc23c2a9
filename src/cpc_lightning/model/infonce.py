"""InfoNCE: scores, loss, accuracy and the mutual-information bound. Pure functions.

Score first, gather second (docs/design.md, "The loss"): predictions ``(K, M, D)`` are multiplied
once by the candidate set ``(Nc, D)``, then the positive and negative columns are gathered by
index (:func:`info_nce`), or every allowed column is kept (:func:`info_nce_all`, ``num_negatives:
all``). Scores and the log-softmax run in float32 even under autocast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class InfoNCEOutput:
    """Loss and per-step diagnostics; ``*_k`` tensors have shape ``(K,)``."""

    loss: torch.Tensor
    loss_k: torch.Tensor
    acc_k: torch.Tensor
    mi_k: torch.Tensor
    num_anchors: torch.Tensor


def candidate_logits(
    pred: torch.Tensor, candidates: torch.Tensor, index: torch.Tensor
) -> torch.Tensor:
    """The scores ``pred[k, m] . candidates[index[k, m, j]]``: ``(K, M, J)``, at least float32.

    All scores ``pred @ candidates^T`` ``(K, M, Nc)`` are computed in one GEMM, with autocast
    off, then the ``index`` columns gathered (float64 inputs stay float64). bfloat16 inputs on
    CPU (autocast's output) take :class:`_Bf16Logits`: the same float32 logits, faster.
    """
    if pred.dtype == candidates.dtype == torch.bfloat16 and pred.device.type == "cpu":
        return _Bf16Logits.apply(pred, candidates, index)
    dtype = torch.float64 if pred.dtype == torch.float64 else torch.float32
    with torch.autocast(pred.device.type, enabled=False):
        return torch.matmul(pred.to(dtype), candidates.to(dtype).t()).gather(2, index)


class _Bf16Logits(torch.autograd.Function):
    """:func:`candidate_logits` for bfloat16 operands on CPU.

    Forward: a float32 GEMM that oneDNN may run on bf16 units (``fp32_precision="bf16"``); its
    operands are exactly bf16 already, so nothing is rounded and the logits equal the plain
    float32 product (up to summation order). Backward: the scattered logit gradient is rounded to
    bf16 and both products run in bf16 with float32 accumulation, as autocast runs every other
    matmul.
    """

    @staticmethod
    def forward(ctx, pred: torch.Tensor, candidates: torch.Tensor, index: torch.Tensor | None):  # type: ignore[override]
        ctx.save_for_backward(pred, candidates, index)
        k, m, d = pred.shape
        mm = torch.backends.mkldnn.matmul
        before = mm.fp32_precision
        mm.fp32_precision = "bf16"
        try:
            with torch.autocast("cpu", enabled=False):
                scores = torch.mm(pred.reshape(k * m, d).float(), candidates.float().t())
        finally:
            mm.fp32_precision = before
        scores = scores.view(k, m, -1)
        return scores if index is None else scores.gather(2, index)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        pred, candidates, index = ctx.saved_tensors
        k, m, d = pred.shape
        if index is None:  # every score kept (``all_candidate_logits``)
            g = grad.reshape(k * m, -1).to(pred.dtype)
        else:  # scattered in float32 (bf16 ``scatter_add_`` copies the buffer to float32 and back)
            g = grad.new_zeros(k, m, candidates.shape[0]).scatter_add_(2, index, grad)
            g = g.view(k * m, -1).to(pred.dtype)
        grad_pred = torch.mm(g, candidates).view(k, m, d) if ctx.needs_input_grad[0] else None
        grad_cand = torch.mm(g.t(), pred.reshape(k * m, d)) if ctx.needs_input_grad[1] else None
        return grad_pred, grad_cand, None


def info_nce(
    pred: torch.Tensor,
    candidates: torch.Tensor,
    pos_idx: torch.Tensor,
    neg_idx: torch.Tensor,
    weight: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> InfoNCEOutput:
    """InfoNCE with the positive at index 0.

    Args:
        pred: ``(K, M, D)`` predictions ``W_k c_t`` for M anchors and K steps.
        candidates: ``(Nc, D)`` encoder outputs every index refers to.
        pos_idx: ``(K, M)`` index of each anchor's positive in ``candidates``.
        neg_idx: ``(K, M, N)`` or ``(1, M, N)`` (shared across steps) negative indices.
        weight: ``(K, M)`` 1 for anchors that count (0 for padding), or None for all.
        temperature: scores are divided by it.

    An anchor is correct when its positive scores strictly higher than every negative other than
    the positive itself (a tie is not a success, so a collapsed model scores 0, not 1).
    """
    k, m, _ = pred.shape
    n = neg_idx.shape[-1]
    index = torch.cat([pos_idx.unsqueeze(-1), neg_idx.expand(k, m, n)], dim=2)
    logits = candidate_logits(pred, candidates, index)  # column 0 is the positive
    if temperature != 1.0:
        logits = logits / temperature
    per_anchor = torch.logsumexp(logits, dim=2) - logits[..., 0]
    with torch.no_grad():  # correct: the positive beats every negative that is not itself
        rivals = logits[..., 1:].masked_fill(index[..., 1:] == index[..., :1], float("-inf"))
        correct = (logits[..., 0] > rivals.amax(dim=2)).float()
    w = torch.ones(k, m, device=pred.device) if weight is None else weight.float()
    count = w.sum(1)
    denom = count.clamp(min=1.0)
    loss_k = (per_anchor * w).sum(1) / denom
    acc_k = (correct * w).sum(1) / denom
    mi_k = math.log(n + 1) - loss_k.detach()
    return InfoNCEOutput(loss_k.mean(), loss_k, acc_k, mi_k, count)


def all_candidate_logits(pred: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Every score ``pred[k, m] . candidates[j]``: ``(K, M, Nc)``, at least float32.

    The GEMM of :func:`candidate_logits` without the gather (same dtype rules, same bf16 path).
    """
    if pred.dtype == candidates.dtype == torch.bfloat16 and pred.device.type == "cpu":
        return _Bf16Logits.apply(pred, candidates, None)
    dtype = torch.float64 if pred.dtype == torch.float64 else torch.float32
    with torch.autocast(pred.device.type, enabled=False):
        return torch.matmul(pred.to(dtype), candidates.to(dtype).t())


def info_nce_all(
    pred: torch.Tensor,
    candidates: torch.Tensor,
    pos_idx: torch.Tensor,
    allowed: torch.Tensor,
    weight: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> InfoNCEOutput:
    """InfoNCE against every allowed candidate (CPC v2, lightning-bolts): cross-entropy over the
    positive and all allowed columns of the one score matrix, with no sampling and no gather.

    Args:
        pred: ``(K, M, D)`` predictions; candidates: ``(Nc, D)``; pos_idx: ``(K, M)``.
        allowed: ``(M, Nc)`` (or broadcastable to ``(K, M, Nc)``) bool, the candidates that are
            negatives of anchor m; the positive's own column counts once, as the positive.
        weight: ``(K, M)`` 1 for anchors that count, or None for all; temperature: divides scores.

    N differs per anchor (``N = allowed columns other than the positive``), so ``mi_k`` is the
    weighted mean of ``log(N + 1)`` minus ``loss_k``.
    """
    k, m, _ = pred.shape
    logits = all_candidate_logits(pred, candidates)
    if temperature != 1.0:
        logits = logits / temperature
    pos_col = pos_idx.unsqueeze(-1)
    pos = logits.gather(2, pos_col).squeeze(-1)  # (K, M)
    if bool(allowed.all()):  # every column (e.g. images, mode batch): nothing to mask
        kept, n1 = logits, torch.full((k, m), logits.shape[-1], device=logits.device)
    else:
        keep = allowed.expand(k, m, logits.shape[-1]).scatter(2, pos_col, True)  # + the positive
        kept, n1 = logits.masked_fill(~keep, float("-inf")), keep.sum(2)
    per_anchor = torch.logsumexp(kept, dim=2) - pos
    with torch.no_grad():  # correct: the positive is the only kept column scoring >= itself
        correct = ((kept >= pos.unsqueeze(-1)).sum(2) == 1).float()
        log_n1 = n1.double().log()  # log(N + 1) per anchor
    w = torch.ones(k, m, device=pred.device) if weight is None else weight.float()
    count = w.sum(1)
    denom = count.clamp(min=1.0)
    loss_k = (per_anchor * w).sum(1) / denom
    acc_k = (correct * w).sum(1) / denom
    mi_k = (log_n1 * w).sum(1).to(loss_k.dtype) / denom - loss_k.detach()
    return InfoNCEOutput(loss_k.mean(), loss_k, acc_k, mi_k, count)
