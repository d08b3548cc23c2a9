"""Every context model is causal: perturbing z[t+1:] leaves c[:t+1] unchanged."""

import pytest
import torch

from cpc_lightning.model.context.sequence import GRUContext, LSTMContext, TransformerContext

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


HIDDEN = {
    "gru3": lambda: GRUContext(12, 16, num_layers=3),
    "lstm2": lambda: LSTMContext(12, 16, num_layers=2),
    "gru1": lambda: GRUContext(12, 16),
    "transformer": lambda: TransformerContext(12, 16, num_layers=3, num_heads=4, dropout=0.0),
}


@pytest.mark.parametrize("name", sorted(HIDDEN))
def test_hidden_states_are_every_layer_and_end_with_c(name):
    torch.manual_seed(0)
    ctx = HIDDEN[name]().eval()
    z = torch.randn(2, 9, 12)
    states = ctx.hidden_states(z)
    layers = getattr(getattr(ctx, "rnn", None), "num_layers", None) or len(ctx.layers.layers)
    assert len(states) == layers and all(s.shape == (2, 9, 16) for s in states)
    torch.testing.assert_close(states[-1], ctx(z), atol=1e-6, rtol=1e-6)
    if layers > 1:  # the lower layers really are other outputs
        assert not torch.allclose(states[0], states[-1])


def test_rnn_layer_prefix_equals_a_shorter_stack():
    """Layer i of the stack = a stack of i + 1 layers with the same weights."""
    torch.manual_seed(0)
    ctx = GRUContext(12, 16, num_layers=3).eval()
    short = GRUContext(12, 16, num_layers=2).eval()
    short.rnn.load_state_dict({k: v for k, v in ctx.rnn.state_dict().items() if "_l2" not in k})
    z = torch.randn(2, 9, 12)
    torch.testing.assert_close(ctx.hidden_states(z)[1], short(z), atol=1e-6, rtol=1e-6)


def test_grid_context_hidden_states():
    from cpc_lightning.model.context.grid import MaskedConvContext

    ctx = MaskedConvContext(8, 6, num_layers=2, hidden_dim=10).eval()
    z = torch.randn(2, 5, 5, 8)
    states = ctx.hidden_states(z)
    assert [s.shape[-1] for s in states] == [10, 10, 6]
    torch.testing.assert_close(states[-1], ctx(z))


def test_gru_runs_in_float32_under_cpu_autocast():
    torch.manual_seed(0)
    gru = GRUContext(16, 8)
    z = torch.randn(2, 5, 16).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        c = gru(z)
    assert c.dtype == torch.float32
    torch.testing.assert_close(c, gru(z.float()))


# ------------------------------------------------ context.per_direction: one grid net per direction
DIRS = ["down", "up", "left", "right"]


def _ahead(direction: str, r: int, g: int) -> torch.Tensor:
    """(G, G) bool, original grid positions more than r steps along ``direction``."""
    idx = torch.arange(g)
    rows, cols = idx[:, None].expand(g, g), idx[None, :].expand(g, g)
    along = {"down": rows, "up": g - 1 - rows, "right": cols, "left": g - 1 - cols}[direction]
    return along > r


@pytest.mark.parametrize("direction", DIRS)
@pytest.mark.parametrize("r", [0, 3, 5])
def test_per_direction_context_is_causal_in_its_own_direction(direction, r):
    """In original grid coordinates: perturbing what lies more than r steps along ``direction``
    changes no context of that direction's network at r steps or fewer (and does change some)."""
    from cpc_lightning.model.context.grid import MaskedConvContext
    from cpc_lightning.model.layout import DIRECTIONS, rotate_grid

    torch.manual_seed(0)
    ctx = MaskedConvContext(6, 5, num_layers=2, per_direction=True, directions=DIRS)
    ctx = ctx.double().eval()

    def context(z):  # as the loss runs it, turned back to original coordinates
        c = ctx(rotate_grid(z, direction), direction)
        return torch.rot90(c, -DIRECTIONS[direction], dims=(1, 2))

    z = torch.randn(2, 7, 7, 6, dtype=torch.float64)
    ahead = _ahead(direction, r, 7)
    z2 = torch.where(ahead[None, :, :, None], torch.randn_like(z) * 10, z)
    c, c2 = context(z), context(z2)
    torch.testing.assert_close(c[:, ~ahead], c2[:, ~ahead])
    assert not torch.allclose(c[:, ahead], c2[:, ahead])


def test_per_direction_context_has_one_independent_net_per_direction():
    from cpc_lightning.model.context.grid import MaskedConvContext

    torch.manual_seed(0)
    shared = MaskedConvContext(6, 5, num_layers=2)
    ctx = MaskedConvContext(6, 5, num_layers=2, per_direction=True, directions=DIRS).eval()
    count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    assert count(ctx) == 4 * count(shared) and sorted(ctx.nets) == sorted(DIRS)
    z = torch.randn(2, 7, 7, 6)
    with torch.no_grad():
        down = ctx(z, "down")
        assert not torch.allclose(down, ctx(z, "up"))  # other weights
        for p in ctx.nets["up"].parameters():
            p.add_(1.0)
        torch.testing.assert_close(ctx(z, "down"), down)  # untouched by another net
        torch.testing.assert_close(ctx(z), down)  # no direction: the feature path's "down"
        torch.testing.assert_close(ctx.hidden_states(z)[-1], down)
    with pytest.raises(ValueError, match="direction 'diag'"):
        ctx(z, "diag")
    assert not shared.per_direction and not hasattr(shared, "nets")  # default keys unchanged
    assert "inp.weight" in shared.state_dict() and "nets.down.inp.weight" in ctx.state_dict()
