"""Grid context model (images): a PixelCNN-style stack of row-causal convolutions.

z (B, H, W, D) -> c (B, H, W, out_dim), where c[:, i, j] depends only on z rows <= i (any
column within reach). Each masked convolution is a k x k kernel whose rows below the centre are
masked out; it is stored cropped, as a (k//2 + 1) x k kernel padded on top only, which computes
exactly the masked convolution without multiplying by zeros. The current row stays visible
(c[i] summarises z rows <= i; the CPC heads predict rows below it).

Reach: ``num_layers * (kernel_size // 2)`` rows up and columns to each side.

``per_direction=True`` (CPC v2): one such network per prediction direction, each run on the grid
rotated so that its direction points down; ``forward(z, direction)`` picks it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn


class RowCausalConv2d(nn.Module):
    """k x k conv on (B, C, H, W) whose output row i sees input rows i - k//2 .. i only."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        self.half = kernel_size // 2
        self.conv = nn.Conv2d(in_channels, out_channels, (self.half + 1, kernel_size))

    def forward(self, x: Tensor) -> Tensor:
        # pad (left, right, top, bottom): nothing below, so no row below i reaches output row i
        return self.conv(F.pad(x, (self.half, self.half, self.half, 0)))


class _ChannelLayerNorm(nn.Module):
    """LayerNorm over channels at each grid position of (B, C, H, W); mixes no positions."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)


class _ResidualBlock(nn.Module):
    """h + 1x1(ReLU(masked kxk(ReLU(norm(h)))))."""

    def __init__(self, channels: int, kernel_size: int, norm: bool):
        super().__init__()
        self.norm = _ChannelLayerNorm(channels) if norm else nn.Identity()
        self.conv = RowCausalConv2d(channels, channels, kernel_size)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, h: Tensor) -> Tensor:
        y = self.conv(F.relu(self.norm(h)))
        return h + self.out(F.relu(y))


class MaskedConvContext(nn.Module):
    """PixelCNN-style grid context: z (B, H, W, in_dim) -> c (B, H, W, out_dim), rows causal.

    1x1 input projection to ``hidden_dim`` (default ``out_dim``), ``num_layers`` residual
    blocks each with one row-causal ``kernel_size`` x ``kernel_size`` convolution (optionally
    preceded by a per-position channel LayerNorm), then a 1x1 output projection.

    ``per_direction=True``: no network of its own but one per name in ``directions`` (``nets``,
    each a shared-mode ``MaskedConvContext``); ``direction=None`` picks ``down`` (the feature
    path's orientation), else the first direction.
    """

    grid = True

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_layers: int = 5,
        kernel_size: int = 3,
        hidden_dim: int | None = None,
        norm: bool = True,
        per_direction: bool = False,
        directions: Sequence[str] = ("down",),
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        hidden = int(hidden_dim or out_dim)
        self.in_dim = int(in_dim)
        self.out_dim = int(out_dim)
        self.num_layers = int(num_layers)
        self.kernel_size = int(kernel_size)
        self.per_direction = bool(per_direction)
        self.directions = list(directions) if self.per_direction else []
        if self.per_direction:
            if not self.directions or len(set(self.directions)) != len(self.directions):
                raise ValueError(f"context.directions={self.directions} must be distinct names")
            args = (in_dim, out_dim, num_layers, kernel_size, hidden_dim, norm)
            self.nets = nn.ModuleDict({d: MaskedConvContext(*args) for d in self.directions})
            return
        self.inp = nn.Conv2d(self.in_dim, hidden, 1)
        self.blocks = nn.Sequential(
            *(_ResidualBlock(hidden, self.kernel_size, norm) for _ in range(self.num_layers))
        )
        self.out = nn.Sequential(nn.ReLU(), nn.Conv2d(hidden, self.out_dim, 1))

    @property
    def reach(self) -> int:
        """Rows up (and columns to each side) that one output position sees."""
        return self.num_layers * (self.kernel_size // 2)

    def net(self, direction: str | None = None) -> MaskedConvContext:
        """The network of ``direction`` (itself when shared by all directions)."""
        if not self.per_direction:
            return self
        if direction is None:
            direction = "down" if "down" in self.nets else self.directions[0]
        if direction not in self.nets:
            raise ValueError(f"no context network for direction {direction!r}: {self.directions}")
        return self.nets[direction]

    def _input(self, z: Tensor) -> Tensor:
        if z.dim() != 4 or z.shape[-1] != self.in_dim:
            raise ValueError(f"expected z of shape (B, H, W, {self.in_dim}), got {tuple(z.shape)}")
        return self.inp(z.permute(0, 3, 1, 2))

    def forward(self, z: Tensor, direction: str | None = None) -> Tensor:
        """(B, H, W, in_dim) -> (B, H, W, out_dim); c[:, i] depends on z[:, :i+1] only."""
        if self.per_direction:
            return self.net(direction)(z)
        return self.out(self.blocks(self._input(z))).permute(0, 2, 3, 1)

    def hidden_states(self, z: Tensor, direction: str | None = None) -> list[Tensor]:
        """Each residual block's output (B, H, W, hidden), then c (B, H, W, out_dim)."""
        if self.per_direction:
            return self.net(direction).hidden_states(z)
        h = self._input(z)
        out = []
        for block in self.blocks:
            h = block(h)
            out.append(h.permute(0, 2, 3, 1))
        out.append(self.out(h).permute(0, 2, 3, 1))
        return out
