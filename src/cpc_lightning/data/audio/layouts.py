"""Corpus layouts feeding :func:`cpc_lightning.data.audio.manifest.build_manifest`.

``LibriSpeechLayout``  ``<root>/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<n>.flac`` with
                       optional ``.trans.txt``, CPC phone labels ``converted_aligned_phones.txt``
                       and ``train_split.txt`` / ``test_split.txt`` (the synthetic corpus is
                       written in this layout).
``FolderLayout``       any tree of wav/flac/ogg files; labels and speakers from a regex on the
                       relative path.

Each layout is a dataclass: its fields (with the split rule) are what its cached manifest is
keyed by.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cpc_lightning.data.audio.frames import expected_phone_frames
from cpc_lightning.data.audio.labels import (
    SplitRule,
    compile_pattern,
    load_phones,
    read_id_list,
)
from cpc_lightning.data.audio.manifest import (
    AUDIO_EXTENSIONS,
    LayoutRecords,
    ProbedFiles,
    Utterance,
)
from cpc_lightning.data.audio.probe import scan_tree
from cpc_lightning.data.paths import resolve_root

log = logging.getLogger(__name__)

_LIBRI_NAME = re.compile(r"^(\d+)-(\d+)-(\d+)\.flac$")


def apply_split(records: list[Utterance], rule: SplitRule, root: Path) -> None:
    """Mark ``records`` as ``train``, ``test`` or ``excluded`` by ``rule``."""
    held, excluded = rule.held_out(records, root)
    for r in records:
        r.split = "test" if r.uid in held else "excluded" if r.uid in excluded else "train"


def _side_file(root: Path, given: str | None, default_name: str) -> Path | None:
    """A given label/split file (must exist) or ``<root>/<default_name>`` when present."""
    if given is not None:
        p = Path(os.path.expanduser(given))
        p = p if p.is_absolute() else resolve_root(given, "a label/split file")
        if not p.exists():
            raise FileNotFoundError(
                f"{p} does not exist (given as a phone/split file); fix the path"
            )
        return p
    p = root / default_name
    return p if p.exists() else None


@dataclass
class LibriSpeechLayout:
    """LibriSpeech folders plus the CPC paper's phone labels and split files."""

    subsets: list[str] | None = None
    phones_file: str | None = None
    train_split_file: str | None = None
    test_split_file: str | None = None
    phone_tolerance: int = 0
    split: SplitRule = field(default_factory=SplitRule)

    def expected(self, root: Path) -> str:
        return "<root>/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<n>.flac"

    def _subsets(self, root: Path) -> list[str]:
        found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if self.subsets is None:
            return found
        for s in self.subsets:
            if not (root / s).is_dir():
                raise FileNotFoundError(
                    f"LibriSpeech subset folder {root / s} does not exist "
                    f"(data.subsets={self.subsets}); found: {found}"
                )
        return list(self.subsets)

    def scan(self, root: Path) -> dict[str, tuple[int, int]]:
        stats = scan_tree(root, ["flac"], self._subsets(root))
        return {
            r: s
            for r, s in stats.items()
            if r.count("/") == 3 and _LIBRI_NAME.match(r.rsplit("/", 1)[1])
        }

    def _files(self, root: Path) -> tuple[Path | None, Path | None, Path | None]:
        return (
            _side_file(root, self.phones_file, "converted_aligned_phones.txt"),
            _side_file(root, self.train_split_file, "train_split.txt"),
            _side_file(root, self.test_split_file, "test_split.txt"),
        )

    def side_files(self, root: Path) -> list[Path]:
        return [p for p in self._files(root) if p is not None]

    def records(self, probed: ProbedFiles) -> LayoutRecords:
        root = probed.root
        records = []
        for rel in probed.files:
            parts = rel.split("/")
            records.append(probed.utterance(rel, parts[3][: -len(".flac")], speaker=parts[1]))
        _read_transcripts(records)
        phones_path, train_path, test_path = self._files(root)
        phones = load_phones(phones_path, probed.cache_dir, probed.write) if phones_path else {}
        missing = self._attach_phones(records, phones)
        uids = {r.uid for r in records}
        problems = []
        if phones_path and phones and len(missing) == len(phones):
            problems.append(
                _matches_no_audio(
                    "phone labels",
                    phones_path,
                    set(phones),
                    records,
                    root,
                    self.phones_file,
                    "training goes on without phone labels (no phones probe)",
                )
            )
        ids = {}
        for kind, path, given in (
            ("test split", test_path, self.test_split_file),
            ("train split", train_path, self.train_split_file),
        ):
            listed = read_id_list(path) if path else None
            if listed and not listed & uids:
                problems.append(
                    _matches_no_audio(
                        kind,
                        path,
                        listed,
                        records,
                        root,
                        given,
                        "it is ignored (the held-out split falls back to data.test_fraction)",
                    )
                )
                listed = None
            ids[kind] = listed
        rule = self.split
        if not (rule.test_pattern or rule.test_speakers or rule.num_test_speakers):
            rule = SplitRule(
                **{**rule.key(), "test_pattern": None},
                test_ids=ids["test split"],
                train_ids=ids["train split"],
            )
        apply_split(records, rule, root)
        return LayoutRecords(records, missing, label_problems=problems)

    def _attach_phones(self, records: list[Utterance], phones: dict[str, np.ndarray]) -> list[str]:
        """Give each record its label frames (checked against its length); ids without audio."""
        by_uid = {r.uid: r for r in records}
        for uid, values in phones.items():
            r = by_uid.get(uid)
            if r is None:
                continue
            expected = expected_phone_frames(r.num_samples)
            if abs(len(values) - expected) > self.phone_tolerance:
                raise ValueError(
                    f"phone labels of utterance {uid} have {len(values)} frames but its audio "
                    f"({r.num_samples} samples, {r.path}) gives {expected} = "
                    "floor((samples-400)/160)+1; the label file does not belong to this audio"
                )
            r.phones = values
        return sorted(u for u in phones if u not in by_uid)


