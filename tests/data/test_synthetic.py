"""Tests for the embedded synthetic speech corpus (cpc_lightning.data.synthetic)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cpc_lightning.data.audio.synthetic import (
    SYNTHETIC_VERSION,
    corpus_stats,
    ensure_synthetic_corpus,
)

SMALL = dict(
    num_speakers=3,
    utterances_per_speaker=4,
    min_seconds=1.0,
    max_seconds=1.0,
    num_phones=12,
    test_fraction=0.25,
)
SPLIT = "train-clean-synthetic"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_synthetic_corpus(tmp_path_factory.mktemp("cache"), **SMALL)


def _alignments(root: Path) -> dict[str, list[int]]:
    out = {}
    for line in (root / "converted_aligned_phones.txt").read_text().splitlines():
        uid, *phones = line.split()
        out[uid] = [int(p) for p in phones]
    return out


def _flacs(root: Path) -> list[Path]:
    return sorted((root / SPLIT).glob("*/*/*.flac"))


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_layout_and_naming(corpus: Path) -> None:
    assert corpus.name.startswith("synthetic_speech_")
    for name in (
        "DONE",
        "converted_aligned_phones.txt",
        "train_split.txt",
        "test_split.txt",
        "speakers.tsv",
        "README.txt",
    ):
        assert (corpus / name).is_file(), name
    assert "synthetic" in (corpus / "README.txt").read_text().lower()
    speakers = sorted(p.name for p in (corpus / SPLIT).iterdir())
    assert len(speakers) == 3 and all(s.isdigit() for s in speakers)
    files = _flacs(corpus)
    assert len(files) == 3 * 4
    for f in files:
        spk, chap = f.parent.parent.name, f.parent.name
        assert chap.isdigit()
        assert re.fullmatch(rf"{spk}-{chap}-\d{{4}}\.flac", f.name), f
        info = sf.info(str(f))
        assert (info.format, info.subtype) == ("FLAC", "PCM_16")
        assert info.channels == 1 and info.samplerate == 16000
    for spk in speakers:
        assert len(list((corpus / SPLIT / spk).iterdir())) == 2  # two chapters per speaker
    rows = (corpus / "speakers.tsv").read_text().splitlines()
    assert sorted(r.split("\t")[0] for r in rows[1:]) == speakers


def test_labels_match_audio(corpus: Path) -> None:
    align = _alignments(corpus)
    files = {f.stem: f for f in _flacs(corpus)}
    assert set(align) == set(files)
    for uid, phones in align.items():
        wav, sr = sf.read(files[uid], dtype="float32")
        assert sr == 16000
        assert len(phones) == (len(wav) - 400) // 160 + 1, uid
        assert all(0 <= p < SMALL["num_phones"] for p in phones)
        assert phones[0] == 0 and phones[-1] == 0  # silence at both ends
        assert len(set(phones)) > 2


def test_audio_values(corpus: Path) -> None:
    for f in _flacs(corpus):
        wav, _ = sf.read(f, dtype="float32")
        assert wav.ndim == 1
        assert np.isfinite(wav).all()
        assert np.abs(wav).max() <= 1.0
        assert np.sqrt(np.mean(wav.astype(np.float64) ** 2)) > 1e-3  # not silent
        assert np.std(wav) > 1e-3


def test_splits(corpus: Path) -> None:
    train = (corpus / "train_split.txt").read_text().split()
    test = (corpus / "test_split.txt").read_text().split()
    assert not set(train) & set(test)
    assert set(train) | set(test) == set(_alignments(corpus))
    assert len(train) + len(test) == 12
    speakers = {f.parent.parent.name for f in _flacs(corpus)}
    assert {u.split("-")[0] for u in train} == speakers
    assert {u.split("-")[0] for u in test} == speakers
    assert len(test) == 3  # one of four per speaker at test_fraction 0.25


def test_stats(corpus: Path) -> None:
    stats = corpus_stats(corpus)
    assert stats["num_utterances"] == 12
    assert stats["num_speakers"] == 3
    assert stats["seconds"] == pytest.approx(12.0, abs=0.01)
    hist = stats["phone_histogram"]
    assert len(hist) == SMALL["num_phones"] and hist[0] > 0
    assert sum(hist) == sum(len(p) for p in _alignments(corpus).values())
    params = json.loads((corpus / "params.json").read_text())
    assert params["num_phones"] == SMALL["num_phones"]
    assert isinstance(SYNTHETIC_VERSION, int)


def test_deterministic(tmp_path: Path, corpus: Path) -> None:
    a = ensure_synthetic_corpus(tmp_path / "a", **SMALL)
    b = ensure_synthetic_corpus(tmp_path / "b", **SMALL)
    assert a.name == b.name == corpus.name
    da, db = _digest(a), _digest(b)
    assert da == db
    assert da == _digest(corpus)


def test_cache_reuse_and_new_params(tmp_path: Path) -> None:
    params = dict(SMALL, num_speakers=2, utterances_per_speaker=2)
    root = ensure_synthetic_corpus(tmp_path, **params)
    mtimes = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert ensure_synthetic_corpus(tmp_path, **params) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == mtimes
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers
    other = ensure_synthetic_corpus(tmp_path, **dict(params, seed=1))
    assert other != root and (other / "DONE").is_file()
    assert _digest(other) != _digest(root)
    noisier = ensure_synthetic_corpus(tmp_path, **dict(params, noise_db=-10.0))
    assert noisier not in (root, other)


def test_rejects_bad_params(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        ensure_synthetic_corpus(tmp_path, num_phones=1)
    with pytest.raises(ValueError):
        ensure_synthetic_corpus(tmp_path, min_seconds=3.0, max_seconds=2.0)
