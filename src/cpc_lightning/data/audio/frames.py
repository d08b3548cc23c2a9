"""The 10 ms label-frame grid shared by CPC phone labels, probes and the MFCC baseline.

At 16 kHz, label frame ``i`` covers samples ``[160 i, 160 i + 400)`` (10 ms hop, 25 ms window)
and is labelled with the phone at its centre; ``frames = floor((samples - 400) / 160) + 1``.
"""

from __future__ import annotations

LABEL_HOP = 160  # samples per 10 ms label frame at 16 kHz
LABEL_WINDOW = 400  # samples in a 25 ms label frame at 16 kHz
HOP_SECONDS = 0.010
WINDOW_SECONDS = 0.025


def expected_phone_frames(num_samples: int) -> int:
    """Number of 10 ms CPC label frames for ``num_samples`` samples at 16 kHz (0 if too short)."""
    return max(0, (num_samples - LABEL_WINDOW) // LABEL_HOP + 1)
