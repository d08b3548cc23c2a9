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


def candidate_scores(pred: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """All scores ``pred @ candidates^T``: ``(K, M, D) x (Nc, D) -> (K, M, Nc)``.

    At least float32 (float64 inputs stay float64), with autocast off.
    """
    dtype = torch.float64 if pred.dtype == torch.float64 else torch.float32
    with torch.autocast(pred.device.type, enabled=False):
        return torch.matmul(pred.to(dtype), candidates.to(dtype).t())


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
    scores = candidate_scores(pred, candidates)
    index = torch.cat([pos_idx.unsqueeze(-1), neg_idx.expand(k, m, n)], dim=2)
    logits = scores.gather(2, index)  # one gather: column 0 is the positive
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
