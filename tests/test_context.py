"""Every context model is causal: perturbing z[t+1:] leaves c[:t+1] unchanged."""

import pytest
import torch

from cpc_lightning.context import GRUContext, LSTMContext, TransformerContext

CONTEXTS = {
    "gru": lambda: GRUContext(12, 16),
    "lstm": lambda: LSTMContext(12, 16, num_layers=2),
    "transformer": lambda: TransformerContext(12, 16, num_layers=2, num_heads=4, dropout=0.0),
}


@pytest.mark.parametrize("name", sorted(CONTEXTS))
@pytest.mark.parametrize("t", [0, 7, 18])
def test_causal(name, t):
    torch.manual_seed(0)
    ctx = CONTEXTS[name]().eval()
    z = torch.randn(3, 20, 12)
    c = ctx(z)
    z2 = z.clone()
    z2[:, t + 1 :] = torch.randn_like(z2[:, t + 1 :]) * 10
    c2 = ctx(z2)
    assert c.shape == (3, 20, 16) and ctx.out_dim == 16
    torch.testing.assert_close(c[:, : t + 1], c2[:, : t + 1], atol=1e-5, rtol=1e-5)
    if t + 1 < 20:  # and the future does change what it should
        assert not torch.allclose(c[:, t + 1 :], c2[:, t + 1 :])


def test_transformer_any_length():
    ctx = TransformerContext(12, 16, num_layers=1, num_heads=2, dropout=0.0).eval()
    for t in (1, 5, 700):
        assert ctx(torch.randn(2, t, 12)).shape == (2, t, 16)


def test_transformer_rejects_bad_heads():
    with pytest.raises(ValueError, match="context.num_heads=3"):
        TransformerContext(8, 16, num_heads=3)
