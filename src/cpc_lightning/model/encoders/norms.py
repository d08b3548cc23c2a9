"""Normalisations of channels-last frame sequences ``(B, T, C)`` for the audio encoder.

``encoder.norm`` chooses one (:func:`make_norm`):

- ``layer``: ``nn.LayerNorm`` over the channels of each frame (biased variance, eps inside).
- ``channel``: CPC_audio's ``ChannelNorm`` (its ``layerNorm`` mode): per frame over the channels,
  *unbiased* variance, ``(x - mean) / sqrt(var + eps)`` with eps 1e-5, then an affine map.
- ``batch``: ``BatchNorm1d`` over (batch, time) per channel, with running statistics.
- ``instance``: ``InstanceNorm1d(affine=True)`` over time per sequence and channel (CPC_audio's
  ``instanceNorm``); its statistics span the whole sequence, so it is not causal in time.
- ``none``: identity.
"""

from __future__ import annotations

import torch
from torch import nn

#: ``encoder.norm`` values of the audio encoder.
AUDIO_NORMS = ("none", "layer", "channel", "batch", "instance")


class ChannelNorm(nn.Module):
    """Per-frame standardisation over channels with the unbiased variance, then ``w x + b``.

    ``x`` ``(B, T, C)`` -> ``(B, T, C)``. Differs from ``nn.LayerNorm`` by the variance's
    ``C / (C - 1)`` factor; equal to CPC_audio's ``ChannelNorm`` on ``(B, C, T)`` tensors.
    """

    def __init__(self, channels: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(channels)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # statistics in float32; the output keeps the input's dtype (the bf16 encoder path)
        h = x.float()
        var, mean = torch.var_mean(h, dim=-1, keepdim=True, correction=1)
        h = (h - mean) * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            h = h * self.weight + self.bias
        return h.to(x.dtype)


class ChannelsLastBatchNorm(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` (same parameters, buffers and state-dict keys) on ``(B, T, C)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class ChannelsLastInstanceNorm(nn.InstanceNorm1d):
    """``nn.InstanceNorm1d(affine=True)`` (statistics over time per sequence) on ``(B, T, C)``."""

    #: Statistics over time: a padded batch is not equal to its sequences one by one.
    spans_time = True

    def __init__(self, channels: int) -> None:
        super().__init__(channels, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


def make_norm(kind: str, channels: int) -> nn.Module:
    """The ``encoder.norm=kind`` module for ``channels`` channels of a ``(B, T, C)`` tensor."""
    if kind == "none":
        return nn.Identity()
    if kind == "layer":
        return nn.LayerNorm(channels)  # per frame: no statistics shared across samples
    if kind == "channel":
        return ChannelNorm(channels)
    if kind == "batch":
        return ChannelsLastBatchNorm(channels)
    if kind == "instance":
        return ChannelsLastInstanceNorm(channels)
    raise ValueError(f"encoder.norm={kind!r} is not one of {AUDIO_NORMS}")
