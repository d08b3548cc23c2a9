"""The speech-like signal model behind the synthetic corpus (``synthetic.py`` writes the files).

Source-filter synthesis in the STFT domain, numpy only, vectorised per utterance, of the phones
and speakers of :mod:`~cpc_lightning.data.audio.synthesis_inventory`:

* Phone sequences follow a sparse, seeded first-order Markov chain (each phone has a few likely
  successors) with silence at both ends and occasional pauses; durations are phone dependent and
  log-normally varied.
* Speakers differ in f0 (90-250 Hz, with intonation, drift and jitter), vocal-tract length
  (formant scale 0.85-1.2), glottal spectral tilt, breathiness and speaking rate; each chapter has
  its own channel colouring, each utterance its own noise level and a random overall level.
* A glottal pulse train and a noise source are gated per sample, then shaped frame by frame
  (n_fft 32 ms, hop 8 ms) by smoothed formant / noise-band envelopes (coarticulation) and
  overlap-added.

Every draw comes from a generator keyed by (seed, purpose, speaker, utterance): the output is a
function of the parameters only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cpc_lightning.data.audio.synthesis_inventory import (
    PLOSIVE,
    Inventory,
    Speaker,
    rng_for,
)


def _channel(seed: int, speaker: int, chapter: int, freqs: np.ndarray) -> np.ndarray:
    """Smooth random recording-channel magnitude response (about +-4 dB) for one chapter."""
    rng = rng_for(seed, 33, speaker, chapter)
    lf = np.log(np.maximum(freqs, 50.0) / 50.0) / np.log(8000.0 / 50.0)
    db = np.zeros_like(freqs)
    for k in range(1, 4):
        db += rng.uniform(-2.0, 2.0) * np.cos(np.pi * k * lf + rng.uniform(0, 2 * np.pi))
    cutoff = rng.uniform(4500, 7800)
    lowpass = 1.0 / np.sqrt(1.0 + (freqs / cutoff) ** 8)
    return 10 ** (db / 20) * lowpass


def _sample_phones(
    rng: np.random.Generator, inv: Inventory, spk: Speaker, n_samples: int, sr: int
) -> tuple[np.ndarray, np.ndarray]:
    """Phone sequence and segment lengths (samples) filling exactly ``n_samples``."""
    rate = spk.rate * rng.uniform(0.93, 1.07)
    lead = min(int(rng.uniform(0.10, 0.30) * sr), n_samples // 4)
    tail = min(int(rng.uniform(0.10, 0.30) * sr), n_samples // 4)
    phones, lens = [0], [lead]
    total, cur = lead, 0
    budget = n_samples - tail
    while total < budget:
        cur = int(rng.choice(len(inv.trans), p=inv.trans[cur]))
        mean = 220.0 if cur == 0 else inv.dur_ms[cur]
        ln = int(mean / rate * np.exp(rng.normal(0, 0.28)) * sr / 1000)
        ln = max(ln, int(0.025 * sr))
        phones.append(cur)
        lens.append(ln)
        total += ln
    lens[-1] -= total - budget  # stays > 0: the last phone started before the budget ran out
    phones.append(0)
    lens.append(n_samples - budget)
    return np.asarray(phones), np.asarray(lens)


def _smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing along axis 0 with edge padding."""
    r = int(3 * sigma) + 1
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    xp = np.pad(x, [(r, r)] + [(0, 0)] * (x.ndim - 1), mode="edge")
    out = np.zeros_like(x, dtype=float)
    for j, w in enumerate(k):
        out += w * xp[j : j + len(x)]
    return out


def _boxcar(x: np.ndarray, width: int) -> np.ndarray:
    """Moving average of odd ``width`` samples (same length)."""
    h = width // 2
    xp = np.pad(x, (h + 1, h), mode="edge")
    c = np.cumsum(xp)
    return (c[width:] - c[:-width]) / width


@dataclass
class _Segments:
    """An utterance's phone segments, per sample: segment index, phone, position in [0, 1)."""

    phones: np.ndarray
    seg: np.ndarray
    ph: np.ndarray
    pos: np.ndarray


def _segments(phones: np.ndarray, lens: np.ndarray, n_samples: int) -> _Segments:
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    seg = np.repeat(np.arange(len(phones)), lens)  # per-sample segment index
    pos = (np.arange(n_samples) - starts[seg]) / lens[seg]
    return _Segments(phones, seg, phones[seg], pos)


