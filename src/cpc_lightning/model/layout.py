"""How an image's patch grid becomes the column sequences the loss sees.

For each prediction direction the grid ``(B, H, W, D)`` is rotated so that the direction points
"down", then cut into column sequences ``(B * W, H, D)`` (batch-major): one InfoNCE serves both
modalities.
"""

from __future__ import annotations

import torch

#: ``torch.rot90`` turns per direction so that "down" in the rotated grid is the direction.
DIRECTIONS: dict[str, int] = {"down": 0, "left": 1, "up": 2, "right": 3}


def check_direction(direction: str) -> None:
    """Raise a ``ValueError`` naming ``model.directions`` for an unknown direction."""
    if direction not in DIRECTIONS:
        raise ValueError(f"model.directions: {direction!r} is not one of {sorted(DIRECTIONS)}")


def rotate_grid(z: torch.Tensor, direction: str) -> torch.Tensor:
    """Rotate ``(B, H, W, D)`` so that predicting rows below means predicting ``direction``."""
    check_direction(direction)
    return torch.rot90(z, DIRECTIONS[direction], dims=(1, 2))


def grid_to_columns(g: torch.Tensor) -> torch.Tensor:
    """``(B, H, W, D)`` -> column sequences ``(B * W, H, D)``."""
    b, h, w, d = g.shape
    return g.transpose(1, 2).reshape(b * w, h, d)


def columns_to_grid(s: torch.Tensor, batch: int) -> torch.Tensor:
    """Column sequences ``(B * W, H, D)`` -> ``(B, H, W, D)`` (inverse of ``grid_to_columns``)."""
    bw, h, d = s.shape
    return s.reshape(batch, bw // batch, h, d).transpose(1, 2)
