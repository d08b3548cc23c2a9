"""Shared data fixtures: the shared example datasets and a tiny LibriSpeech-layout tree."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import SHARED_DATA, write_tone


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared example datasets (``../shared/data`` from the repo root), or skip."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared example datasets absent: {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def libri_tree(tmp_path: Path) -> Path:
    """``train-clean-100/<spk>/<chap>/<spk>-<chap>-<n>.flac``: 3 speakers x 4 utterances (1.5-2.2 s,
    16 kHz), one 8 kHz stereo file, one short (0.5 s) file, and phone labels for two utterances
    plus one id without audio."""
    root = tmp_path / "libri"
    sub = root / "train-clean-100"
    k = 0
    for spk in ("11", "22", "33"):
        for n in range(4):
            write_tone(sub / spk / "100" / f"{spk}-100-{n:04d}.flac", 1.5 + 0.2 * n, seed=k)
            k += 1
    write_tone(sub / "44" / "200" / "44-200-0000.flac", 1.0, sr=8000, channels=2, seed=k)
    write_tone(sub / "44" / "200" / "44-200-0001.flac", 0.5, seed=k + 1)
    lines = []
    for uid, samples in (("11-100-0000", 24000), ("22-100-0001", 27200)):
        frames = (samples - 400) // 160 + 1
        lines.append(uid + " " + " ".join(str(i % 7) for i in range(frames)))
    lines.append("99-999-0000 1 2 3")
    (root / "converted_aligned_phones.txt").write_text("\n".join(lines) + "\n")
    return root
