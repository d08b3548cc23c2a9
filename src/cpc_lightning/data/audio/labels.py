"""Side files of a corpus: CPC phone labels, utterance-id lists, and the held-out split rule."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from cpc_lightning.data.audio.manifest import Utterance


def read_phone_file(path: Path) -> dict[str, np.ndarray]:
    """Parse a CPC ``converted_aligned_phones.txt``: ``utt_id p1 p2 ...`` -> int16 arrays."""
    out: dict[str, np.ndarray] = {}
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split(maxsplit=1)
            if not parts:
                continue
            try:
                values = np.array(parts[1].split() if len(parts) > 1 else [], dtype=np.int16)
            except ValueError as err:
                raise ValueError(f"{path}:{lineno}: phone labels must be integers ({err})") from err
            out[parts[0]] = values
    return out


def load_phones(path: Path, cache_dir: Path | None, write: bool) -> dict[str, np.ndarray]:
    """Phone labels from ``path``, via an ``.npz`` cache keyed by path, mtime and size."""
    st = path.stat()
    tag = hashlib.sha1(f"{path}|{st.st_mtime_ns}|{st.st_size}".encode()).hexdigest()[:16]
    cache = cache_dir / f"phones-{tag}.npz" if cache_dir is not None else None
    if cache is not None and cache.exists():
        with np.load(cache) as z:
            ids, offsets, values = z["ids"], z["offsets"], z["values"]
        return {str(u): values[offsets[i] : offsets[i + 1]] for i, u in enumerate(ids)}
    phones = read_phone_file(path)
    if write and cache is not None:
        ids = np.array(list(phones), dtype=str)
        lens = np.array([len(v) for v in phones.values()], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lens)])
        values = np.concatenate(list(phones.values())) if phones else np.zeros(0, np.int16)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + f".{os.getpid()}.tmp.npz")
        np.savez(tmp, ids=ids, offsets=offsets, values=values)
        os.replace(tmp, cache)
    return phones


def read_id_list(path: Path) -> set[str]:
    """Whitespace-separated utterance ids (CPC's ``train_split.txt`` / ``test_split.txt``)."""
    return {t for t in path.read_text().split() if t}


def compile_pattern(pattern: str | None, key: str) -> re.Pattern[str] | None:
    """``re.compile`` with an error naming the config key and the fix."""
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as err:
        raise ValueError(
            f"{key}={pattern!r} is not a valid regular expression ({err}); fix the regex "
            f"(on the command line, quote it: {key}='...')"
        ) from err


@dataclass
class SplitRule:
    """Which utterances form the held-out ``test`` split, in this order of precedence:

    ``test_pattern`` (regex on the path relative to root), ``test_speakers`` (listed speakers),
    ``num_test_speakers`` (a seeded choice of speakers), ``test_ids`` / ``train_ids`` (id lists,
    e.g. CPC's split files), else a seeded ``test_fraction`` of the utterances. The speaker rules
    are speaker-disjoint; ``keep_together`` (regex on the uid, e.g. TIMIT's ``sa`` sentences,
    read by every speaker) keeps matching texts on the training side only: the held-out
    utterances that match are excluded from both splits (so test speakers stay unseen).
    ``exclude_speakers``: these speakers' utterances are in neither split (e.g. a validation
    split among the training speakers only, for model selection that never sees the test ones).
    """

    test_pattern: str | None = None
    test_speakers: list[str] | None = None
    num_test_speakers: int | None = None
    test_fraction: float = 0.1
    seed: int = 0
    test_ids: set[str] | None = field(default=None, repr=False)
    train_ids: set[str] | None = field(default=None, repr=False)
    keep_together: str | None = None
    exclude_speakers: list[str] | None = None

    def key(self) -> dict:
        """What decides the split (for cache keys)."""
        return {
            "test_pattern": self.test_pattern,
            "test_speakers": self.test_speakers,
            "num_test_speakers": self.num_test_speakers,
            "test_fraction": self.test_fraction,
            "seed": self.seed,
            "keep_together": self.keep_together,
            "exclude_speakers": self.exclude_speakers,
        }

    def held_out(self, records: Sequence[Utterance], root: Path) -> tuple[set[str], set[str]]:
        """``(test uids, excluded uids)``: the held-out utterances (some, never all, when a
        pattern or speaker rule selects them) and those left out (``keep_together`` among the
        held-out ones, every utterance of ``exclude_speakers``)."""
        dropped = self._excluded(records)
        records = [r for r in records if r.uid not in dropped]
        uids = [r.uid for r in records]
        if self.test_pattern:
            rx = compile_pattern(self.test_pattern, "data.test_pattern")
            assert rx is not None
            held = {r.uid for r in records if rx.search(r.rel)}
            what = f"data.test_pattern {self.test_pattern!r}"
        elif self.test_speakers or self.num_test_speakers:
            speakers = self._test_speakers(records)
            held = {r.uid for r in records if r.speaker in speakers}
            what = "the test speakers"
        else:
            if self.test_ids is not None:
                held = self.test_ids & set(uids)
            elif self.train_ids is not None:
                held = set(uids) - self.train_ids
            else:
                held = _ratio_split(uids, self.test_fraction, self.seed)
            what = ""
        if what and (not held or len(held) == len(records)):
            raise ValueError(
                f"{what} matches {len(held)} of {len(records)} files under {root}; it must "
                "select some but not all (the held-out split)"
            )
        if not self.keep_together:
            return held, dropped
        together = re.compile(self.keep_together)
        excluded = {u for u in held if together.search(u)}
        return held - excluded, excluded | dropped

    def _excluded(self, records: Sequence[Utterance]) -> set[str]:
        if not self.exclude_speakers:
            return set()
        wanted = {str(s) for s in self.exclude_speakers}
        speakers = sorted({r.speaker for r in records if r.speaker is not None})
        unknown = sorted(wanted - set(speakers))
        if unknown:
            raise ValueError(
                f"data.exclude_speakers: {unknown} are not speakers of this corpus "
                f"(e.g. {speakers[:5]}); list existing speaker ids"
            )
        return {r.uid for r in records if r.speaker in wanted}

    def _test_speakers(self, records: Sequence[Utterance]) -> set[str]:
        speakers = sorted({r.speaker for r in records if r.speaker is not None})
        if self.test_speakers:
            wanted = {str(s) for s in self.test_speakers}
            unknown = sorted(wanted - set(speakers))
            if unknown:
                raise ValueError(
                    f"data.test_speakers: {unknown} are not speakers of this corpus "
                    f"(e.g. {speakers[:5]}); list existing speaker ids"
                )
            return wanted
        n = int(self.num_test_speakers or 0)
        if not 0 < n < len(speakers):
            raise ValueError(
                f"data.num_test_speakers={n} must be between 1 and {len(speakers) - 1} "
                f"(the corpus has {len(speakers)} speakers)"
            )
        order = np.random.default_rng(self.seed).permutation(len(speakers))
        return {speakers[i] for i in order[:n]}


def _ratio_split(uids: Sequence[str], fraction: float, seed: int) -> set[str]:
    """Seeded utterance-level held-out set (at least one when 0 < fraction and >= 2 utterances)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"data.test_fraction must be in [0, 1), got {fraction}")
    n = len(uids)
    n_test = round(n * fraction)
    if fraction > 0 and n >= 2:
        n_test = min(max(n_test, 1), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    ordered = sorted(uids)
    return {ordered[i] for i in order[:n_test]}
