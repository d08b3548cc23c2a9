import pytest
import torch

from cpc_lightning.model.heads import PredictionHeads


def test_one_map_per_step():
    heads = PredictionHeads(4, 6, num_steps=3)
    c = torch.randn(2, 5, 4)
    pred = heads(c)
    assert pred.shape == (3, 2, 5, 6)
    w = heads.maps[0].weight  # (3 * 6, 4): W_k is rows k*6..(k+1)*6
    for k in range(3):
        torch.testing.assert_close(pred[k], c @ w[k * 6 : (k + 1) * 6].t())


def test_sets_are_independent_and_k_validated():
    heads = PredictionHeads(4, 6, num_steps=2, num_sets=4)
    c = torch.randn(3, 4)
    assert not torch.allclose(heads(c, 0), heads(c, 3))
    with pytest.raises(ValueError, match="prediction_steps must be >= 1"):
        PredictionHeads(4, 6, num_steps=0)
