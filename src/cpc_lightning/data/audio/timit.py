"""TIMIT: time-aligned phones (``.phn``) on read speech, in two layouts.

- NLTK sample: ``<root>/dr<N>-<spk>/<sent>.wav`` (+ ``.phn``, ``.wrd``, ``.txt``), e.g.
  ``dr1-fvmh0/sa1.wav``; no official split.
- LDC (full corpus): ``<root>/TRAIN|TEST/DR<N>/<SPK>/<SENT>.WAV`` with NIST SPHERE headers (read by
  soundfile) and ``<SENT>.PHN``; the ``TRAIN``/``TEST`` folders are the official,
  speaker-disjoint split. Names are matched case-insensitively.

``.phn`` lines are ``<start> <end> <phone>`` in samples at the file's rate. The 61 TIMIT symbols
are folded by ``phone_map`` (Lee and Hon's 61 -> 39 table in ``conf/data/timit.yaml``; a symbol
mapped to null, e.g. ``q``, is dropped). Each utterance gets:

- ``phones``: one folded label per 10 ms frame, frame ``t`` = the phone at the centre
  (sample ``160 t + 200`` at 16 kHz) of its 25 ms window, ``IGNORE_INDEX`` where a dropped phone
  lies (the CPC label convention, so every frame task works unchanged);
- ``phone_seq``: the folded phone sequence with repeats merged (phone recognition);
- ``segments``: ``(onset s, offset s, phone)`` tokens for ABX items: a closure directly followed
  by its release is one token with the release's phone (``tcl t`` -> ``t``), others fold as
  above, repeats merged;
- ``speaker`` (``fvmh0``: sex letter + speaker code), ``meta`` ``sex`` and ``dialect``
  (``dr1``..``dr8``), and optionally the utterance class ``label`` (``sex`` or ``dialect``).

Sentences ``sa1``/``sa2`` are read by every speaker: they stay on the training side of any split.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cpc_lightning.data import IGNORE_INDEX
from cpc_lightning.data.audio.datamodules import AudioDataModule
from cpc_lightning.data.audio.frames import LABEL_HOP, LABEL_WINDOW, expected_phone_frames
from cpc_lightning.data.audio.labels import SplitRule
from cpc_lightning.data.audio.layouts import apply_split
from cpc_lightning.data.audio.manifest import (
    Layout,
    LayoutRecords,
    ProbedFiles,
    Utterance,
)
from cpc_lightning.data.audio.probe import scan_tree
from cpc_lightning.data.audio.settings import plain
from cpc_lightning.data.paths import resolve_root

_SPEAKER = r"(?P<speaker>[fm][a-z]{3}\d)"
_SENTENCE = r"(?P<sentence>s[aix]\d+)"
NLTK_NAME = re.compile(rf"^(?P<dialect>dr\d)-{_SPEAKER}/{_SENTENCE}\.wav$", re.IGNORECASE)
LDC_NAME = re.compile(
    rf"^(?P<set>train|test)/(?P<dialect>dr\d)/{_SPEAKER}/{_SENTENCE}\.wav$", re.IGNORECASE
)
#: Closure -> the releases it belongs to (merged into one ABX token).
RELEASES = {
    "bcl": ("b",),
    "dcl": ("d", "jh"),
    "gcl": ("g",),
    "pcl": ("p",),
    "tcl": ("t", "ch"),
    "kcl": ("k",),
}
#: Sentences every speaker reads (kept on the training side of a split).
SHARED_SENTENCES = r"(^|/)sa\d+$"
LABELS = ("sex", "dialect")


def read_phn(path: Path) -> list[tuple[int, int, str]]:
    """``(start, end, symbol)`` sample spans of a TIMIT ``.phn`` file."""
    out = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3 or not (parts[0].isdigit() and parts[1].isdigit()):
            raise ValueError(f"{path}:{lineno}: expected '<start> <end> <phone>', got {line!r}")
        start, end = int(parts[0]), int(parts[1])
        if end < start:
            raise ValueError(f"{path}:{lineno}: segment ends ({end}) before it starts ({start})")
        out.append((start, end, parts[2].lower()))
    if not out:
        raise ValueError(f"{path} holds no phone segments")
    return out


@dataclass
class Alignment:
    """An utterance's folded alignment: label-frame ids, phone sequence, time segments."""

    frames: np.ndarray
    sequence: list[int]
    segments: list[tuple[float, float, str]]