def _matches_no_audio(
    kind: str,
    path: Path,
    ids: set[str],
    records: list[Utterance],
    root: Path,
    given: str | None,
    otherwise: str,
) -> str:
    """The message for a label/split file none of whose ids has audio: an error when the file
    was named in the config (``given``: the user needs it), else the warning's text."""
    text = (
        f"none of the {len(ids)} utterance ids of the {kind} file {path} (e.g. "
        f"{min(ids)!r}) has audio under {root} (whose ids look like {records[0].uid!r})"
    )
    if given is not None:
        raise ValueError(f"{text}: it does not belong to this corpus; fix data.root or the file")
    return f"{text}: {otherwise}"


def _read_transcripts(records: list[Utterance]) -> None:
    """LibriSpeech ``<speaker>-<chapter>.trans.txt`` next to the audio -> ``record.text``."""
    texts: dict[str, str] = {}
    for d, chapter in {(r.path.rsplit("/", 1)[0], r.uid.rsplit("-", 1)[0]) for r in records}:
        trans = f"{d}/{chapter}.trans.txt"
        if os.path.exists(trans):
            with open(trans) as f:
                for line in f:
                    k, _, v = line.rstrip("\n").partition(" ")
                    texts[k] = v
    for r in records:
        r.text = texts.get(r.uid)


@dataclass
class FolderLayout:
    """Any folder of audio files; ``pattern`` (regex on the relative path, named groups
    ``label`` and/or ``speaker``) labels them; files it does not match are skipped."""

    extensions: list[str] = field(default_factory=lambda: list(AUDIO_EXTENSIONS))
    pattern: str | None = None
    split: SplitRule = field(default_factory=SplitRule)

    def expected(self, root: Path) -> str:
        return "any file matching **/*.{" + ",".join(self.extensions) + "}"

    def scan(self, root: Path) -> dict[str, tuple[int, int]]:
        return scan_tree(root, self.extensions)

    def side_files(self, root: Path) -> list[Path]:
        return []

    def _pattern(self) -> re.Pattern[str] | None:
        rx = compile_pattern(self.pattern, "data.pattern")
        if rx is not None and not ({"label", "speaker"} & set(rx.groupindex)):
            raise ValueError(
                f"data.pattern {self.pattern!r} has no named group 'label' or 'speaker'; "
                r"write e.g. '(?P<label>\d)_(?P<speaker>[a-z]+)_\d+\.wav'"
            )
        return rx

    def records(self, probed: ProbedFiles) -> LayoutRecords:
        root, rx = probed.root, self._pattern()
        records, unmatched = [], 0
        for rel in probed.files:
            groups: dict[str, str | None] = {}
            if rx is not None:
                m = rx.search(rel)
                if m is None:
                    unmatched += 1
                    continue
                groups = m.groupdict()
            uid = rel.rsplit(".", 1)[0]
            records.append(
                probed.utterance(rel, uid, speaker=groups.get("speaker"), label=groups.get("label"))
            )
        if unmatched:
            log.info(
                "%d files under %s do not match data.pattern and were skipped", unmatched, root
            )
        if not records:
            raise ValueError(
                f"no file under {root} matches data.pattern {self.pattern!r} (relative paths look "
                f"like {next(iter(probed.files))!r})"
            )
        apply_split(records, self.split, root)
        return LayoutRecords(records, [], unmatched)
