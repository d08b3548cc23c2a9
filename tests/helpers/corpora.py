"""Small corpora written on the fly in the layouts the data modules read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

SPEAKERS = [("dr1", "fabc0"), ("dr1", "mdef0"), ("dr2", "fghi0"), ("dr2", "mjkl0")]
SENTENCES = ("sa1", "sx12", "si345")


def phn_lines(n: int) -> str:
    """h# | sh | ix (folds to ih) | q (dropped) | tcl (folds to sil) | ax-h (ah) | h#."""
    cuts = [0, 2000, 2600, 3400, 3500, 4000, 4800, n]
    names = ["h#", "sh", "ix", "q", "tcl", "ax-h", "h#"]
    return "".join(f"{a} {b} {p}\n" for a, b, p in zip(cuts[:-1], cuts[1:], names, strict=True))


def minimal_pair_lines(n: int, sentence: int) -> str:
    """h#, then ``X ix`` three times, then h#; X = sh | s | f by sentence: every speaker says
    X in the context (ih, ih) twice per sentence, and the sentences differ only in X (ABX)."""
    x = ("sh", "s", "f")[sentence % 3]
    cuts = np.linspace(0, n, 9).astype(int).tolist()
    names = ["h#", x, "ix", x, "ix", x, "ix", "h#"]
    return "".join(f"{a} {b} {p}\n" for a, b, p in zip(cuts[:-1], cuts[1:], names, strict=True))


def write_utt(wav: Path, n: int, nist: bool, phn: str | None = None) -> None:
    wav.parent.mkdir(parents=True, exist_ok=True)
    x = (np.random.default_rng(len(str(wav))).standard_normal(n) * 3000).astype(np.int16)
    if nist:
        sf.write(wav, x, 16000, format="NIST", subtype="PCM_16")
    else:
        sf.write(wav, x, 16000, subtype="PCM_16")
    suffix = ".PHN" if wav.suffix == ".WAV" else ".phn"
    wav.with_suffix(suffix).write_text(phn if phn is not None else phn_lines(n))


def nltk_tree(root: Path, n: int = 6400, minimal_pairs: bool = False) -> Path:
    """TIMIT's NLTK sample layout: 4 speakers x 3 sentences (``phn_lines`` alignments, or
    ``minimal_pair_lines`` ones for ABX)."""
    for dr, spk in SPEAKERS:
        for k, sent in enumerate(SENTENCES):
            phn = minimal_pair_lines(n, k) if minimal_pairs else None
            write_utt(root / f"{dr}-{spk}" / f"{sent}.wav", n, nist=False, phn=phn)
    return root


def ldc_tree(root: Path, n: int = 6400) -> Path:
    for i, (dr, spk) in enumerate(SPEAKERS):
        part = "TEST" if i % 2 else "TRAIN"
        for sent in SENTENCES:
            write_utt(root / part / dr.upper() / spk.upper() / f"{sent.upper()}.WAV", n, True)
    return root
