"""``heads=transformer``: CPC_audio's prediction network (one causal transformer per step with
learned relative positions), and the explicit score scale."""

import math

import pytest
import torch
from helpers.training import adam_losses

from cpc_lightning.model.context.sequence import GRUContext
from cpc_lightning.model.encoders.audio import Conv1dEncoder
from cpc_lightning.model.heads import PredictionHeads
from cpc_lightning.model.module import CPCModule
from cpc_lightning.model.negatives import NegativeSampler
from cpc_lightning.model.transformer_heads import TransformerHeads


def heads(**kw):
    args = dict(in_dim=16, out_dim=16, num_steps=3, max_len=12, ff_dim=32, num_heads=4)
    return TransformerHeads(**{**args, **kw}).eval()


@pytest.mark.parametrize("relative", [True, False])
def test_predictions_are_causal_and_shaped(relative):
    torch.manual_seed(0)
    h = heads(relative_positions=relative)
    c = torch.randn(2, 10, 16)
    pred = h(c)
    assert pred.shape == (3, 2, 10, 16)
    t = 4
    changed = c.clone()
    changed[:, t + 1 :] += torch.randn_like(changed[:, t + 1 :])
    after = h(changed)
    torch.testing.assert_close(after[:, :, : t + 1], pred[:, :, : t + 1])
    assert not torch.allclose(after[:, :, t + 1 :], pred[:, :, t + 1 :])


def test_relative_positions_score_each_distance_with_its_own_vector():
    """Attention logits of query t and key s <= t: (q_t.k_s + q_t.p_{L-1-(t-s)}) / sqrt(d)."""
    torch.manual_seed(0)
    att = heads(num_heads=2).sets[0][0].attention
    x = torch.randn(1, 5, 16)
    q = (x @ att.wq.weight.t()).view(1, 5, 2, 8).transpose(1, 2)[0, 0]  # head 0
    k = (x @ att.wk.weight.t()).view(1, 5, 2, 8).transpose(1, 2)[0, 0]
    logits = torch.full((5, 5), float("-inf"))
    for t in range(5):
        for s in range(t + 1):
            logits[t, s] = (q[t] @ k[s] + q[t] @ att.rel[:, 11 - (t - s)]) / math.sqrt(8)
    v = (x @ att.wv.weight.t()).view(1, 5, 2, 8).transpose(1, 2)[0, 0]
    head0 = logits.softmax(-1) @ v
    captured = {}
    att.wo.register_forward_hook(lambda mod, inp, out: captured.setdefault("in", inp[0]))
    att(x)
    torch.testing.assert_close(captured["in"][0, :, :8], head0, rtol=0, atol=1e-5)


def test_longer_sequences_than_max_len_and_width_mismatch_are_refused():
    with pytest.raises(ValueError, match="heads.max_len=12"):
        heads()(torch.randn(1, 13, 16))
    with pytest.raises(ValueError, match="context.out_dim=8 must equal encoder.out_dim=16"):
        TransformerHeads(8, 16, 2)
    with pytest.raises(ValueError, match="heads.score_scale='half'"):
        TransformerHeads(16, 16, 2, score_scale="half")


def module(h, n=16):
    return CPCModule(
        Conv1dEncoder(hidden_dim=16, out_dim=16),
        GRUContext(16, 16),
        h,
        NegativeSampler("batch", n),
        prediction_steps=h.num_steps,
    )


def test_score_scale_dim_divides_the_scores_by_the_dimension():
    torch.manual_seed(0)
    lin = PredictionHeads(16, 16, 2, score_scale="dim")
    m = module(lin)
    assert m.score_temperature == 16.0 and lin.score_factor == 1 / 16
    x = torch.randn(2, 1, 3200)
    torch.manual_seed(1)  # the same negatives for both
    scaled = m.compute_loss({"x": x}).loss
    plain = module(PredictionHeads(16, 16, 2))
    plain.load_state_dict(m.state_dict())
    plain.score_temperature = 16.0  # what score_scale=dim means: z^T pred / D
    torch.manual_seed(1)
    torch.testing.assert_close(plain.compute_loss({"x": x}).loss, scaled)


def test_transformer_heads_train():
    torch.manual_seed(0)
    m = module(TransformerHeads(16, 16, 2, max_len=18, ff_dim=64, num_heads=4, dropout=0.0))
    first, last = adam_losses(m)
    assert last < first - 0.3  # from chance, log(17) = 2.83
    assert all(p.grad is not None for p in m.heads.parameters())


def test_a_window_with_more_anchors_than_max_len_stops_at_start_up():
    from types import SimpleNamespace

    from cpc_lightning.build import check_data_fits_model
    from cpc_lightning.errors import UserError

    m = module(TransformerHeads(16, 16, 2, max_len=10, ff_dim=32, num_heads=4))
    data = SimpleNamespace(modality="audio", window=3200, provides_speakers=False)
    with pytest.raises(UserError, match=r"data.window=3200 samples gives 18 anchors .*max_len=10"):
        check_data_fits_model(m, data)
    check_data_fits_model(m, SimpleNamespace(**{**vars(data), "window": 1920}))  # 10 anchors
