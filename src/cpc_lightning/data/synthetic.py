"""Synthetic speech-like corpus in the LibriSpeech layout (the default ``data=synthetic_speech``).

A deterministic, procedurally generated corpus, written to disk once so that the LibriSpeech
reader reads it unchanged. No download.

Synthesis (numpy only, vectorised per utterance) is source-filter in the STFT domain:

* Phones come from a seeded inventory: phone 0 is silence, the others are vowels (4 formants),
  nasals (low, damped formants and an anti-resonance), voiced and unvoiced fricatives
  (band-passed noise, a unit-specific band) and plosives (closure, burst, aspiration).
* Phone sequences follow a sparse, seeded first-order Markov chain (each phone has a few likely
  successors) with silence at both ends and occasional pauses; durations are phone dependent and
  log-normally varied.
* Speakers differ in f0 (90-250 Hz, with intonation, drift and jitter), vocal-tract length
  (formant scale 0.85-1.2), glottal spectral tilt, breathiness and speaking rate; each chapter has
  its own channel colouring, each utterance its own noise level and a random overall level.
* A glottal pulse train and a noise source are gated per sample, then shaped frame by frame
  (n_fft 32 ms, hop 8 ms) by smoothed formant / noise-band envelopes (coarticulation) and
  overlap-added.

Labels follow the CPC convention: one phone per 10 ms frame, frame ``i`` covering samples
``[160 i, 160 i + 400)`` and labelled with the phone at sample ``160 i + 200`` (these are sample
counts, so 10 ms / 25 ms only at the default 16 kHz).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

__all__ = ["SYNTHETIC_VERSION", "SPLIT_NAME", "corpus_stats", "ensure_synthetic_corpus"]

SYNTHETIC_VERSION: int = 1
"""Bumped whenever the generator's output changes; part of the corpus hash."""

SPLIT_NAME = "train-clean-synthetic"
FRAME_HOP = 160  # labels: 10 ms at 16 kHz
FRAME_LEN = 400  # labels: 25 ms at 16 kHz

# phone types
SIL, VOWEL, NASAL, VFRIC, UFRIC, PLOSIVE = range(6)
_TYPE_NAMES = ["silence", "vowel", "nasal", "voiced_fricative", "unvoiced_fricative", "plosive"]
# inventory proportions for phones 1..P-1 (vowels, nasals, voiced fric., unvoiced fric., plosives)
_TYPE_SHARE = np.array([0.38, 0.12, 0.12, 0.18, 0.20])


@dataclass(frozen=True)
class _Inventory:
    kind: np.ndarray  # (P,) phone type
    formants: np.ndarray  # (P, 4) Hz, target formant frequencies
    bandwidths: np.ndarray  # (P, 4) Hz
    voice: np.ndarray  # (P,) voicing amplitude
    noise: np.ndarray  # (P,) noise amplitude
    band: np.ndarray  # (P, 2) noise band centre, width (Hz)
    notch: np.ndarray  # (P, 2) anti-resonance frequency (Hz), depth in [0, 1]
    dur_ms: np.ndarray  # (P,) mean duration
    trans: np.ndarray  # (P, P) transition matrix (rows sum to 1)


@dataclass(frozen=True)
class _Speaker:
    sid: str
    f0: float
    scale: float
    rolloff: float  # glottal roll-off corner (Hz); lower = steeper tilt
    breath: float
    rate: float
    phone_warp: np.ndarray  # (P, 4) per-speaker formant deviations (idiolect)


def _rng(*key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(key))))


