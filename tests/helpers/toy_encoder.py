"""A toy audio encoder added from outside the package, as docs/design.md says to add one."""

from __future__ import annotations

import torch
from torch import nn


class ToyEncoder(nn.Module):
    """One strided Conv1d: 160 samples -> one frame of ``out_dim`` channels, then a ReLU."""

    modality = "audio"
    downsampling = 160

    def __init__(self, out_dim: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, out_dim, kernel_size=160, stride=160)
        self.out_dim = out_dim
        self.receptive_field = 160

    def num_frames(self, num_samples: int) -> int:
        return num_samples // 160

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, L)`` -> ``(B, L // 160, out_dim)``."""
        return torch.relu(self.conv(x)).transpose(1, 2)
