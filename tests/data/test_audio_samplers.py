"""Audio batch samplers: coverage, one speaker per batch, P x Q speaker groups, DDP shards."""

from __future__ import annotations

import pytest

from cpc_lightning.data.audio.manifest import AudioDataWarning
from cpc_lightning.data.audio.samplers import (
    SameSpeakerBatchSampler,
    SpeakerGroupsBatchSampler,
    UniformBatchSampler,
)

SPEAKERS = [s for s in range(5) for _ in range(8)]  # 5 speakers x 8 items


def test_uniform_sampler_covers_everything():
    s = UniformBatchSampler(len(SPEAKERS), 6, seed=1)
    batches = list(s)
    assert len(batches) == len(s) == 7
    assert sorted(i for b in batches for i in b) == list(range(40))
    s.set_epoch(1)
    assert list(s) != batches


def test_same_speaker_batches_hold_one_speaker():
    s = SameSpeakerBatchSampler(SPEAKERS, 3, seed=0)
    batches = list(s)
    assert len(batches) == len(s) == 5 * 3
    assert all(len({SPEAKERS[i] for i in b}) == 1 for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(40))


def test_speaker_groups_are_p_by_q():
    s = SpeakerGroupsBatchSampler(SPEAKERS, 3, 2, seed=0)
    batches = list(s)
    assert len(batches) == len(s) == 40 // 6
    for b in batches:
        spk = [SPEAKERS[i] for i in b]
        assert len(b) == 6 and len(set(b)) == 6
        assert len(set(spk)) == 3 and all(spk.count(x) == 2 for x in set(spk))
    with pytest.warns(AudioDataWarning, match="fewer than"):
        few = SpeakerGroupsBatchSampler([0, 0, 0, 1, 1, 1, 2], 2, 3, seed=0)
    assert all(len(b) == 6 for b in few)
    with pytest.raises(ValueError, match="speakers_per_batch=6"):
        SpeakerGroupsBatchSampler(SPEAKERS, 6, 2)


@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: UniformBatchSampler(len(SPEAKERS), 4, **kw),
        lambda **kw: SameSpeakerBatchSampler(SPEAKERS, 4, **kw),
        lambda **kw: SpeakerGroupsBatchSampler(SPEAKERS, 2, 2, **kw),
    ],
    ids=["uniform", "same_speaker", "speaker_groups"],
)
def test_ddp_shards_are_disjoint_and_equal(make):
    for epoch in (0, 3):
        shards = []
        for rank in (0, 1):
            s = make(seed=7, rank=rank, world_size=2)
            s.set_epoch(epoch)
            shards.append(list(s))
            assert len(shards[-1]) == len(s)
        assert len(shards[0]) == len(shards[1]) > 0
        i0 = {i for b in shards[0] for i in b}
        i1 = {i for b in shards[1] for i in b}
        if not isinstance(make(seed=0, rank=0, world_size=2), SpeakerGroupsBatchSampler):
            assert i0.isdisjoint(i1) and i0 | i1 == set(range(40))
        else:  # batches are disjoint draws of one global sequence
            assert [sorted(b) for b in shards[0]] != [sorted(b) for b in shards[1]]


def test_uneven_shards_still_have_equal_batch_counts():
    lens = [len(list(UniformBatchSampler(13, 4, rank=r, world_size=3))) for r in range(3)]
    assert len(set(lens)) == 1
    lens = [
        len(list(SameSpeakerBatchSampler([0] * 5 + [1] * 2, 2, rank=r, world_size=3)))
        for r in range(3)
    ]
    assert len(set(lens)) == 1
