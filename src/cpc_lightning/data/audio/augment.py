"""Waveform augmentations (time domain, on the fly), built on ``torchaudio.functional``.

Each augmentation is called as ``aug(x, generator) -> y`` on a mono window ``x`` of shape ``(L,)``
and returns the same shape, float32, finite. All randomness comes from the ``torch.Generator`` the
dataset seeds with (seed, epoch, index), so a given item is augmented identically on every run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

import torch
import torchaudio.functional as AF


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


class WaveAugment:
    """Base: applies ``_apply`` with probability ``p``."""

    def __init__(self, sample_rate: int = 16000, p: float = 1.0) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"augmentation probability p must be in [0, 1], got {p}")
        self.sample_rate = sample_rate
        self.p = p

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if self.p < 1.0 and float(torch.rand((), generator=gen)) >= self.p:
            return x
        return self._apply(x, gen)

    def _apply(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


class Noise(WaveAugment):
    """Additive white noise at an SNR drawn uniformly from ``snr_db`` (dB), via ``add_noise``."""

    def __init__(self, snr_db: Sequence[float] = (5.0, 30.0), **kw: Any) -> None:
        super().__init__(**kw)
        self.snr_db = tuple(float(v) for v in snr_db)

    def _apply(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=gen)
        snr = torch.tensor([_uniform(gen, *self.snr_db)])
        if float(x.pow(2).sum()) <= 1e-12:  # silence: add_noise's power ratio is undefined
            return x
        return AF.add_noise(x[None], noise[None], snr)[0]


class BandReject(WaveAugment):
    """Notch out a band: biquad band-reject at a centre frequency drawn from ``freq_hz``."""

    def __init__(
        self, freq_hz: Sequence[float] = (200.0, 4000.0), q: float = 0.707, **kw: Any
    ) -> None:
        super().__init__(**kw)
        self.freq_hz = tuple(float(v) for v in freq_hz)
        self.q = q

    def _apply(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        hi = min(self.freq_hz[1], 0.45 * self.sample_rate)
        f = _uniform(gen, min(self.freq_hz[0], hi), hi)
        return AF.bandreject_biquad(x, self.sample_rate, f, self.q).clamp(-1.0, 1.0)


class Pitch(WaveAugment):
    """Pitch shift by a whole number of semitones in ``semitones``, by resampling.

    The window is resampled by a small rational approximation of ``2 ** (steps / 12)`` and read at
    the original rate, so pitch and tempo change together (speed perturbation); the result is cut,
    or reflect-padded, back to the input length.
    """

    def __init__(self, semitones: Sequence[int] = (-3, 3), max_denominator: int = 24, **kw: Any):
        super().__init__(**kw)
        self.semitones = (int(semitones[0]), int(semitones[1]))
        self.max_denominator = max_denominator

    def _apply(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        lo, hi = self.semitones
        steps = int(torch.randint(lo, hi + 1, (), generator=gen))
        ratio = Fraction(2 ** (steps / 12)).limit_denominator(self.max_denominator)
        if ratio == 1:
            return x
        y = AF.resample(x, ratio.numerator, ratio.denominator)
        n = x.numel()
        while y.numel() < n:  # pitch up shortens the window: mirror the end back in
            need = min(n - y.numel(), y.numel() - 1)
            y = torch.nn.functional.pad(y[None, None], (0, need), mode="reflect")[0, 0]
        return y[:n].clamp(-1.0, 1.0).contiguous()


class Reverb(WaveAugment):
    """Convolve with a synthetic room response: decaying noise with RT60 drawn from ``rt60_s``."""

    def __init__(
        self, rt60_s: Sequence[float] = (0.1, 0.6), wet: Sequence[float] = (0.2, 0.6), **kw: Any
    ) -> None:
        super().__init__(**kw)
        self.rt60_s = tuple(float(v) for v in rt60_s)
        self.wet = tuple(float(v) for v in wet)

    def _apply(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        rt60 = _uniform(gen, *self.rt60_s)
        n = max(2, int(rt60 * self.sample_rate))
        t = torch.arange(n, dtype=torch.float32) / self.sample_rate
        ir = torch.randn(n, generator=gen) * torch.exp(-6.9078 * t / rt60)  # -60 dB at rt60
        ir[0] = 1.0
        ir = ir / ir.norm()
        wet = AF.fftconvolve(x, ir)[: x.numel()]
        mix = _uniform(gen, *self.wet)
        y = (1 - mix) * x + mix * wet
        peak = float(y.abs().max())
        return y / peak * float(x.abs().max()) if peak > 0 else y


class TimeMask(WaveAugment):
    """Zero ``num_masks`` random spans, each up to ``max_fraction`` of the window."""

    def __init__(self, num_masks: int = 2, max_fraction: float = 0.1, **kw: Any) -> None:
        super().__init__(**kw)
        self.num_masks = num_masks
        self.max_fraction = max_fraction

    def _apply(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        y = x.clone()
        n = x.numel()
        for _ in range(self.num_masks):
            width = int(_uniform(gen, 0.0, self.max_fraction) * n)
            if width <= 0:
                continue
            start = int(torch.randint(0, n - width + 1, (), generator=gen))
            y[start : start + width] = 0.0
        return y


AUGMENTATIONS: dict[str, type[WaveAugment]] = {
    "noise": Noise,
    "bandreject": BandReject,
    "pitch": Pitch,
    "reverb": Reverb,
    "time_mask": TimeMask,
}


class Compose:
    """Apply augmentations in order; output is float32, finite, same length as the input."""

    def __init__(self, augments: Sequence[WaveAugment]) -> None:
        self.augments = list(augments)

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        y = x.float()
        for aug in self.augments:
            y = aug(y, gen)
        y = torch.nan_to_num(y, nan=0.0, posinf=1.0, neginf=-1.0)
        return y

    def __repr__(self) -> str:
        return f"Compose({[type(a).__name__ for a in self.augments]})"


def build_augment(
    names: Sequence[str] | None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    sample_rate: int = 16000,
) -> Compose | None:
    """``data.augment`` (names) + ``data.augment_params`` ({name: kwargs}) -> ``Compose``."""
    if not names:
        return None
    params = dict(params or {})
    unknown = [n for n in list(names) + list(params) if n not in AUGMENTATIONS]
    if unknown:
        raise ValueError(
            f"unknown augmentation(s) {unknown} in data.augment/data.augment_params; "
            f"choose from {sorted(AUGMENTATIONS)}"
        )
    out = []
    for n in names:
        kw = dict(params.get(n) or {})
        out.append(AUGMENTATIONS[n](sample_rate=sample_rate, **kw))
    return Compose(out)


__all__ = [
    "AUGMENTATIONS",
    "BandReject",
    "Compose",
    "Noise",
    "Pitch",
    "Reverb",
    "TimeMask",
    "WaveAugment",
    "build_augment",
]
