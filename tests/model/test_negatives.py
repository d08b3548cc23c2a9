"""Every negative-sampling mode draws exactly from its support (CPC.md table), and covers it."""

from types import SimpleNamespace

import pytest
import torch

from cpc_lightning.model.negatives import MODES, NegativeSampler, check_num_negatives

C, T = 6, 10
SPEAKER = torch.tensor([0, 0, 1, 1, 1, 0])


def setup_valid():
    valid = torch.ones(C, T, dtype=torch.bool)
    valid[1, 7:] = False  # padding at the end of sequence 1
    valid[4, 3:] = False
    return valid


#: The paper's Table 2 in MODES' terms: mode -> (group, own sequence excluded).
PAPER_MODES = {
    "batch": ("batch", False),
    "global": ("batch", False),
    "batch_excl": ("batch", True),
    "same_sequence": ("sequence", False),
    "same_speaker": ("speaker", False),
    "same_speaker_excl": ("speaker", True),
}


def support(mode, a, valid):
    """Set of flat indices allowed for an anchor in sequence ``a`` (slow, obvious), by the
    mode's rule in MODES (so a mode added there is checked too)."""
    group, exclude_own = MODES[mode]
    out = set()
    for s in range(C):
        for t in range(T):
            if not valid[s, t]:
                continue
            same_seq, same_spk = s == a, bool(SPEAKER[s] == SPEAKER[a])
            in_group = {"batch": True, "sequence": same_seq, "speaker": same_spk}[group]
            if in_group and not (exclude_own and same_seq):
                out.add(s * T + t)
    return out


def test_the_modes_are_the_papers_table():
    assert {m: MODES[m] for m in PAPER_MODES} == PAPER_MODES


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
    with pytest.raises(ValueError, match="speaker_groups with data.windows_per_speaker >= 2"):
        sampler.sample(
            torch.ones(3, 5, dtype=torch.bool), torch.tensor([0, 0, 1]), torch.arange(3), 2, 1
        )


def data(**kw):
    """A DataModule as the start-up check reads it (speakers, batch size, sampler)."""
    return SimpleNamespace(**{"provides_speakers": True, "batch_size": 4, **kw})


@pytest.mark.parametrize("mode", sorted(MODES))
def test_check_refuses_data_whose_batches_cannot_hold_the_negatives(mode):
    sampler = NegativeSampler(mode, 4)
    group, exclude_own = MODES[mode]
    grouped = data(sampler_name="speaker_groups", windows_per_speaker=2)
    sampler.check(grouped)  # speakers, two sequences of each in every batch: every mode works
    no_speakers = data(provides_speakers=False)
    if group == "speaker":
        with pytest.raises(ValueError, match=f"negatives={mode} needs speaker ids"):
            sampler.check(no_speakers)
    else:
        sampler.check(no_speakers)
    one = data(sampler_name="speaker_groups", windows_per_speaker=1)
    if group == "speaker" and exclude_own:
        with pytest.raises(ValueError, match="data.sampler=speaker_groups with data.windows_per"):
            sampler.check(one)
        with pytest.raises(ValueError, match="but data.sampler=uniform does not put"):
            sampler.check(data(sampler_name="uniform"))
    else:
        sampler.check(one)
    if group == "batch" and exclude_own:
        with pytest.raises(ValueError, match="data.batch_size=1: use data.batch_size >= 2"):
            sampler.check(data(batch_size=1))
    elif group != "speaker":
        sampler.check(data(batch_size=1))


def test_bad_values_named():
    with pytest.raises(ValueError, match="negatives.mode='nope'"):
        NegativeSampler("nope")
    with pytest.raises(ValueError, match="num_negatives must be >= 1"):
        NegativeSampler("batch", 0)
    for bad in (0, -1, 2.5, "8", True):
        with pytest.raises(ValueError, match=rf"negatives.num_negatives={bad!r} must be an int"):
            check_num_negatives(bad)
    check_num_negatives(8)
    check_num_negatives("all")


@pytest.mark.parametrize("mode", sorted(MODES))
def test_num_negatives_all_masks_exactly_the_support(mode):
    """``num_negatives: all``: every valid frame of the mode's support, nothing drawn."""
    valid = setup_valid()
    sampler = NegativeSampler(mode, num_negatives="all")
    anchors = torch.tensor([0, 2, 5])
    mask = sampler.candidate_mask(valid, SPEAKER, anchors)
    assert mask.shape == (3, C * T)
    for row, a in zip(mask, anchors.tolist(), strict=True):
        assert set(row.nonzero().flatten().tolist()) == support(mode, a, valid)
    with pytest.raises(ValueError, match="candidate_mask"):
        sampler.sample(valid, SPEAKER, anchors, 2, 1)
