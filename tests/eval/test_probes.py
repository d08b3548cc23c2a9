"""Probe library: frame alignment, separable/random labels, MFCC frames, online probe rows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from cpc_lightning.data.audio.frames import expected_phone_frames
from cpc_lightning.eval.features import Source, audio_task_features
from cpc_lightning.eval.linear_probe import fit_probe
from cpc_lightning.eval.mfcc import mfcc_frames, mfcc_transform
from cpc_lightning.eval.online_probe import OnlineProbe
from cpc_lightning.eval.registry import TASKS
from cpc_lightning.eval.settings import EvalSettings
from cpc_lightning.model.encoders.audio import Conv1dEncoder
from cpc_lightning.model.heads import PredictionHeads
from cpc_lightning.model.module import CPCModule
from cpc_lightning.model.negatives import NegativeSampler

HOP = 160


class BlockEncoder(nn.Module):
    """Frame t = mean of samples [160 t, 160 t + 160) (a partial last block is zero-padded)."""

    modality = "audio"
    downsampling = HOP

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1)
        pad = (-x.shape[1]) % HOP
        x = nn.functional.pad(x, (0, pad))
        counts = nn.functional.pad(torch.ones(x.shape[1] - pad), (0, pad))
        s = x.reshape(x.shape[0], -1, HOP).sum(-1)
        return (s / counts.reshape(-1, HOP).sum(-1).clamp_min(1))[..., None]


def frozen(encoder: nn.Module) -> CPCModule:
    """A CPCModule whose features are ``encoder``'s output (identity context)."""
    return CPCModule(
        encoder, nn.Identity(), PredictionHeads(1, 1, 1), NegativeSampler(), prediction_steps=1
    )


@dataclass
class Rec:
    uid: str
    wav: torch.Tensor
    phones: np.ndarray | None
    speaker_index: int = 0
    label_index: int = 0


class FakeAudio:
    sample_rate = 16000
    window = 3200

    def __init__(self, records: list[Rec]) -> None:
        self.records = records

    def items(self, split: str) -> list[Rec]:
        return list(self.records)

    def load(self, rec: Rec) -> torch.Tensor:
        return rec.wav


