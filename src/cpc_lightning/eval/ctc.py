"""Phone recognition on frozen features (SUPERB's "PR" task): a CTC head, greedy decoding, and the
phone error rate (edit distance over the reference phone count, torchaudio's).

The head is linear by default (a per-frame softmax over phones + blank, as SUPERB); ``bilstm``
(two bidirectional LSTM layers, then linear) is reported as NOT linear. Features are standardised
with the training statistics; targets are each utterance's phone sequence (``phone_seq``, or its
frame labels with repeats merged). Given several L2 weight decays, each source gets the one with the
lowest PER on a few held-out TRAINING speakers (the test speakers are never scored to choose),
then its heads are trained on the whole training split with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torchaudio.functional as AF
from torch import nn

from cpc_lightning.eval.head_trainer import train_head
from cpc_lightning.eval.settings import CTCSettings

HEADS = ("linear", "bilstm")


def phone_sequence(record: Any) -> list[int] | None:
    """The utterance's phone ids: ``phone_seq``, else its frame labels with repeats merged."""
    if getattr(record, "phone_seq", None):
        return list(record.phone_seq)
    frames = getattr(record, "phones", None)
    if frames is None:
        return None
    out: list[int] = []
    for p in np.asarray(frames).tolist():
        if p >= 0 and (not out or out[-1] != p):
            out.append(int(p))
    return out or None


