"""Causal context models ``g_ar`` over sequences: ``z`` ``(B, T, D)`` -> ``c`` ``(B, T, C)``.

``c[:, t]`` depends only on ``z[:, :t + 1]``. ``hidden_states(z)`` returns every layer's output
(the last one is ``c``). The grid (image) context lives in :mod:`cpc_lightning.model.context.grid`.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class _RecurrentContext(nn.Module):
    """A batch-first recurrent network over frames; ``rnn`` is set by the subclasses."""

    grid = False
    rnn_type: type[nn.RNNBase] = nn.GRU
    # Under CPU bf16 autocast, run in float32: True where that is faster (``make bench``).
    fp32_on_cpu = False

    def __init__(self, in_dim: int, out_dim: int = 256, num_layers: int = 1) -> None:
        super().__init__()
        self.rnn = self.rnn_type(in_dim, out_dim, num_layers=num_layers, batch_first=True)
        self.out_dim = out_dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` ``(B, T, D)`` -> ``c`` ``(B, T, out_dim)``."""
        self.rnn.flatten_parameters()
        if self.fp32_on_cpu and z.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                return self.rnn(z.float())[0]
        return self.rnn(z)[0]

    def layer(self, index: int) -> nn.RNNBase:
        """Layer ``index`` of the stack as a one-layer network sharing this one's parameters."""
        rnn = self.rnn
        size = rnn.input_size if index == 0 else rnn.hidden_size
        sub = self.rnn_type(size, rnn.hidden_size, 1, bias=rnn.bias, batch_first=True)
        for name in sub._flat_weights_names:
            setattr(sub, name, getattr(rnn, name.replace("_l0", f"_l{index}")))
        return sub

    def hidden_states(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's output ``(B, T, out_dim)``, bottom to top; the last is ``forward(z)``.

        Equal to the stacked network's output in eval mode (no inter-layer dropout here)."""
        if self.rnn.num_layers == 1:
            return [self.forward(z)]
        out, h = [], z
        for i in range(self.rnn.num_layers):
            h = self.layer(i)(h)[0]
            out.append(h)
        return out


class GRUContext(_RecurrentContext):
    """GRU over frames (paper audio: one layer, 256 units).

    Float32 under CPU bf16 autocast: PyTorch's CPU GRU is a loop of small matmuls, slower in bf16
    than in float32 (the LSTM has a fused oneDNN kernel and stays in bf16)."""

    rnn_type = nn.GRU
    fp32_on_cpu = True


class LSTMContext(_RecurrentContext):
    """LSTM over frames."""

    rnn_type = nn.LSTM


def sinusoidal_positions(length: int, dim: int, device: torch.device) -> torch.Tensor:
    """Sinusoidal position codes ``(length, dim)``, computed for any length."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(
        torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim)
    )
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return pe


class TransformerContext(nn.Module):
    """Causal pre-norm Transformer encoder with a triangular attention mask.

    Positions are sinusoidal codes computed on the fly, so any sequence length works.
    """

    grid = False

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 256,
        num_layers: int = 2,
        num_heads: int = 4,
        ff_mult: int = 4,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if out_dim % num_heads or out_dim % 2:
            raise ValueError(
                f"context.out_dim={out_dim} must be even and divisible by "
                f"context.num_heads={num_heads}"
            )
        self.proj = nn.Linear(in_dim, out_dim)
        layer = nn.TransformerEncoderLayer(
            out_dim,
            num_heads,
            dim_feedforward=ff_mult * out_dim,
            dropout=dropout,
            batch_first=True,
            norm_first=True,
        )
        self.layers = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(out_dim)
        self.out_dim = out_dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` ``(B, T, D)`` -> ``c`` ``(B, T, out_dim)``."""
        t = z.shape[1]
        h = self.proj(z) + sinusoidal_positions(t, self.out_dim, z.device).to(z.dtype)
        mask = nn.Transformer.generate_square_subsequent_mask(t, device=z.device, dtype=h.dtype)
        return self.norm(self.layers(h, mask=mask, is_causal=True))

    def hidden_states(self, z: torch.Tensor) -> list[torch.Tensor]:
        """The residual stream after every layer; the last is normed, i.e. ``forward(z)``."""
        t = z.shape[1]
        h = self.proj(z) + sinusoidal_positions(t, self.out_dim, z.device).to(z.dtype)
        mask = nn.Transformer.generate_square_subsequent_mask(t, device=z.device, dtype=h.dtype)
        out = []
        for layer in self.layers.layers:
            h = layer(h, src_mask=mask, is_causal=True)
            out.append(h)
        out[-1] = self.norm(out[-1])
        return out
