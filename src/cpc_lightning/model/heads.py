"""Prediction heads: one linear map ``W_k`` per future step (log-bilinear score ``z^T W_k c``).

Every heads module (``heads=linear`` here, ``heads=transformer`` in
:mod:`cpc_lightning.model.transformer_heads`) maps ``c`` ``(..., in_dim)`` to predictions
``(K, ..., out_dim)`` and declares ``num_steps``, ``num_sets`` and ``score_factor``: InfoNCE
scores are ``score_factor * z^T pred_k`` (before the temperature). Heads that support a bounded
number of anchors per sequence declare it as ``max_len`` (:func:`check_anchors`, at start-up).
"""

from __future__ import annotations

import torch
from torch import nn

#: ``heads.score_scale``: ``none`` = the dot product (the paper's log-bilinear score); ``dim`` =
#: the dot product divided by the dimension D of ``z`` (CPC_audio's ``PredictionNetwork``).
SCORE_SCALES = ("none", "dim")


def score_factor(score_scale: str, dim: int) -> float:
    """The factor ``heads.score_scale`` puts on ``z^T pred`` for ``dim``-d predictions."""
    if score_scale not in SCORE_SCALES:
        raise ValueError(f"heads.score_scale={score_scale!r} must be one of {SCORE_SCALES}")
    return 1.0 / dim if score_scale == "dim" else 1.0


def check_anchors(heads: nn.Module, num_anchors: int, window: int) -> None:
    """Raise ValueError if ``heads`` supports fewer anchors per sequence (its optional
    ``max_len``; None or absent: any number) than the ``num_anchors`` that training windows of
    ``window`` samples give."""
    max_len = getattr(heads, "max_len", None)
    if max_len is not None and num_anchors > max_len:
        raise ValueError(
            f"data.window={window} samples gives {num_anchors} anchors per sequence, but the "
            f"prediction heads learned relative positions for heads.max_len={max_len}: raise "
            "heads.max_len or lower data.window"
        )


class PredictionHeads(nn.Module):
    """``num_sets`` independent sets of ``num_steps`` maps ``W_k: R^in_dim -> R^out_dim``.

    All maps of a set are one ``Linear(in_dim, num_steps * out_dim)``, so predicting every step
    is a single matmul. ``num_sets > 1`` gives one set per image direction (CPC v2).
    ``init_scale`` shrinks the default initialisation: random scores of unit size put the initial
    loss above ``log(N + 1)``, and the quickest way down is then to collapse every score to the
    same value (a constant ``z``), a saddle the model does not leave. ``output_dropout`` drops
    prediction channels in training (CPC_audio's ``--dropout``: 0.5).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_steps: int,
        num_sets: int = 1,
        bias: bool = False,
        init_scale: float = 0.1,
        score_scale: str = "none",
        output_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if num_steps < 1:
            raise ValueError(f"model.prediction_steps must be >= 1, got {num_steps}")
        self.num_steps, self.out_dim, self.num_sets = num_steps, out_dim, num_sets
        self.score_factor = score_factor(score_scale, out_dim)
        self.maps = nn.ModuleList(
            nn.Linear(in_dim, num_steps * out_dim, bias=bias) for _ in range(num_sets)
        )
        self.drop = nn.Dropout(output_dropout)
        with torch.no_grad():
            for m in self.maps:
                m.weight.mul_(init_scale)

    def forward(self, c: torch.Tensor, which: int = 0) -> torch.Tensor:
        """``c`` ``(..., in_dim)`` -> predictions ``(K, ..., out_dim)`` from set ``which``."""
        pred = self.maps[which](c).unflatten(-1, (self.num_steps, self.out_dim))
        return self.drop(pred.movedim(-2, 0))
