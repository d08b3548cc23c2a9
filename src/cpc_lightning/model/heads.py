"""Prediction heads: one linear map ``W_k`` per future step (log-bilinear score ``z^T W_k c``)."""

from __future__ import annotations

import torch
from torch import nn


class PredictionHeads(nn.Module):
    """``num_sets`` independent sets of ``num_steps`` maps ``W_k: R^in_dim -> R^out_dim``.

    All maps of a set are one ``Linear(in_dim, num_steps * out_dim)``, so predicting every step
    is a single matmul. ``num_sets > 1`` gives one set per image direction (CPC v2).
    ``init_scale`` shrinks the default initialisation: random scores of unit size put the initial
    loss above ``log(N + 1)``, and the quickest way down is then to collapse every score to the
    same value (a constant ``z``), a saddle the model does not leave.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_steps: int,
        num_sets: int = 1,
        bias: bool = False,
        init_scale: float = 0.1,
    ) -> None:
        super().__init__()
        if num_steps < 1:
            raise ValueError(f"model.prediction_steps must be >= 1, got {num_steps}")
        self.num_steps, self.out_dim, self.num_sets = num_steps, out_dim, num_sets
        self.maps = nn.ModuleList(
            nn.Linear(in_dim, num_steps * out_dim, bias=bias) for _ in range(num_sets)
        )
        with torch.no_grad():
            for m in self.maps:
                m.weight.mul_(init_scale)

    def forward(self, c: torch.Tensor, which: int = 0) -> torch.Tensor:
        """``c`` ``(..., in_dim)`` -> predictions ``(K, ..., out_dim)`` from set ``which``."""
        pred = self.maps[which](c).unflatten(-1, (self.num_steps, self.out_dim))
        return pred.movedim(-2, 0)
