"""Spatial pooling of an image feature grid ``(B, H, W, D)`` into one vector per image.

``mean``   the global mean over the grid: ``(B, D)``;
``grid2``  the mean over each cell of a 2 x 2 partition of the grid: ``(B, 4 D)``;
``grid4``  the same on a 4 x 4 partition: ``(B, 16 D)``;
``none``   the whole grid flattened: ``(B, H W D)``.

Cells are ``adaptive_avg_pool2d``'s (on a 7 x 7 grid, ``grid2`` cells are rows/columns 0-3 and
3-6). The vector is cell-major: cell ``(i, j)``'s ``D`` values, cells in row-major order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

GRID_POOLS = {"mean": 1, "grid2": 2, "grid4": 4, "none": 0}


def pool_grid(grid: torch.Tensor, how: str) -> torch.Tensor:
    """``(B, H, W, D)`` -> ``(B, D')`` pooled as ``how`` (one of :data:`GRID_POOLS`)."""
    if how not in GRID_POOLS:
        raise ValueError(f"pool={how!r} is not one of {', '.join(GRID_POOLS)} for image grids")
    if grid.dim() != 4:
        raise ValueError(f"expected a (B, H, W, D) grid, got shape {tuple(grid.shape)}")
    cells = GRID_POOLS[how]
    if cells == 0:
        return grid.flatten(1)
    if cells == 1:
        return grid.mean((1, 2))
    if cells > min(grid.shape[1], grid.shape[2]):
        raise ValueError(
            f"pool={how} needs a grid of at least {cells} x {cells}, got "
            f"{grid.shape[1]} x {grid.shape[2]}"
        )
    pooled = F.adaptive_avg_pool2d(grid.permute(0, 3, 1, 2), cells)  # (B, D, cells, cells)
    return pooled.permute(0, 2, 3, 1).flatten(1)