def _source_levels(
    rng: np.random.Generator, inv: Inventory, spk: Speaker, s: _Segments, sr: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample voicing and noise amplitudes (plosives: closure, burst, aspiration)."""
    n_seg = len(s.phones)
    voice = inv.voice[s.ph].copy()
    noise = inv.noise[s.ph] * rng.uniform(0.8, 1.2, n_seg)[s.seg]
    plo = inv.kind[s.ph] == PLOSIVE
    closure = rng.uniform(0.45, 0.65, n_seg)[s.seg]
    burst_end = closure + 0.25
    in_closure = plo & (s.pos < closure)
    in_burst = plo & (s.pos >= closure) & (s.pos < burst_end)
    after = plo & (s.pos >= burst_end)
    voice_bar = inv.voice[s.ph]
    voice = np.where(in_closure, 0.25 * voice_bar, voice)
    voice = np.where(in_burst, 0.0, voice)
    voice = np.where(after, np.where(voice_bar > 0.2, 0.7, 0.0), voice)
    decay = np.exp(-np.clip(s.pos - closure, 0, None) * 10.0)
    noise = np.where(in_closure, 0.0, noise)
    noise = np.where(in_burst, noise * decay, noise)
    noise = np.where(after, 0.25 * noise, noise)
    noise = np.maximum(noise, spk.breath * (voice > 0))
    ramp = int(0.006 * sr) | 1
    voice = _boxcar(_boxcar(voice, ramp), ramp)
    noise = _boxcar(noise, int(0.003 * sr) | 1)
    return voice, noise


def _glottal_source(
    rng: np.random.Generator, spk: Speaker, voice: np.ndarray, n_samples: int, sr: int
) -> np.ndarray:
    """Pulse train: f0 with declination, phrase accents, drift, jitter and shimmer."""
    t = np.arange(n_samples) / sr
    dur = n_samples / sr
    ctrl = np.arange(0, dur + 0.05, 0.05)
    accents = sum(
        rng.uniform(-0.12, 0.18) * np.exp(-0.5 * ((ctrl - rng.uniform(0, dur)) / 0.25) ** 2)
        for _ in range(int(rng.integers(1, 4)))
    )
    drift = np.cumsum(rng.normal(0, 0.015, len(ctrl)))
    log_f0 = (
        np.log(spk.f0 * rng.uniform(0.92, 1.08))
        + 0.12 * (0.5 - ctrl / dur)
        + accents
        + drift
        - drift.mean()
    )
    jit_t = np.arange(0, dur + 0.005, 0.0025)
    log_f0 = np.interp(t, ctrl, log_f0) + np.interp(t, jit_t, rng.normal(0, 0.01, len(jit_t)))
    phase = np.cumsum(np.exp(log_f0) / sr)
    pulses = np.diff(np.floor(phase), prepend=0.0)
    at = np.flatnonzero(pulses)
    pulses[at] *= 1 + 0.08 * rng.standard_normal(len(at))  # shimmer
    return (pulses * voice * np.sqrt(sr / spk.f0)).astype(np.float32)


@dataclass
class _Frames:
    """The STFT grid of one utterance."""

    n_fft: int
    hop: int
    pad: int
    n_frames: int
    freqs: np.ndarray


def _frames(n_samples: int, sr: int) -> _Frames:
    n_fft = int(2 ** round(np.log2(0.032 * sr)))
    hop = n_fft // 4
    pad = n_fft // 2
    n_frames = (n_samples + 2 * pad - n_fft) // hop + 2
    return _Frames(n_fft, hop, pad, n_frames, np.fft.rfftfreq(n_fft, 1 / sr))


def _envelopes(
    rng: np.random.Generator,
    inv: Inventory,
    spk: Speaker,
    s: _Segments,
    fr: _Frames,
    n_samples: int,
    sr: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Frame-wise voiced and noise spectral envelopes (coarticulated parameter tracks)."""
    centre = np.clip(np.arange(fr.n_frames) * fr.hop, 0, n_samples - 1)
    fseg = s.seg[centre]
    fph = s.phones[fseg]
    n_seg = len(s.phones)
    token = rng.normal(0, 0.13, (n_seg, 4))  # per-token formant variation
    fmt = inv.formants[fph] * spk.scale * np.exp(spk.phone_warp[fph] + token[fseg])
    fmt = np.exp(np.minimum(_smooth(np.log(fmt), 4.0), np.log(0.47 * sr)))
    bw = _smooth(inv.bandwidths[fph] * rng.uniform(0.85, 1.15, (n_seg, 4))[fseg], 1.5)
    band = inv.band[fph] * np.array([spk.scale**0.5, 1.0])
    band = _smooth(band * np.exp(rng.normal(0, 0.18, (n_seg, 1)))[fseg], 1.2)
    notch = _smooth(inv.notch[fph] * np.array([spk.scale, 1.0]), 1.5)
    # cascade of 2-pole resonators, |H(f)|^2 = F^4 / ((F^2 - f^2)^2 + (B f)^2), unity at DC
    freqs = fr.freqs
    fsq = (freqs**2)[None, :].astype(np.float32)
    fmt, bw = fmt.astype(np.float32), bw.astype(np.float32)
    env_v = np.ones((fr.n_frames, len(freqs)), dtype=np.float32)
    for k in range(fmt.shape[1]):
        fk2 = fmt[:, k : k + 1] ** 2
        env_v *= fk2 * fk2 / ((fk2 - fsq) ** 2 + bw[:, k : k + 1] ** 2 * fsq)
    env_v = np.sqrt(env_v)
    f2 = freqs[None, :]
    env_v *= 1 - notch[:, 1:2] * np.exp(-0.5 * ((f2 - notch[:, :1]) / 180.0) ** 2)
    glottal = (1.0 + (freqs / spk.rolloff) ** 2) ** -0.75  # about -9 dB/octave
    radiation = freqs / (freqs + 100.0)
    env_v *= (glottal * radiation)[None, :]
    env_n = np.exp(-0.5 * ((f2 - band[:, :1]) / band[:, 1:2]) ** 2) + 0.03
    env_n *= (freqs / (freqs + 300.0))[None, :]
    return env_v, env_n


def _filter(
    src_v: np.ndarray,
    src_n: np.ndarray,
    env_v: np.ndarray,
    env_n: np.ndarray,
    chan: np.ndarray,
    fr: _Frames,
    n_samples: int,
) -> np.ndarray:
    """Shape both sources frame by frame (STFT, Hann window) and overlap-add."""
    n_fft, hop, pad = fr.n_fft, fr.hop, fr.pad
    win = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)

    def stft(x: np.ndarray) -> np.ndarray:
        xp = np.pad(x, (pad, pad + 2 * hop))
        frames = np.lib.stride_tricks.sliding_window_view(xp, n_fft)[::hop][: fr.n_frames]
        return np.fft.rfft(frames * win, axis=1)

    spec = stft(src_v) * env_v + stft(src_n) * env_n.astype(np.float32)
    spec *= chan.astype(np.float32)
    frames = np.fft.irfft(spec, n=n_fft, axis=1) * win
    out = np.zeros((fr.n_frames + 4) * hop + n_fft)
    for j in range(n_fft // hop):
        sub = frames[j :: n_fft // hop].reshape(-1)
        out[j * hop : j * hop + len(sub)] += sub
    return out[pad : pad + n_samples] / 1.5  # sum of periodic-Hann^2 at 75 % overlap


def _background_and_level(
    rng: np.random.Generator, speech: np.ndarray, noise_db: float, sr: int
) -> np.ndarray:
    """Pinkish background noise at a random level, then a random overall gain (peak <= 0.95)."""
    n_samples = len(speech)
    speech = speech / (np.sqrt(np.mean(speech**2)) + 1e-12)
    n_bg = 1 << int(np.ceil(np.log2(n_samples)))  # a fast FFT size
    bg = np.fft.rfft(rng.standard_normal(n_bg, dtype=np.float32))
    fb = np.fft.rfftfreq(n_bg, 1 / sr)
    bg = np.fft.irfft(bg / np.sqrt(1 + fb / 400.0), n=n_bg)[:n_samples]
    bg /= np.sqrt(np.mean(bg**2)) + 1e-12
    y = speech + bg * 10 ** ((noise_db + rng.uniform(-5, 5)) / 20)
    y *= 10 ** (rng.uniform(-32, -20) / 20) / np.sqrt(np.mean(y**2))
    peak = np.max(np.abs(y))
    if peak > 0.95:
        y *= 0.95 / peak
    return y


def synthesize(
    seed: int,
    spk_index: int,
    utt_index: int,
    chapter: int,
    inv: Inventory,
    spk: Speaker,
    n_samples: int,
    sr: int,
    noise_db: float,
) -> tuple[np.ndarray, np.ndarray]:
    """One utterance: float32 waveform in [-1, 1] and per-sample phone ids."""
    rng = rng_for(seed, 44, spk_index, utt_index)
    s = _segments(*_sample_phones(rng, inv, spk, n_samples, sr), n_samples)
    voice, noise = _source_levels(rng, inv, spk, s, sr)
    src_v = _glottal_source(rng, spk, voice, n_samples, sr)
    src_n = rng.standard_normal(n_samples, dtype=np.float32) * noise.astype(np.float32)
    fr = _frames(n_samples, sr)
    env_v, env_n = _envelopes(rng, inv, spk, s, fr, n_samples, sr)
    # chapter channel colouring times a per-utterance tilt (microphone distance / angle)
    tilt = (np.maximum(fr.freqs, 50.0) / 1000.0) ** rng.uniform(-0.4, 0.4)
    chan = (_channel(seed, spk_index, chapter, fr.freqs) * tilt)[None, :]
    speech = _filter(src_v, src_n, env_v, env_n, chan, fr, n_samples)
    y = _background_and_level(rng, speech, noise_db, sr)
    return y.astype(np.float32), s.ph
