"""``heads=transformer``: CPC_audio's default prediction network, one transformer per step.

Each step ``k`` has its own single-layer, post-norm transformer over the anchor sequence
``c[:, :Ta]``: causal multi-head self-attention (no biases), then a ReLU feed-forward block, each
added to its input and layer-normalised. Attention logits get a learned relative-position term:
a vector ``p_d`` (shared by the heads) per distance ``d = t - s >= 0`` between query ``t`` and
key ``s``, scored against the query, ``(q_t . k_s + q_t . p_d) / sqrt(d_head)``. The vectors
are the columns of a ``(d_head, max_len)`` matrix, distance ``d`` in column ``max_len - 1 - d``
(CPC_audio's ``Krelpos`` layout, whose length is the anchor count of its training window), so
sequences up to ``max_len`` anchors work. ``relative_positions=false`` adds sinusoidal absolute
positions to the input instead (CPC_audio's ``--abspos``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cpc_lightning.model.context.sequence import sinusoidal_positions
from cpc_lightning.model.heads import score_factor


class RelativeCausalAttention(nn.Module):
    """Causal multi-head self-attention ``(N, S, D) -> (N, S, D)`` with learned relative
    positions (``rel``, ``(D / num_heads, max_len)``) or none (``max_len=None``)."""

    def __init__(self, dim: int, num_heads: int, max_len: int | None, dropout: float) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(dim, dim, bias=False) for _ in range(4))
        self.dropout = dropout
        self.rel = None
        if max_len is not None:
            bound = 1.0 / math.sqrt(self.head_dim)
            self.rel = nn.Parameter(torch.empty(self.head_dim, max_len).uniform_(-bound, bound))

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        n, s, _ = x.shape
        return x.view(n, s, self.num_heads, self.head_dim).transpose(1, 2)  # (N, H, S, dh)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, s, d = x.shape
        q, k, v = self._split(self.wq(x)), self._split(self.wk(x)), self._split(self.wv(x))
        logits = q @ k.transpose(-1, -2)  # (N, H, S, S)
        t = torch.arange(s, device=x.device)
        if self.rel is not None:
            max_len = self.rel.shape[1]
            if s > max_len:
                raise ValueError(
                    f"heads=transformer: {s} anchors per sequence but heads.max_len={max_len} "
                    "relative positions: raise heads.max_len or shorten data.window"
                )
            column = (max_len - 1 - (t[:, None] - t[None, :])).clamp(max=max_len - 1)
            logits = logits + (q @ self.rel).gather(-1, column.expand(n, self.num_heads, s, s))
        future = t[None, :] > t[:, None]
        logits = (logits / math.sqrt(self.head_dim)).masked_fill(future, float("-inf"))
        attn = F.dropout(logits.softmax(-1), self.dropout, self.training)
        return self.wo((attn @ v).transpose(1, 2).reshape(n, s, d))


class PredictionTransformer(nn.Module):
    """One step's predictor: ``y = LN(x + attn(x))``, ``out = LN(y + ff(y))``, ``(N, S, D)``."""

    def __init__(
        self, dim: int, num_heads: int, ff_dim: int, max_len: int | None, dropout: float
    ) -> None:
        super().__init__()
        self.attention = RelativeCausalAttention(dim, num_heads, max_len, dropout)
        self.norm_attention = nn.LayerNorm(dim)
        self.ff_in, self.ff_out = nn.Linear(dim, ff_dim), nn.Linear(ff_dim, dim)
        self.norm_ff = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm_attention(x + self.attention(x))
        return self.norm_ff(y + self.ff_out(self.drop(F.relu(self.ff_in(y)))))


class TransformerHeads(nn.Module):
    """``num_sets`` sets of ``num_steps`` :class:`PredictionTransformer` over anchor sequences.

    ``forward(c (..., S, in_dim), which)`` -> ``(K, ..., S, out_dim)``; ``c[..., t, :]``'s
    prediction depends on ``c[..., :t + 1, :]`` only. CPC_audio's defaults: 8 heads, a 2048-wide
    feed-forward block, dropout 0.1, scores divided by the dimension (``score_scale=dim``).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_steps: int,
        num_sets: int = 1,
        max_len: int = 128,
        relative_positions: bool = True,
        num_heads: int = 8,
        ff_dim: int = 2048,
        dropout: float = 0.1,
        output_dropout: float = 0.0,
        score_scale: str = "dim",
    ) -> None:
        super().__init__()
        if num_steps < 1:
            raise ValueError(f"model.prediction_steps must be >= 1, got {num_steps}")
        if in_dim != out_dim:
            raise ValueError(
                f"heads=transformer predicts in the width of c: context.out_dim={in_dim} must "
                f"equal encoder.out_dim={out_dim} (or use heads=linear)"
            )
        if out_dim % num_heads:
            raise ValueError(f"heads.num_heads={num_heads} must divide encoder.out_dim={out_dim}")
        self.num_steps, self.num_sets, self.out_dim = num_steps, num_sets, out_dim
        self.max_len = max_len if relative_positions else None
        self.score_factor = score_factor(score_scale, out_dim)
        self.sets = nn.ModuleList(
            nn.ModuleList(
                PredictionTransformer(out_dim, num_heads, ff_dim, self.max_len, dropout)
                for _ in range(num_steps)
            )
            for _ in range(num_sets)
        )
        self.drop = nn.Dropout(output_dropout)

    def forward(self, c: torch.Tensor, which: int = 0) -> torch.Tensor:
        """``c`` ``(..., S, in_dim)`` -> predictions ``(K, ..., S, out_dim)`` from set ``which``."""
        if c.dim() < 2:
            raise ValueError("heads=transformer predicts from sequences (..., S, D) of c")
        x = c.reshape(-1, *c.shape[-2:])
        if self.max_len is None:
            x = x + sinusoidal_positions(x.shape[1], x.shape[2], x.device).to(x.dtype)
        pred = torch.stack([step(x) for step in self.sets[which]])
        return self.drop(pred.reshape(self.num_steps, *c.shape[:-1], self.out_dim))
