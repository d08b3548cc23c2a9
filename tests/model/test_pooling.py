"""Spatial pooling of image feature grids (model/pooling.py)."""

from __future__ import annotations

import pytest
import torch

from cpc_lightning.model.pooling import GRID_POOLS, pool_grid


def test_each_mode_has_its_size_and_cells() -> None:
    grid = torch.randn(3, 7, 7, 5)
    assert torch.equal(pool_grid(grid, "mean"), grid.mean((1, 2)))
    assert torch.equal(pool_grid(grid, "none"), grid.reshape(3, -1))
    assert pool_grid(grid, "grid2").shape == (3, 4 * 5)
    assert pool_grid(grid, "grid4").shape == (3, 16 * 5)


def test_grid2_cells_are_the_quadrant_means_in_row_major_order() -> None:
    grid = torch.randn(2, 4, 4, 3)
    got = pool_grid(grid, "grid2").reshape(2, 4, 3)
    quads = [grid[:, :2, :2], grid[:, :2, 2:], grid[:, 2:, :2], grid[:, 2:, 2:]]
    for i, q in enumerate(quads):
        torch.testing.assert_close(got[:, i], q.mean((1, 2)))


@pytest.mark.parametrize("how", ["max", "meanstd"])
def test_unknown_mode_is_named(how: str) -> None:
    with pytest.raises(ValueError, match=f"pool={how!r} is not one of"):
        pool_grid(torch.zeros(1, 7, 7, 2), how)
    assert how not in GRID_POOLS


def test_grid_too_small_for_the_cells_is_refused() -> None:
    with pytest.raises(ValueError, match="needs a grid of at least 4 x 4"):
        pool_grid(torch.zeros(1, 3, 3, 2), "grid4")
