"""speechocean762 (Kaldi-style metadata): ``<root>/<speaker>/<utterance>.flac`` plus ``text``,
``utt2spk``, ``spk2gender``, ``spk2age`` and ``text-phone`` (canonical phones per word, no timing).

``text-phone`` lines are ``<utt>.<word index>\\t<phones>`` with phones such as ``W_B IY0_E``: the
position suffix (``_B _I _E _S``) and the stress digit are stripped by default, leaving the 39
ARPAbet classes of ``conf/data/speechocean762.yaml``. Each utterance gets ``phone_seq`` (its
words' phones in order, for phone recognition), ``text``, the speaker, and ``meta`` ``sex`` and
``age`` (``label=sex`` makes the sex the utterance class).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cpc_lightning.data.audio.datamodules import AudioDataModule
from cpc_lightning.data.audio.labels import SplitRule
from cpc_lightning.data.audio.layouts import apply_split
from cpc_lightning.data.audio.manifest import Layout, LayoutRecords, ProbedFiles
from cpc_lightning.data.audio.probe import scan_tree
from cpc_lightning.data.audio.settings import plain
from cpc_lightning.data.paths import resolve_root

log = logging.getLogger(__name__)

FILE_NAME = re.compile(r"^(?P<speaker>\d{4})/(?P<utt>\d{9})\.(flac|wav)$")
_MARKS = re.compile(r"(_[BIES])?$")
_STRESS = re.compile(r"\d$")
LABELS = ("sex", "age")


def read_kaldi_map(path: Path) -> dict[str, str]:
    """``<key> <value...>`` lines (tab or space separated) -> dict (empty if the file is absent)."""
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        key, _, value = (
            line.strip().partition("\t") if "\t" in line else line.strip().partition(" ")
        )
        if key:
            out[key] = value.strip()
    return out


def clean_phone(token: str, strip_stress: bool, strip_position: bool) -> str:
    """``IY0_E`` -> ``IY`` (by default)."""
    if strip_position:
        token = _MARKS.sub("", token)
    if strip_stress:
        token = _STRESS.sub("", token)
    return token


def read_text_phone(
    path: Path, phones: Sequence[str], strip_stress: bool = True, strip_position: bool = True
) -> dict[str, list[int]]:
    """Utterance id -> phone ids of its words in order, from ``text-phone``."""
    ids = {p: i for i, p in enumerate(phones)}
    words: dict[str, list[tuple[int, list[int]]]] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        key, _, value = line.partition("\t")
        utt, _, index = key.strip().rpartition(".")
        if not utt or not index.isdigit():
            raise ValueError(f"{path}:{lineno}: expected '<utt>.<word index>\\t<phones>'")
        seq = []
        for token in value.split():
            name = clean_phone(token, strip_stress, strip_position)
            if name not in ids:
                raise ValueError(
                    f"{path}:{lineno}: phone {token!r} ({name!r}) is not in data.phones; add it "
                    "there or keep data.strip_stress / data.strip_position on"
                )
            seq.append(ids[name])
        words.setdefault(utt, []).append((int(index), seq))
    return {u: [p for _, seq in sorted(w) for p in seq] for u, w in words.items()}


@dataclass
class SpeechoceanLayout:
    """speechocean762's folders and Kaldi metadata (see the module docstring)."""

    phones: list[str] = field(default_factory=list)
    strip_stress: bool = True
    strip_position: bool = True
    label: str | None = None
    split: SplitRule = field(default_factory=SplitRule)

    def __post_init__(self) -> None:
        if self.label is not None and self.label not in LABELS:
            raise ValueError(f"data.label={self.label!r} must be null, sex or age")

    def expected(self, root: Path) -> str:
        return "<speaker:4 digits>/<utterance:9 digits>.flac with text-phone, utt2spk in root"

    def scan(self, root: Path) -> dict[str, tuple[int, int]]:
        return {r: s for r, s in scan_tree(root, ["flac", "wav"]).items() if FILE_NAME.match(r)}

    def side_files(self, root: Path) -> list[Path]:
        return [root / n for n in ("text-phone", "text", "utt2spk", "spk2gender", "spk2age")]

    def records(self, probed: ProbedFiles) -> LayoutRecords:
        root, rule = probed.root, self.split
        text_phone = root / "text-phone"
        if not text_phone.is_file():
            raise FileNotFoundError(f"{text_phone} is missing: speechocean762 needs its text-phone")
        seqs = read_text_phone(text_phone, self.phones, self.strip_stress, self.strip_position)
        texts, utt2spk = read_kaldi_map(root / "text"), read_kaldi_map(root / "utt2spk")
        sex, age = read_kaldi_map(root / "spk2gender"), read_kaldi_map(root / "spk2age")
        records = []
        for rel in probed.files:
            m = FILE_NAME.match(rel)
            assert m is not None
            utt, spk = m["utt"], m["speaker"]
            if utt2spk.get(utt, spk) != spk:
                raise ValueError(
                    f"{root / rel}: utt2spk says speaker {utt2spk[utt]}, the folder says {spk}"
                )
            rec = probed.utterance(rel, utt, speaker=spk)
            rec.text, rec.phone_seq = texts.get(utt), seqs.get(utt)
            rec.meta = {k: v for k, v in (("sex", sex.get(spk)), ("age", age.get(spk))) if v}
            rec.label = rec.meta.get(self.label) if self.label else None
            records.append(rec)
        missing = sorted(u for u in seqs if u not in {r.uid for r in records})
        without = sum(r.phone_seq is None for r in records)
        if without:
            log.warning("%d utterances under %s have no text-phone entry", without, root)
        apply_split(records, rule, root)
        return LayoutRecords(records, missing)


class SpeechoceanDataModule(AudioDataModule):
    """``data=speechocean762``: speaker labels, per-utterance phone sequences, a speaker-disjoint
    held-out split (``num_test_speakers`` or ``test_speakers``; ``num_test_speakers=null`` gives
    a seeded utterance split with ``test_fraction``, which a speaker-identification probe needs:
    its test speakers must also be in training)."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        phones: Sequence[str],
        strip_stress: bool = True,
        strip_position: bool = True,
        label: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.root = resolve_root(root)
        self.phone_names = [str(p) for p in plain(phones)]
        self._layout = SpeechoceanLayout(
            self.phone_names, bool(strip_stress), bool(strip_position), label, self.split_rule
        )

    def layout(self) -> Layout:
        return self._layout
