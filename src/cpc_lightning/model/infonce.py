"""InfoNCE: scores, loss, accuracy and the mutual-information bound. Pure functions.

Score first, gather second (docs/design.md, "The loss"): predictions ``(K, M, D)`` are multiplied
once by the candidate set ``(Nc, D)``, then the positive and negative columns are gathered by
index. Scores and the log-softmax run in float32 even under autocast.
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
    def forward(ctx, pred: torch.Tensor, candidates: torch.Tensor, index: torch.Tensor):  # type: ignore[override]
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
        return scores.view(k, m, -1).gather(2, index)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        pred, candidates, index = ctx.saved_tensors
        k, m, d = pred.shape
        # scattered in float32 (bf16 ``scatter_add_`` copies the whole buffer to float32 and back)
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
