"""Phone recognition: greedy CTC decoding, the phone error rate, and a head that learns."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cpc_lightning.eval.ctc import (
    CTCHead,
    CTCSettings,
    dev_split,
    greedy_decode,
    phone_error_rate,
    phone_recognition,
    phone_sequence,
)


def test_greedy_decode_merges_repeats_and_drops_blanks():
    blank = 3
    path = [0, 0, 3, 1, 1, 3, 1, 2, 3, 3]
    log_probs = torch.full((len(path), 4), -10.0)
    log_probs[torch.arange(len(path)), torch.tensor(path)] = 0.0
    assert greedy_decode(log_probs, len(path), blank) == [0, 1, 1, 2]
    assert greedy_decode(log_probs, 3, blank) == [0]  # only the first `length` frames


def test_phone_error_rate_is_edits_over_reference_length():
    # one substitution + one deletion over 4 + 2 reference phones
    assert phone_error_rate([[1, 2, 9, 4], [5]], [[1, 2, 3, 4], [5, 6]]) == pytest.approx(
        100 * 2 / 6
    )
    assert phone_error_rate([[1, 2]], [[1, 2]]) == 0.0


def test_phone_sequence_from_frames_merges_repeats_and_skips_unknown():
    rec = SimpleNamespace(phone_seq=None, phones=np.array([-100, 2, 2, 5, -100, 5, 1]))
    assert phone_sequence(rec) == [2, 5, 1]  # an unknown frame between two 5s does not split
    assert phone_sequence(SimpleNamespace(phone_seq=[4, 4], phones=None)) == [4, 4]


def _utterances(n: int, num_phones: int, seed: int, informative: bool):
    """Each phone lasts 4 frames, never twice in a row (a linear head cannot split two equal
    neighbours); informative frames are a noisy one-hot of the phone."""
    g = torch.Generator().manual_seed(seed)
    feats, seqs = [], []
    for _ in range(n):
        seq = [int(torch.randint(0, num_phones, (), generator=g))]
        while len(seq) < 6:
            seq.append(
                (seq[-1] + 1 + int(torch.randint(0, num_phones - 1, (), generator=g))) % num_phones
            )
        frames = torch.tensor(seq).repeat_interleave(4)
        x = torch.nn.functional.one_hot(frames, num_phones).float() * 3.0
        x = x + 0.3 * torch.randn(x.shape, generator=g)
        feats.append(x if informative else torch.randn(x.shape, generator=g))
        seqs.append(seq)
    return feats, seqs


@pytest.mark.parametrize("informative", [True, False])
def test_a_linear_head_learns_phones_from_informative_features(informative):
    train = _utterances(32, 5, 0, informative)
    test = _utterances(20, 5, 1, informative)
    s = CTCSettings(epochs=1, min_steps=400, lr=0.05, batch_size=8, seeds=[0, 1])
    out = phone_recognition(train, test, 5, s)
    if informative:
        assert out["per"] < 10.0
    else:
        assert out["per"] > 50.0
    assert len(out["pers"]) == 2 and out["num_test_phones"] == 120


def test_bilstm_head_is_not_linear():
    head = CTCHead(8, 4, "bilstm", hidden=6)
    assert head(torch.randn(2, 5, 8)).shape == (2, 5, 5)
    assert not CTCSettings(head="bilstm").linear
    with pytest.raises(ValueError, match="phone_recognition.head='gru'"):
        CTCHead(8, 4, "gru")


def test_dev_split_holds_out_whole_speakers_the_same_way_each_time():
    speakers = ["a", "a", "b", "c", "c", "c", "d"]
    fit, dev = dev_split(speakers, 2, seed=0)
    assert sorted(fit + dev) == list(range(len(speakers)))
    assert len({speakers[i] for i in dev}) == 2
    assert not {speakers[i] for i in dev} & {speakers[i] for i in fit}
    assert dev_split(speakers, 2, seed=0) == (fit, dev)
    with pytest.raises(ValueError, match="only 4 speakers"):
        dev_split(speakers, 4, seed=0)


def test_weight_decay_is_chosen_on_held_out_training_speakers():
    feats, seqs = _utterances(32, 5, 0, True)
    test = _utterances(20, 5, 1, True)
    speakers = [f"s{i % 4}" for i in range(32)]
    s = CTCSettings(epochs=1, min_steps=300, lr=0.05, batch_size=8, weight_decay=[0.0, 50.0])
    out = phone_recognition((feats, seqs), test, 5, s, speakers)
    # a penalty of 50 keeps the head near zero: it cannot win on the dev speakers
    assert out["weight_decay"] == 0.0 and out["dev_pers"]["0.0"] < out["dev_pers"]["50.0"]
    assert out["per"] < 10.0
    with pytest.raises(ValueError, match="speaker"):
        phone_recognition((feats, seqs), test, 5, s)
    fixed = phone_recognition(
        (feats, seqs), test, 5, CTCSettings(epochs=1, min_steps=300, lr=0.05, batch_size=8)
    )
    assert fixed["dev_pers"] is None and fixed["weight_decay"] == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weight_decay": -0.1}, "weight_decay=-0.1"),
        ({"weight_decay": []}, "weight_decay=\\[\\]"),
        ({"weight_decay": [0.0, 0.1], "dev_speakers": 0}, "dev_speakers=0"),
    ],
)
def test_ctc_settings_reject_bad_weight_decays(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CTCSettings(**kwargs)
