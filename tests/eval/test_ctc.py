"""Phone recognition: greedy CTC decoding, the phone error rate, and a head that learns."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cpc_lightning.eval.ctc import (
    CTCHead,
    CTCSettings,
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