def _make_inventory(seed: int, num_phones: int) -> _Inventory:
    """Phone inventory and phonotactics, a function of (seed, num_phones) only."""
    rng = _rng(seed, 11, num_phones)
    p = num_phones
    n = p - 1
    counts = np.floor(_TYPE_SHARE * n).astype(int)
    counts[0] = max(counts[0], 1)
    while counts.sum() < n:
        counts[int(np.argmax(_TYPE_SHARE * n - counts))] += 1
    while counts.sum() > n:
        counts[int(np.argmax(counts))] -= 1
    kinds = np.concatenate([np.full(c, t + 1) for t, c in enumerate(counts)])
    kind = np.concatenate([[SIL], rng.permutation(kinds)]).astype(int)

    formants = np.zeros((p, 4))
    bandwidths = np.zeros((p, 4))
    voice = np.zeros(p)
    noise = np.zeros(p)
    band = np.tile([1500.0, 1500.0], (p, 1))
    notch = np.tile([1000.0, 0.0], (p, 1))
    dur = np.zeros(p)
    # vowels: spread over the vowel triangle by stratified F1/F2 sampling
    vowels = np.flatnonzero(kind == VOWEL)
    f1s = 280 + (np.arange(len(vowels)) + rng.uniform(0.1, 0.9, len(vowels))) / len(vowels) * 560
    f2_pos = rng.permutation(len(vowels))
    for j, i in enumerate(vowels):
        f1 = f1s[j]
        f2 = 850 + (f2_pos[j] + rng.uniform(0.1, 0.9)) / len(vowels) * 1500
        f2 = max(f2, f1 + 350)
        f3 = max(rng.uniform(2300, 3100), f2 + 400)
        f4 = f3 + rng.uniform(700, 1100)
        formants[i] = [f1, f2, f3, f4]
        bandwidths[i] = [rng.uniform(50, 90), rng.uniform(70, 120), 150, 220]
        voice[i] = rng.uniform(0.85, 1.0)
        noise[i] = 0.0
        dur[i] = rng.uniform(80, 180)
    for i in np.flatnonzero(kind != VOWEL):
        t = kind[i]
        # consonant "locus" formants so that transitions into vowels carry place cues
        loc = [rng.uniform(250, 500), rng.uniform(900, 2200), rng.uniform(2400, 3000), 3800.0]
        formants[i] = loc
        bandwidths[i] = [80, 120, 180, 250]
        if t == SIL:
            formants[i] = [500, 1500, 2500, 3500]
            dur[i] = 180
        elif t == NASAL:
            formants[i] = [
                rng.uniform(230, 320),
                rng.uniform(900, 1400),
                rng.uniform(2000, 2700),
                3600,
            ]
            bandwidths[i] = [60, 250, 300, 350]
            notch[i] = [rng.uniform(700, 2000), rng.uniform(0.7, 0.95)]
            voice[i] = rng.uniform(0.45, 0.65)
            dur[i] = rng.uniform(50, 100)
        elif t in (VFRIC, UFRIC):
            band[i] = [rng.uniform(2200, 6800), rng.uniform(500, 1800)]
            voice[i] = rng.uniform(0.25, 0.4) if t == VFRIC else 0.0
            noise[i] = rng.uniform(0.08, 0.25)
            dur[i] = rng.uniform(70, 140)
        elif t == PLOSIVE:
            band[i] = [rng.uniform(900, 5000), rng.uniform(900, 2500)]
            voice[i] = rng.uniform(0.0, 0.5)  # > 0: a voice bar in the closure, then voicing
            noise[i] = rng.uniform(0.3, 0.5)
            dur[i] = rng.uniform(45, 90)

    # phonotactics: each phone has a few likely successors; consonants prefer vowels and vice versa
    trans = np.zeros((p, p))
    cand_all = np.arange(1, p)
    for i in range(p):
        cand = cand_all[cand_all != i] if n > 1 else cand_all
        if i == 0:
            pref = np.ones(len(cand))
        else:
            same = (kind[cand] == VOWEL) == (kind[i] == VOWEL)
            pref = np.where(same, 0.25, 1.0)
        k = min(3, len(cand))
        succ = rng.choice(cand, size=k, replace=False, p=pref / pref.sum())
        row = np.zeros(p)
        row[cand] += 0.10 / len(cand)
        row[succ] += 0.86 * rng.dirichlet(np.full(k, 2.0))
        row[0] = 0.04 if i != 0 else 0.0
        trans[i] = row / row.sum()
    return _Inventory(kind, formants, bandwidths, voice, noise, band, notch, dur, trans)


def _make_speaker(seed: int, index: int, num_phones: int) -> _Speaker:
    rng = _rng(seed, 22, index)
    u = rng.uniform()
    f0 = float(np.exp(np.log(90.0) + u * (np.log(250.0) - np.log(90.0))))
    scale = float(0.85 + 0.35 * np.clip(u + rng.normal(0, 0.2), 0, 1))
    return _Speaker(
        sid=str(1000 + index),
        f0=f0,
        scale=scale,
        rolloff=float(rng.uniform(120, 400)),
        breath=float(rng.uniform(0.003, 0.02)),
        rate=float(rng.uniform(0.85, 1.15)),
        phone_warp=rng.normal(0, 0.07, (num_phones, 4)),
    )