def labelled_utterance(num_samples: int, seed: int) -> Rec:
    """Labels per CPC frame; sample s carries the label of the 10 ms block it lies in."""
    n_lab = expected_phone_frames(num_samples)
    labels = np.random.default_rng(seed).integers(0, 9, n_lab)
    blocks = -(-num_samples // HOP)
    per_block = np.concatenate([labels, np.full(blocks - n_lab, 99)])  # unlabelled tail blocks
    wav = torch.from_numpy(np.repeat(per_block, HOP)[:num_samples].astype(np.float32))
    return Rec(f"u{seed}", wav, labels)


@pytest.mark.parametrize("length", [16000, 16000 + 1, 16000 + 159, 16000 + 80, 480, 400])
def test_conv_encoder_frames_and_label_frames(length: int) -> None:
    enc = Conv1dEncoder(hidden_dim=8, out_dim=8)
    t = enc(torch.zeros(1, 1, length)).shape[1]
    assert t == enc.num_frames(length)
    if length % HOP == 0:
        assert t == length // HOP
    # the encoder has at least as many frames as there are labels: truncation drops only
    # encoder frames (its last, partial ones), never a label
    assert t >= expected_phone_frames(length)


@pytest.mark.parametrize("lengths", [[16000, 16000, 12345], [4000 + 37, 400, 799]])
def test_frame_labels_survive_extraction(lengths: list[int]) -> None:
    recs = [labelled_utterance(n, i) for i, n in enumerate(lengths)]
    dm = FakeAudio(recs)
    src = Source("block", frozen(BlockEncoder()))
    settings = EvalSettings.from_mapping({"extract_batch": 2})
    out = audio_task_features(src, dm, "train", [TASKS["phones"]], settings, 20)
    x, y = out["phones"]
    assert len(y) == sum(expected_phone_frames(n) for n in lengths)  # every label, in order
    assert torch.equal(x[:, 0], y.float())  # frame t <-> label t, incl. the last labelled one
    assert torch.equal(y, torch.cat([torch.as_tensor(r.phones) for r in recs]).long())


def test_frame_rate_with_the_conv_encoder() -> None:
    recs = [labelled_utterance(n, i) for i, n in enumerate([16000, 16000 + 100])]
    dm = FakeAudio(recs)
    enc = Conv1dEncoder(hidden_dim=8, out_dim=8)
    src = Source("conv", frozen(enc))
    out = audio_task_features(
        src,
        dm,
        "train",
        [TASKS[t] for t in ("phones", "speakers", "classes")],
        EvalSettings.from_mapping(),
        window_frames=40,
    )
    assert len(out["phones"][1]) == expected_phone_frames(16000) + expected_phone_frames(16100)
    assert out["speakers"][0].shape == (2 * 2, 8)  # 100 frames -> two 40-frame windows each
    assert out["classes"][0].shape == (2, 8)


@pytest.mark.parametrize("length", [400, 560, 16000, 16123])
def test_mfcc_frames_are_label_frames(length: int) -> None:
    f = mfcc_frames(mfcc_transform(16000), torch.randn(1, length))
    assert f.shape == (1, expected_phone_frames(length), 39)


def test_separable_features_reach_100_percent() -> None:
    g = torch.Generator().manual_seed(0)
    k, d = 5, 8
    centres = torch.randn(k, d, generator=g) * 6
    y = torch.randint(0, k, (1200,), generator=g)
    x = centres[y] + 0.3 * torch.randn(1200, d, generator=g)
    res = fit_probe("t", (x[:1000], y[:1000]), (x[1000:], y[1000:]), epochs=30, lr=1e-2)
    assert res.accuracy >= 0.99 and res.num_classes == k
    assert len(res.per_class) == k and sum(map(sum, res.confusion)) == 200


def test_random_labels_stay_at_chance() -> None:
    g = torch.Generator().manual_seed(1)
    k = 4
    x = torch.randn(4000, 16, generator=g)
    y = torch.randint(0, k, (4000,), generator=g)
    res = fit_probe("t", (x[:3000], y[:3000]), (x[3000:], y[3000:]), epochs=10, lr=1e-2)
    assert abs(res.accuracy - 1 / k) < 0.06


def test_online_probe_rows() -> None:
    probe = OnlineProbe()
    c = torch.randn(2, 10, 4)
    phones = torch.full((2, 10), -100)
    phones[0, :5] = 3
    batch = {
        "x": torch.zeros(2, 1, 1600),
        "mask": torch.ones(2, 1600, dtype=torch.bool),
        "phones": phones,
        "speaker": torch.tensor([0, 1]),
        "label": torch.tensor([-100] * 2),
    }
    probe.task = "phones"
    x, y = probe.rows(c, batch)
    assert x.shape == (20, 4) and int((y >= 0).sum()) == 5
    probe.task = "speakers"
    batch["mask"][1, 800:] = False
    x, y = probe.rows(c, batch)
    assert x.shape == (2, 4) and y.tolist() == [0, 1]
    assert torch.allclose(x[1], c[1, :5].mean(0))


@pytest.mark.parametrize(
    "tasks,expected",
    [
        (["phones", "speakers"], ("phones", 7)),
        (["speakers", "classes"], ("speakers", 3)),
        (["classes"], ("classes", 2)),
        ([], None),
    ],
)
def test_online_probe_task_follows_the_declared_labels(tasks, expected) -> None:
    from types import SimpleNamespace

    from cpc_lightning.eval.online_probe import choose_task

    dm = SimpleNamespace(labels=tasks, num_phones=7, speakers=["a", "b", "c"], classes=["x", "y"])
    assert choose_task(dm) == expected
