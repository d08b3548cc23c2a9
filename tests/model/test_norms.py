"""Encoder norms (``encoder.norm``): CPC_audio's ChannelNorm, instance and batch norm, and the
padded-batch path that gives every sequence its own frames."""

import pytest
import torch
from helpers.training import adam_losses
from torch import nn

from cpc_lightning.model.context.sequence import GRUContext
from cpc_lightning.model.encoders.audio import Conv1dEncoder
from cpc_lightning.model.encoders.norms import AUDIO_NORMS, ChannelNorm, make_norm
from cpc_lightning.model.heads import PredictionHeads
from cpc_lightning.model.module import CPCModule
from cpc_lightning.model.negatives import NegativeSampler


def test_channel_norm_is_per_frame_with_unbiased_variance_and_differs_from_layer_norm():
    torch.manual_seed(0)
    x = torch.randn(2, 7, 5) * 3 + 1  # (B, T, C)
    norm = ChannelNorm(5)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 1.5, 5))
        norm.bias.copy_(torch.linspace(-1, 1, 5))
    mean, var = x.mean(-1, keepdim=True), x.var(-1, keepdim=True)  # unbiased: / (C - 1)
    want = (x - mean) / torch.sqrt(var + 1e-5) * norm.weight + norm.bias
    torch.testing.assert_close(norm(x), want, rtol=0, atol=1e-6)
    plain = ChannelNorm(5)
    gap = (plain(x) - nn.LayerNorm(5, elementwise_affine=False)(x)).abs().max()
    assert gap > 0.05  # sqrt((C - 1) / C) apart: not a LayerNorm
    assert torch.allclose(plain(x[:, :3]), plain(x)[:, :3])  # no statistics across frames


def test_instance_norm_is_over_time_and_batch_norm_uses_running_statistics_in_eval():
    torch.manual_seed(0)
    x = torch.randn(3, 11, 4)
    inst = make_norm("instance", 4)
    want = nn.InstanceNorm1d(4, affine=True)(x.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(inst(x), want)
    bn = make_norm("batch", 4)
    assert set(bn.state_dict()) == set(nn.BatchNorm1d(4).state_dict())
    bn.train()(x * 2 + 3)
    bn.eval()
    expect = (x - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(bn(x), expect * bn.weight + bn.bias)


@pytest.mark.parametrize("standardize", [True, False])
@pytest.mark.parametrize("norm", AUDIO_NORMS)
def test_padded_batch_gives_every_sequence_its_own_frames(norm, standardize):
    torch.manual_seed(1)
    enc = Conv1dEncoder(hidden_dim=12, out_dim=10, norm=norm, standardize=standardize).eval()
    lengths = [3200, 1999, 480, 2561]
    wavs = [0.1 * torch.randn(n) for n in lengths]
    x = nn.utils.rnn.pad_sequence(wavs, batch_first=True)[:, None]
    with torch.no_grad():
        z = enc(x, lengths=torch.tensor(lengths))
        for i, w in enumerate(wavs):
            alone = enc(w[None, None])
            t = enc.num_frames(lengths[i])
            assert alone.shape[1] == t
            torch.testing.assert_close(z[i, :t], alone[0], rtol=0, atol=1e-5)
            assert (z[i, t:] == 0).all()


@pytest.mark.parametrize("norm", ["channel", "instance"])
def test_new_norms_train(norm):
    torch.manual_seed(0)
    m = CPCModule(
        Conv1dEncoder(hidden_dim=16, out_dim=16, norm=norm, standardize=False),
        GRUContext(16, 8),
        PredictionHeads(8, 16, 2),
        NegativeSampler("batch", 16),
        prediction_steps=2,
    )
    first, last = adam_losses(m)
    assert last < first - 0.3  # from chance, log(17) = 2.83
