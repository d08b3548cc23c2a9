"""The MFCC baseline: 13 MFCCs + deltas + delta-deltas (39-d) on the 10 ms label-frame grid."""

from __future__ import annotations

import torch
from torch import nn

from cpc_lightning.data.audio.frames import HOP_SECONDS, WINDOW_SECONDS

MFCC_DIM = 39


def mfcc_transform(sample_rate: int = 16000) -> nn.Module:
    """13 MFCCs, 25 ms window, 10 ms hop, no centring (frame i covers [hop i, hop i + win))."""
    import torchaudio

    hop = round(sample_rate * HOP_SECONDS)
    win = round(sample_rate * WINDOW_SECONDS)
    return torchaudio.transforms.MFCC(
        sample_rate=sample_rate,
        n_mfcc=13,
        melkwargs={
            "n_fft": win,
            "win_length": win,
            "hop_length": hop,
            "n_mels": 40,
            "center": False,
        },
    )


def mfcc_frames(transform: nn.Module, wav: torch.Tensor) -> torch.Tensor:
    """Waveforms ``(B, L)`` -> ``(B, T, 39)``: MFCC + deltas + delta-deltas, ``T`` label frames."""
    import torchaudio.functional as AF

    win = transform.MelSpectrogram.spectrogram.win_length
    if wav.shape[-1] < win:
        wav = nn.functional.pad(wav, (0, win - wav.shape[-1]))
    m = transform(wav)  # (B, 13, T)
    d1 = AF.compute_deltas(m)
    d2 = AF.compute_deltas(d1)
    return torch.cat([m, d1, d2], 1).transpose(1, 2)