def _channel(seed: int, speaker: int, chapter: int, freqs: np.ndarray) -> np.ndarray:
    """Smooth random recording-channel magnitude response (about +-4 dB) for one chapter."""
    rng = _rng(seed, 33, speaker, chapter)
    lf = np.log(np.maximum(freqs, 50.0) / 50.0) / np.log(8000.0 / 50.0)
    db = np.zeros_like(freqs)
    for k in range(1, 4):
        db += rng.uniform(-2.0, 2.0) * np.cos(np.pi * k * lf + rng.uniform(0, 2 * np.pi))
    cutoff = rng.uniform(4500, 7800)
    lowpass = 1.0 / np.sqrt(1.0 + (freqs / cutoff) ** 8)
    return 10 ** (db / 20) * lowpass


def _sample_phones(
    rng: np.random.Generator, inv: _Inventory, spk: _Speaker, n_samples: int, sr: int
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


def _synthesize(
    seed: int,
    spk_index: int,
    utt_index: int,
    chapter: int,
    inv: _Inventory,
    spk: _Speaker,
    n_samples: int,
    sr: int,
    noise_db: float,
) -> tuple[np.ndarray, np.ndarray]:
    """One utterance: float32 waveform in [-1, 1] and per-sample phone ids."""
    rng = _rng(seed, 44, spk_index, utt_index)
    phones, lens = _sample_phones(rng, inv, spk, n_samples, sr)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    seg = np.repeat(np.arange(len(phones)), lens)  # per-sample segment index
    ph = phones[seg]
    pos = (np.arange(n_samples) - starts[seg]) / lens[seg]  # position within segment in [0, 1)
    kind = inv.kind[ph]

    # ---- per-sample source amplitudes
    voice = inv.voice[ph].copy()
    noise = inv.noise[ph] * rng.uniform(0.8, 1.2, len(phones))[seg]
    plo = kind == PLOSIVE
    closure = rng.uniform(0.45, 0.65, len(phones))[seg]
    burst_end = closure + 0.25
    in_closure = plo & (pos < closure)
    in_burst = plo & (pos >= closure) & (pos < burst_end)
    after = plo & (pos >= burst_end)
    voice_bar = inv.voice[ph]
    voice = np.where(in_closure, 0.25 * voice_bar, voice)
    voice = np.where(in_burst, 0.0, voice)
    voice = np.where(after, np.where(voice_bar > 0.2, 0.7, 0.0), voice)
    decay = np.exp(-np.clip(pos - closure, 0, None) * 10.0)
    noise = np.where(in_closure, 0.0, noise)
    noise = np.where(in_burst, noise * decay, noise)
    noise = np.where(after, 0.25 * noise, noise)
    noise = np.maximum(noise, spk.breath * (voice > 0))
    ramp = int(0.006 * sr) | 1
    voice = _boxcar(_boxcar(voice, ramp), ramp)
    noise = _boxcar(noise, int(0.003 * sr) | 1)

    # ---- glottal source: f0 with declination, phrase accents, drift and jitter
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
    src_v = (pulses * voice * np.sqrt(sr / spk.f0)).astype(np.float32)
    src_n = rng.standard_normal(n_samples, dtype=np.float32) * noise.astype(np.float32)

    # ---- frame-wise spectral envelopes (coarticulated parameter tracks)
    n_fft = int(2 ** round(np.log2(0.032 * sr)))
    hop = n_fft // 4
    freqs = np.fft.rfftfreq(n_fft, 1 / sr)
    pad = n_fft // 2
    n_frames = (n_samples + 2 * pad - n_fft) // hop + 2
    centre = np.clip(np.arange(n_frames) * hop, 0, n_samples - 1)
    fseg = seg[centre]
    fph = phones[fseg]
    token = rng.normal(0, 0.13, (len(phones), 4))  # per-token formant variation
    nyq = 0.47 * sr
    fmt = inv.formants[fph] * spk.scale * np.exp(spk.phone_warp[fph] + token[fseg])
    fmt = np.minimum(_smooth(np.log(fmt), 4.0), np.log(nyq))
    fmt = np.exp(fmt)
    bw = _smooth(inv.bandwidths[fph] * rng.uniform(0.85, 1.15, (len(phones), 4))[fseg], 1.5)
    band = inv.band[fph] * np.array([spk.scale**0.5, 1.0])
    band = band * np.exp(rng.normal(0, 0.18, (len(phones), 1)))[fseg]
    band = _smooth(band, 1.2)
    notch = _smooth(inv.notch[fph] * np.array([spk.scale, 1.0]), 1.5)

    # cascade of 2-pole resonators, |H(f)|^2 = F^4 / ((F^2 - f^2)^2 + (B f)^2), unity at DC
    fsq = (freqs**2)[None, :]
    fsq, fmt, bw = fsq.astype(np.float32), fmt.astype(np.float32), bw.astype(np.float32)
    env_v = np.ones((n_frames, len(freqs)), dtype=np.float32)
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
    # chapter channel colouring times a per-utterance tilt (microphone distance / angle)
    tilt = (np.maximum(freqs, 50.0) / 1000.0) ** rng.uniform(-0.4, 0.4)
    chan = (_channel(seed, spk_index, chapter, freqs) * tilt)[None, :]

    win = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)

    def stft(x: np.ndarray) -> np.ndarray:
        xp = np.pad(x, (pad, pad + 2 * hop))
        fr = np.lib.stride_tricks.sliding_window_view(xp, n_fft)[::hop][:n_frames]
        return np.fft.rfft(fr * win, axis=1)

    spec = stft(src_v) * env_v + stft(src_n) * env_n.astype(np.float32)
    spec *= chan.astype(np.float32)
    frames = np.fft.irfft(spec, n=n_fft, axis=1) * win
    out = np.zeros((n_frames + 4) * hop + n_fft)
    for j in range(n_fft // hop):
        sub = frames[j :: n_fft // hop].reshape(-1)
        out[j * hop : j * hop + len(sub)] += sub
    speech = out[pad : pad + n_samples] / 1.5  # sum of periodic-Hann^2 at 75 % overlap

    # ---- background noise (pinkish), random level, random gain
    speech /= np.sqrt(np.mean(speech**2)) + 1e-12
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
    return y.astype(np.float32), ph


def _frame_labels(ph: np.ndarray) -> np.ndarray:
    n = (len(ph) - FRAME_LEN) // FRAME_HOP + 1
    return ph[np.arange(max(n, 0)) * FRAME_HOP + FRAME_LEN // 2]


def _params_hash(params: dict) -> str:
    blob = json.dumps({"version": SYNTHETIC_VERSION, **params}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def _generate(tmp: Path, params: dict) -> None:
    seed, sr = params["seed"], params["sample_rate"]
    inv = _make_inventory(seed, params["num_phones"])
    n_utt = params["utterances_per_speaker"]
    half = (n_utt + 1) // 2
    speakers = [_make_speaker(seed, s, params["num_phones"]) for s in range(params["num_speakers"])]
    chapters = []
    for s in range(len(speakers)):
        rng = _rng(seed, 55, s)
        chapters.append([str(100 * (s + 1) + 10 * c + int(rng.integers(0, 10))) for c in range(2)])

    def job(s: int, u: int) -> str:
        """Synthesise and write one utterance; return its alignment line."""
        spk, c = speakers[s], int(u >= half)
        uid = f"{spk.sid}-{chapters[s][c]}-{u - c * half:04d}"
        dur = _rng(seed, 66, s, u).uniform(params["min_seconds"], params["max_seconds"])
        n_samples = max(int(dur * sr), FRAME_LEN)
        wav, ph = _synthesize(seed, s, u, c, inv, spk, n_samples, sr, params["noise_db"])
        d = tmp / SPLIT_NAME / spk.sid / chapters[s][c]
        d.mkdir(parents=True, exist_ok=True)
        sf.write(d / f"{uid}.flac", wav, sr, subtype="PCM_16", format="FLAC")
        return f"{uid} " + " ".join(map(str, _frame_labels(ph).tolist()))

    # numpy's FFTs and ufuncs release the GIL; every utterance has its own RNG (deterministic)
    jobs = [(s, u) for s in range(len(speakers)) for u in range(n_utt)]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        align = list(pool.map(lambda su: job(*su), jobs))

    train, test = [], []
    for s in range(len(speakers)):
        ids = [line.split(" ", 1)[0] for line in align[s * n_utt : (s + 1) * n_utt]]
        n_test = int(round(params["test_fraction"] * n_utt))
        if n_utt >= 2 and params["test_fraction"] > 0:
            n_test = min(max(n_test, 1), n_utt - 1)
        test_idx = set(_rng(seed, 77, s).permutation(n_utt)[:n_test].tolist())
        for u, uid in enumerate(ids):
            (test if u in test_idx else train).append(uid)
    spk_rows = [f"{spk.sid}\t{spk.f0:.1f}\t{spk.scale:.3f}" for spk in speakers]
    (tmp / "converted_aligned_phones.txt").write_text("\n".join(sorted(align)) + "\n")
    (tmp / "train_split.txt").write_text("".join(f"{u}\n" for u in sorted(train)))
    (tmp / "test_split.txt").write_text("".join(f"{u}\n" for u in sorted(test)))
    (tmp / "speakers.tsv").write_text("id\tf0\tformant_scale\n" + "\n".join(spk_rows) + "\n")
    (tmp / "params.json").write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
    inventory = "\n".join(f"  {i:2d} {_TYPE_NAMES[k]}" for i, k in enumerate(inv.kind.tolist()))
    (tmp / "README.txt").write_text(
        "SYNTHETIC speech-like corpus generated by cpc_lightning.data.synthetic "
        f"(version {SYNTHETIC_VERSION}). Not real speech.\n"
        "Layout as LibriSpeech: "
        f"{SPLIT_NAME}/<speaker>/<chapter>/<speaker>-<chapter>-<nnnn>.flac\n"
        "Labels: converted_aligned_phones.txt, one phone per 10 ms frame (CPC format).\n"
        f"Parameters: {json.dumps(params, sort_keys=True)}\n"
        f"Phone inventory:\n{inventory}\n"
    )
    (tmp / "DONE").write_text("ok\n")


def ensure_synthetic_corpus(
    cache_dir: str | Path,
    *,
    seed: int = 0,
    num_speakers: int = 12,
    utterances_per_speaker: int = 40,
    min_seconds: float = 2.0,
    max_seconds: float = 4.0,
    sample_rate: int = 16000,
    num_phones: int = 24,
    test_fraction: float = 0.2,
    noise_db: float = -25.0,
) -> Path:
    """Generate the synthetic corpus under ``cache_dir`` once; return its root directory.

    The root ``synthetic_speech_<hash>`` depends on every parameter and ``SYNTHETIC_VERSION``;
    a finished root (with a ``DONE`` marker) is returned without regenerating. Generation goes
    to a temporary sibling directory renamed into place atomically.
    """
    if num_phones < 2:
        raise ValueError("num_phones must be >= 2 (phone 0 is silence)")
    if not 0 < min_seconds <= max_seconds:
        raise ValueError("need 0 < min_seconds <= max_seconds")
    params = {
        "seed": int(seed),
        "num_speakers": int(num_speakers),
        "utterances_per_speaker": int(utterances_per_speaker),
        "min_seconds": float(min_seconds),
        "max_seconds": float(max_seconds),
        "sample_rate": int(sample_rate),
        "num_phones": int(num_phones),
        "test_fraction": float(test_fraction),
        "noise_db": float(noise_db),
    }
    cache_dir = Path(cache_dir)
    root = cache_dir / f"synthetic_speech_{_params_hash(params)}"
    if (root / "DONE").is_file():
        return root
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=cache_dir))
    try:
        _generate(tmp, params)
        if root.exists() and not (root / "DONE").is_file():
            shutil.rmtree(root, ignore_errors=True)  # foreign, unfinished leftovers
        try:
            os.replace(tmp, root)
        except OSError:
            if not (root / "DONE").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def corpus_stats(root: str | Path) -> dict:
    """Counts for a generated corpus: utterances, speakers, seconds and the phone histogram."""
    root = Path(root)
    params = json.loads((root / "params.json").read_text())
    hist: Counter[int] = Counter()
    n_utt = 0
    for line in (root / "converted_aligned_phones.txt").read_text().splitlines():
        if line.strip():
            n_utt += 1
            hist.update(int(p) for p in line.split()[1:])
    files = sorted((root / SPLIT_NAME).glob("*/*/*.flac"))
    seconds = sum(sf.info(str(f)).frames for f in files) / params["sample_rate"]
    return {
        "num_utterances": n_utt,
        "num_files": len(files),
        "num_speakers": len({f.parent.parent.name for f in files}),
        "seconds": seconds,
        "num_frames": sum(hist.values()),
        "phone_histogram": [hist.get(i, 0) for i in range(params["num_phones"])],
    }