def fold(
    spans: Sequence[tuple[int, int, str]],
    path: Path,
    phone_map: Mapping[str, str | None],
    phone_ids: Mapping[str, int],
    file_frames: int,
    file_rate: int,
    sample_rate: int,
) -> Alignment:
    """Fold a ``.phn`` alignment (sample spans at ``file_rate``) onto the 10 ms label grid."""
    folded: list[tuple[int, int, str]] = []
    for start, end, symbol in spans:
        if symbol not in phone_map:
            raise ValueError(
                f"{path}: unknown phone symbol {symbol!r} (data.phone_map has "
                f"{len(phone_map)} TIMIT symbols); add it to data.phone_map"
            )
        if end > file_frames:
            raise ValueError(
                f"{path}: the segment {start}-{end} {symbol!r} ends past the end of the audio "
                f"({file_frames} samples); the alignment does not belong to this file"
            )
        name = phone_map[symbol]
        if name is not None:
            folded.append((start, end, name))
    labels = np.full(file_frames, IGNORE_INDEX, dtype=np.int16)
    for start, end, name in folded:
        labels[start:end] = phone_ids[name]
    scale = file_rate / sample_rate
    n = expected_phone_frames(round(file_frames / scale))
    centres = np.minimum(
        ((np.arange(n) * LABEL_HOP + LABEL_WINDOW // 2) * scale).astype(np.int64), file_frames - 1
    )
    tokens = _merge_repeats(_tokens(spans, phone_map))
    return Alignment(
        labels[centres] if n else np.zeros(0, np.int16),
        [phone_ids[name] for _, _, name in _merge_repeats(folded)],
        [(s / file_rate, e / file_rate, name) for s, e, name in tokens],
    )


def _tokens(
    spans: Sequence[tuple[int, int, str]], phone_map: Mapping[str, str | None]
) -> list[tuple[int, int, str]]:
    """Folded spans with each closure merged into the release that follows it."""
    out: list[tuple[int, int, str]] = []
    pending: int | None = None  # start of a closure waiting for its release
    for k, (start, end, symbol) in enumerate(spans):
        nxt = spans[k + 1][2] if k + 1 < len(spans) else None
        if symbol in RELEASES and nxt in RELEASES[symbol]:
            pending = start
            continue
        name = phone_map[symbol]
        if name is not None:
            out.append((start if pending is None else pending, end, name))
        pending = None
    return out


def _merge_repeats(spans: Sequence[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    merged: list[tuple[int, int, str]] = []
    for start, end, name in spans:
        if merged and merged[-1][2] == name:
            merged[-1] = (merged[-1][0], end, name)
        else:
            merged.append((start, end, name))
    return merged


@dataclass
class TimitLayout:
    """TIMIT in the NLTK sample or the LDC layout (see the module docstring)."""

    phone_map: dict[str, str | None] = field(default_factory=dict)
    phones: list[str] = field(default_factory=list)
    label: str | None = None
    split: SplitRule = field(default_factory=SplitRule)

    def __post_init__(self) -> None:
        unknown = sorted({v for v in self.phone_map.values() if v} - set(self.phones))
        if unknown:
            raise ValueError(
                f"data.phone_map folds to {unknown}, which are not in data.phones; list them there"
            )
        if self.label is not None and self.label not in LABELS:
            raise ValueError(f"data.label={self.label!r} must be null, sex or dialect")

    def expected(self, root: Path) -> str:
        return "dr<N>-<speaker>/<sentence>.wav (NLTK) or TRAIN|TEST/DR<N>/<SPK>/<SENT>.WAV (LDC)"

    def scan(self, root: Path) -> dict[str, tuple[int, int]]:
        files = scan_tree(root, ["wav"])
        return {r: s for r, s in files.items() if NLTK_NAME.match(r) or LDC_NAME.match(r)}

    def side_files(self, root: Path) -> list[Path]:
        return []

    def records(self, probed: ProbedFiles) -> LayoutRecords:
        ids = {name: i for i, name in enumerate(self.phones)}
        records, official = [], {}
        for rel in probed.files:
            m = NLTK_NAME.match(rel) or LDC_NAME.match(rel)
            assert m is not None
            g = {k: v.lower() for k, v in m.groupdict().items() if v}
            uid = rel.rsplit(".", 1)[0]
            rec = probed.utterance(rel, uid, speaker=g["speaker"])
            rec.meta = {"sex": g["speaker"][0], "dialect": g["dialect"]}
            rec.label = rec.meta[self.label] if self.label else None
            self._attach(rec, probed.root / rel, ids, probed.sample_rate)
            records.append(rec)
            if "set" in g:
                official[uid] = g["set"]
        apply_split(records, self._rule(records, official), probed.root)
        return LayoutRecords(records)

    def _attach(self, rec: Utterance, wav: Path, ids: Mapping[str, int], sample_rate: int) -> None:
        phn = next(
            (wav.with_suffix(s) for s in (".phn", ".PHN") if wav.with_suffix(s).is_file()), None
        )
        if phn is None:
            raise ValueError(
                f"{wav}: no phone alignment {wav.with_suffix('.phn').name} next to it "
                "(TIMIT needs <sentence>.phn beside each <sentence>.wav)"
            )
        a = fold(
            read_phn(phn),
            phn,
            self.phone_map,
            ids,
            rec.file_frames,
            rec.file_sample_rate,
            sample_rate,
        )
        rec.phones, rec.phone_seq, rec.segments = a.frames, a.sequence, a.segments

    def _rule(self, records: list[Utterance], official: dict[str, str]) -> SplitRule:
        """Speaker-disjoint: listed speakers, else LDC's TRAIN/TEST, else a seeded count."""
        rule = SplitRule(**{**self.split.key(), "keep_together": SHARED_SENTENCES})
        if rule.test_pattern or rule.test_speakers:
            return rule
        if official and len(set(official.values())) == 2:
            held = {u for u, s in official.items() if s == "test"}
            return SplitRule(
                test_ids=held,
                keep_together=SHARED_SENTENCES,
                exclude_speakers=rule.exclude_speakers,
            )
        if not rule.num_test_speakers:
            raise ValueError(
                "TIMIT needs a speaker-disjoint split: set data.test_speakers=[...] or "
                "data.test_speakers=null data.num_test_speakers=<n> (the NLTK sample has no "
                "official TRAIN/TEST folders)"
            )
        return rule


class TimitDataModule(AudioDataModule):
    """``data=timit``: frame phones (39 folded classes), phone sequences, ABX segments,
    speaker / sex / dialect labels, a speaker-disjoint split (see the module docstring)."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        phone_map: Mapping[str, Any],
        phones: Sequence[str],
        label: str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("num_phones", len(phones))
        super().__init__(**kwargs)
        self.root = resolve_root(root)
        self.phone_names = [str(p) for p in plain(phones)]
        mapping = {
            str(k).lower(): (None if v is None else str(v)) for k, v in plain(phone_map).items()
        }
        self._layout = TimitLayout(mapping, self.phone_names, label, self.split_rule)

    def layout(self) -> Layout:
        return self._layout
