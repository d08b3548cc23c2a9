"""Who says what in the synthetic corpus: the seeded phone inventory, its phonotactics and the
speakers (:mod:`~cpc_lightning.data.audio.synthesis` renders them as waveforms).

* Phones: phone 0 is silence, the others are vowels (4 formants), nasals (low, damped formants
  and an anti-resonance), voiced and unvoiced fricatives (band-passed noise, a unit-specific
  band) and plosives (closure, burst, aspiration).
* Phone sequences follow a sparse, seeded first-order Markov chain (each phone has a few likely
  successors); durations are phone dependent.
* Speakers differ in f0 (90-250 Hz), vocal-tract length (formant scale 0.85-1.2), glottal
  spectral tilt, breathiness, speaking rate and per-phone formant deviations (idiolect).

Every draw comes from a generator keyed by (seed, purpose, ...): the output is a function of the
parameters only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# phone types
SIL, VOWEL, NASAL, VFRIC, UFRIC, PLOSIVE = range(6)
TYPE_NAMES = ["silence", "vowel", "nasal", "voiced_fricative", "unvoiced_fricative", "plosive"]
# inventory proportions for phones 1..P-1 (vowels, nasals, voiced fric., unvoiced fric., plosives)
_TYPE_SHARE = np.array([0.38, 0.12, 0.12, 0.18, 0.20])


@dataclass(frozen=True)
class Inventory:
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
class Speaker:
    sid: str
    f0: float
    scale: float
    rolloff: float  # glottal roll-off corner (Hz); lower = steeper tilt
    breath: float
    rate: float
    phone_warp: np.ndarray  # (P, 4) per-speaker formant deviations (idiolect)


def rng_for(*key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(key))))


def _phone_kinds(rng: np.random.Generator, p: int) -> np.ndarray:
    """Phone types: silence first, the other ``p - 1`` in the proportions of ``_TYPE_SHARE``."""
    n = p - 1
    counts = np.floor(_TYPE_SHARE * n).astype(int)
    counts[0] = max(counts[0], 1)
    while counts.sum() < n:
        counts[int(np.argmax(_TYPE_SHARE * n - counts))] += 1
    while counts.sum() > n:
        counts[int(np.argmax(counts))] -= 1
    kinds = np.concatenate([np.full(c, t + 1) for t, c in enumerate(counts)])
    return np.concatenate([[SIL], rng.permutation(kinds)]).astype(int)


def _vowel_params(rng: np.random.Generator, kind: np.ndarray, a: dict[str, np.ndarray]) -> None:
    """Vowels spread over the vowel triangle by stratified F1/F2 sampling (fills ``a``)."""
    vowels = np.flatnonzero(kind == VOWEL)
    f1s = 280 + (np.arange(len(vowels)) + rng.uniform(0.1, 0.9, len(vowels))) / len(vowels) * 560
    f2_pos = rng.permutation(len(vowels))
    for j, i in enumerate(vowels):
        f1 = f1s[j]
        f2 = 850 + (f2_pos[j] + rng.uniform(0.1, 0.9)) / len(vowels) * 1500
        f2 = max(f2, f1 + 350)
        f3 = max(rng.uniform(2300, 3100), f2 + 400)
        f4 = f3 + rng.uniform(700, 1100)
        a["formants"][i] = [f1, f2, f3, f4]
        a["bandwidths"][i] = [rng.uniform(50, 90), rng.uniform(70, 120), 150, 220]
        a["voice"][i] = rng.uniform(0.85, 1.0)
        a["noise"][i] = 0.0
        a["dur"][i] = rng.uniform(80, 180)


def _consonant_params(rng: np.random.Generator, kind: np.ndarray, a: dict[str, np.ndarray]) -> None:
    """Silence, nasals, fricatives and plosives (fills ``a``)."""
    for i in np.flatnonzero(kind != VOWEL):
        t = kind[i]
        # consonant "locus" formants so that transitions into vowels carry place cues
        loc = [rng.uniform(250, 500), rng.uniform(900, 2200), rng.uniform(2400, 3000), 3800.0]
        a["formants"][i] = loc
        a["bandwidths"][i] = [80, 120, 180, 250]
        if t == SIL:
            a["formants"][i] = [500, 1500, 2500, 3500]
            a["dur"][i] = 180
        elif t == NASAL:
            a["formants"][i] = [
                rng.uniform(230, 320),
                rng.uniform(900, 1400),
                rng.uniform(2000, 2700),
                3600,
            ]
            a["bandwidths"][i] = [60, 250, 300, 350]
            a["notch"][i] = [rng.uniform(700, 2000), rng.uniform(0.7, 0.95)]
            a["voice"][i] = rng.uniform(0.45, 0.65)
            a["dur"][i] = rng.uniform(50, 100)
        elif t in (VFRIC, UFRIC):
            a["band"][i] = [rng.uniform(2200, 6800), rng.uniform(500, 1800)]
            a["voice"][i] = rng.uniform(0.25, 0.4) if t == VFRIC else 0.0
            a["noise"][i] = rng.uniform(0.08, 0.25)
            a["dur"][i] = rng.uniform(70, 140)
        elif t == PLOSIVE:
            a["band"][i] = [rng.uniform(900, 5000), rng.uniform(900, 2500)]
            a["voice"][i] = rng.uniform(0.0, 0.5)  # > 0: a voice bar in the closure, then voicing
            a["noise"][i] = rng.uniform(0.3, 0.5)
            a["dur"][i] = rng.uniform(45, 90)


def _phonotactics(rng: np.random.Generator, kind: np.ndarray) -> np.ndarray:
    """Transition matrix: each phone has a few likely successors; consonants prefer vowels and
    vice versa."""
    p = len(kind)
    n = p - 1
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
    return trans


def make_inventory(seed: int, num_phones: int) -> Inventory:
    """Phone inventory and phonotactics, a function of (seed, num_phones) only."""
    rng = rng_for(seed, 11, num_phones)
    p = num_phones
    kind = _phone_kinds(rng, p)
    a = {
        "formants": np.zeros((p, 4)),
        "bandwidths": np.zeros((p, 4)),
        "voice": np.zeros(p),
        "noise": np.zeros(p),
        "band": np.tile([1500.0, 1500.0], (p, 1)),
        "notch": np.tile([1000.0, 0.0], (p, 1)),
        "dur": np.zeros(p),
    }
    _vowel_params(rng, kind, a)
    _consonant_params(rng, kind, a)
    trans = _phonotactics(rng, kind)
    return Inventory(
        kind,
        a["formants"],
        a["bandwidths"],
        a["voice"],
        a["noise"],
        a["band"],
        a["notch"],
        a["dur"],
        trans,
    )


def make_speaker(seed: int, index: int, num_phones: int) -> Speaker:
    rng = rng_for(seed, 22, index)
    u = rng.uniform()
    f0 = float(np.exp(np.log(90.0) + u * (np.log(250.0) - np.log(90.0))))
    scale = float(0.85 + 0.35 * np.clip(u + rng.normal(0, 0.2), 0, 1))
    return Speaker(
        sid=str(1000 + index),
        f0=f0,
        scale=scale,
        rolloff=float(rng.uniform(120, 400)),
        breath=float(rng.uniform(0.003, 0.02)),
        rate=float(rng.uniform(0.85, 1.15)),
        phone_warp=rng.normal(0, 0.07, (num_phones, 4)),
    )