class CTCHead(nn.Module):
    """Frames ``(B, T, D)`` -> log-probabilities ``(B, T, num_phones + 1)``; blank is last."""

    def __init__(self, dim: int, num_phones: int, head: str = "linear", hidden: int = 256) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"phone_recognition.head={head!r} is not one of {HEADS}")
        self.rnn = (
            nn.LSTM(dim, hidden, num_layers=2, batch_first=True, bidirectional=True)
            if head == "bilstm"
            else None
        )
        self.out = nn.Linear(2 * hidden if self.rnn is not None else dim, num_phones + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rnn is not None:
            x = self.rnn(x)[0]
        return self.out(x).log_softmax(-1)


def greedy_decode(log_probs: torch.Tensor, length: int, blank: int) -> list[int]:
    """Best path of ``(T, C)`` log-probabilities: argmax, merge repeats, drop blanks."""
    best = log_probs[:length].argmax(-1).tolist()
    out, prev = [], None
    for p in best:
        if p != prev and p != blank:
            out.append(p)
        prev = p
    return out


def utterance_edits(hyps: Sequence[Sequence[int]], refs: Sequence[Sequence[int]]) -> list[int]:
    """Edit distance of each hypothesis to its reference."""
    return [AF.edit_distance(list(r), list(h)) for h, r in zip(hyps, refs, strict=True)]


def error_rate(edits: Sequence[float], refs: Sequence[Sequence[int]]) -> float:
    """Total edits over the total reference length, in %."""
    return 100.0 * sum(edits) / max(1, sum(len(r) for r in refs))


def phone_error_rate(hyps: Sequence[Sequence[int]], refs: Sequence[Sequence[int]]) -> float:
    """Total edit distance over the total reference length, in %."""
    return error_rate(utterance_edits(hyps, refs), refs)


def _batch(feats: Sequence[torch.Tensor], seqs: Sequence[Sequence[int]], idx: Sequence[int]):
    x = nn.utils.rnn.pad_sequence([feats[i] for i in idx], batch_first=True)
    lengths = torch.tensor([len(feats[i]) for i in idx])
    targets = torch.cat([torch.tensor(seqs[i], dtype=torch.long) for i in idx])
    target_lengths = torch.tensor([len(seqs[i]) for i in idx])
    return x, lengths, targets, target_lengths


def train_ctc(
    feats: Sequence[torch.Tensor],
    seqs: Sequence[Sequence[int]],
    num_phones: int,
    s: CTCSettings,
    seed: int,
    weight_decay: float = 0.0,
) -> CTCHead:
    """Fit a CTC head on (standardised) utterance features ``(T_i, D)`` and phone sequences."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    head = CTCHead(feats[0].shape[1], num_phones, s.head, s.hidden)
    ctc = nn.CTCLoss(blank=num_phones, zero_infinity=True)

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        x, lengths, targets, target_lengths = _batch(feats, seqs, idx.tolist())
        log_probs = head(x).transpose(0, 1)  # (T, B, C)
        return ctc(log_probs, targets, lengths, target_lengths)

    train_head(
        head,
        len(feats),
        batch_loss,
        epochs=s.epochs,
        min_steps=s.min_steps,
        lr=s.lr,
        weight_decay=weight_decay,
        batch_size=s.batch_size,
        generator=gen,
    )
    return head.eval()


@torch.no_grad()
def decode_all(head: CTCHead, feats: Sequence[torch.Tensor], num_phones: int) -> list[list[int]]:
    """Greedy transcripts of every utterance."""
    return [greedy_decode(head(f[None])[0], len(f), num_phones) for f in feats]


def standardise(
    train: Sequence[torch.Tensor], test: Sequence[torch.Tensor]
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Both splits scaled by the training frames' mean and std."""
    frames = torch.cat(list(train))
    mean, std = frames.mean(0), frames.std(0).clamp_min(1e-6)
    return [(f - mean) / std for f in train], [(f - mean) / std for f in test]


def dev_split(speakers: Sequence[str], n: int, seed: int) -> tuple[list[int], list[int]]:
    """Indices of the utterances kept for fitting and of those of ``n`` held-out speakers
    (chosen with ``seed``); at least one speaker must stay for fitting."""
    names = sorted(set(speakers))
    if len(names) <= n:
        raise ValueError(
            f"phone_recognition.dev_speakers={n}: the training split has only {len(names)} "
            "speakers; lower dev_speakers or give one weight_decay"
        )
    order = torch.randperm(len(names), generator=torch.Generator().manual_seed(seed)).tolist()
    dev = {names[i] for i in order[:n]}
    fit = [i for i, spk in enumerate(speakers) if spk not in dev]
    return fit, [i for i, spk in enumerate(speakers) if spk in dev]


def choose_weight_decay(
    feats: Sequence[torch.Tensor],
    seqs: Sequence[Sequence[int]],
    speakers: Sequence[str],
    num_phones: int,
    s: CTCSettings,
) -> tuple[float, dict[str, float]]:
    """The weight decay with the lowest PER on ``s.dev_speakers`` held-out training speakers
    (heads fitted on the other training speakers, first probe seed), and every candidate's PER."""
    fit, dev = dev_split(speakers, s.dev_speakers, s.seeds[0])
    dev_pers = {}
    for wd in s.weight_decays:
        head = train_ctc(
            [feats[i] for i in fit], [seqs[i] for i in fit], num_phones, s, s.seeds[0], wd
        )
        hyps = decode_all(head, [feats[i] for i in dev], num_phones)
        dev_pers[repr(wd)] = phone_error_rate(hyps, [seqs[i] for i in dev])
    best = min(s.weight_decays, key=lambda wd: dev_pers[repr(wd)])
    return best, dev_pers


def phone_recognition(
    train: tuple[Sequence[torch.Tensor], Sequence[Sequence[int]]],
    test: tuple[Sequence[torch.Tensor], Sequence[Sequence[int]]],
    num_phones: int,
    s: CTCSettings,
    train_speakers: Sequence[str] | None = None,
) -> dict[str, Any]:
    """PER (%) on ``test`` of heads trained on ``train`` (one per seed): mean, std, per seed.
    Several ``s.weight_decays`` need ``train_speakers`` (one per training utterance)."""
    xtr, xte = standardise(train[0], test[0])
    wd, dev_pers = s.weight_decays[0], None
    if len(s.weight_decays) > 1:
        if train_speakers is None or len(train_speakers) != len(xtr):
            raise ValueError(
                "choosing phone_recognition.weight_decay needs each training utterance's speaker"
            )
        wd, dev_pers = choose_weight_decay(xtr, train[1], train_speakers, num_phones, s)
    pers, train_pers, edits = [], [], []
    for seed in s.seeds:
        head = train_ctc(xtr, train[1], num_phones, s, seed, wd)
        edits.append(utterance_edits(decode_all(head, xte, num_phones), test[1]))
        pers.append(error_rate(edits[-1], test[1]))
        train_pers.append(phone_error_rate(decode_all(head, xtr, num_phones), train[1]))
    return {
        "per": float(np.mean(pers)),
        "per_std": float(np.std(pers)),
        "pers": pers,
        # per test utterance, in test order: edits (mean over the head seeds) and phones
        "utterance_edits": np.mean(edits, axis=0).tolist(),
        "utterance_phones": [len(r) for r in test[1]],
        "train_per": float(np.mean(train_pers)),
        "weight_decay": wd,
        "dev_pers": dev_pers,
        "seeds": list(s.seeds),
        "num_train_utterances": len(xtr),
        "num_test_utterances": len(xte),
        "num_test_phones": int(sum(len(r) for r in test[1])),
        "dim": int(xtr[0].shape[1]),
    }
