"""Every negative-sampling mode draws exactly from its support (CPC.md table), and covers it."""

import pytest
import torch

from cpc_lightning.model.negatives import MODES, NegativeSampler

C, T = 6, 10
SPEAKER = torch.tensor([0, 0, 1, 1, 1, 0])


def setup_valid():
    valid = torch.ones(C, T, dtype=torch.bool)
    valid[1, 7:] = False  # padding at the end of sequence 1
    valid[4, 3:] = False
    return valid


def support(mode, a, valid):
    """Set of flat indices allowed for an anchor in sequence ``a`` (slow, obvious)."""
    out = set()
    for s in range(C):
        for t in range(T):
            if not valid[s, t]:
                continue
            same_seq, same_spk = s == a, SPEAKER[s] == SPEAKER[a]
            ok = {
                "batch": True,
                "global": True,
                "batch_excl": not same_seq,
                "same_sequence": same_seq,
                "same_speaker": bool(same_spk),
                "same_speaker_excl": bool(same_spk) and not same_seq,
            }[mode]
            if ok:
                out.add(s * T + t)
    return out


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("shared", [True, False])
def test_support_exact_and_covered(mode, shared):
    torch.manual_seed(0)
    valid = setup_valid()
    sampler = NegativeSampler(mode, num_negatives=512, share_across_steps=shared)
    anchors = torch.arange(C)
    ta, k = 4, 3
    idx = sampler.sample(valid, SPEAKER, anchors, ta, k)
    assert idx.shape == (1 if shared else k, C * ta, 512)
    drawn = idx.reshape(idx.shape[0], C, ta * 512).transpose(0, 1).reshape(C, -1)
    for a in range(C):
        allowed = support(mode, a, valid)
        got = set(drawn[a].tolist())
        assert got <= allowed, f"{mode}: drew outside the support for sequence {a}"
        assert got == allowed, f"{mode}: support not covered for sequence {a}"


def test_uniform_over_support():
    torch.manual_seed(1)
    valid = setup_valid()
    idx = NegativeSampler("batch", num_negatives=4000).sample(valid, None, torch.tensor([0]), 5, 1)
    counts = torch.bincount(idx.flatten(), minlength=C * T)[valid.flatten()]
    expected = idx.numel() / int(valid.sum())
    assert (counts.float() / expected - 1).abs().max() < 0.15


def test_speaker_modes_need_speakers():
    sampler = NegativeSampler("same_speaker", 4)
    with pytest.raises(ValueError, match="needs a speaker id"):
        sampler.sample(torch.ones(2, 5, dtype=torch.bool), None, torch.arange(2), 2, 1)


def test_excl_with_a_lonely_speaker_is_a_clear_error():
    sampler = NegativeSampler("same_speaker_excl", 4)
    with pytest.raises(ValueError, match="speaker_groups"):
        sampler.sample(
            torch.ones(3, 5, dtype=torch.bool), torch.tensor([0, 0, 1]), torch.arange(3), 2, 1
        )


def test_bad_values_named():
    with pytest.raises(ValueError, match="negatives.mode='nope'"):
        NegativeSampler("nope")
    with pytest.raises(ValueError, match="num_negatives must be >= 1"):
        NegativeSampler("batch", 0)
