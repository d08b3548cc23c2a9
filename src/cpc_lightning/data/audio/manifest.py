"""The utterance manifest: every readable audio file of a corpus with its labels and split.

:func:`build_manifest` is layout-agnostic: a :class:`Layout` (``layouts.py``: LibriSpeech, audio
folder, ...) says which files are audio and how they are labelled. File headers are probed once and
cached (``<cache_dir>/manifest-<hash>.json``), revalidated by mtime and size, so a second start
reads no audio. Knows no model.

Bad files are found while probing: unreadable ones and float files holding NaN/inf samples are
skipped with a warning naming them; a WAV whose header promises more data than the file holds
(a cut copy) is read at its real length with a warning. ``on_bad_file="error"`` turns any of
them into one error instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cpc_lightning.data import IGNORE_INDEX
from cpc_lightning.data.audio.probe import (
    AudioDataWarning,
    FileInfo,
    probe_all,
    report_bad_files,
)
from cpc_lightning.data.paths import require_dir

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = ("wav", "flac", "ogg")
MANIFEST_VERSION = 3


@dataclass
class Utterance:
    """One audio file; ``num_samples`` is its length at the corpus ``sample_rate`` (resampled).

    ``path`` is ``<root>/<rel>`` as given (symlinks inside the root are not resolved), ``rel``
    the path relative to the root (posix). ``phones``: frame labels on the 10 ms grid;
    ``phone_seq``: the utterance's phone ids in order (phone recognition); ``segments``:
    ``(onset s, offset s, phone name)`` tokens (ABX); ``meta``: other per-utterance labels of a
    layout (e.g. sex, dialect region). ``split``: ``train``, ``test`` or ``excluded``.
    """

    uid: str
    path: str
    num_samples: int
    file_frames: int
    file_sample_rate: int
    channels: int
    speaker: str | None = None
    speaker_index: int = IGNORE_INDEX
    label: str | None = None
    label_index: int = IGNORE_INDEX
    phones: np.ndarray | None = field(default=None, repr=False)
    split: str = "train"
    text: str | None = None
    stamp: str = ""  # "mtime_ns:size" of the file when indexed
    rel: str = ""
    meta: dict[str, str] = field(default_factory=dict)
    phone_seq: list[int] | None = field(default=None, repr=False)
    segments: list[tuple[float, float, str]] | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        """Serialisable form without the label arrays (``*_present`` says which exist)."""
        heavy = ("phones", "phone_seq", "segments")
        out = {k: v for k, v in asdict(self).items() if k not in (*heavy, "stamp")}
        out.update({f"{k}_present": getattr(self, k) is not None for k in heavy})
        return out


def resampled_length(frames: int, orig: int, new: int) -> int:
    """Samples of a ``frames``-long file at ``orig`` Hz once resampled to ``new`` Hz."""
    g = math.gcd(orig, new)
    return math.ceil(frames * (new // g) / (orig // g))


def make_utterance(
    root: Path, rel: str, info: FileInfo, sample_rate: int, uid: str, **labels: Any
) -> Utterance:
    """An :class:`Utterance` for the file ``root/rel`` with probed ``info``."""
    mtime, size, frames, sr, ch = info
    rec = Utterance(
        uid, f"{root}/{rel}", resampled_length(frames, sr, sample_rate), frames, sr, ch, **labels
    )
    rec.stamp, rec.rel = f"{mtime}:{size}", rel
    return rec


@dataclass
class ProbedFiles:
    """What a layout labels: the readable audio files under ``root`` with their probed info,
    the corpus sample rate, and where (and whether) side files may be cached."""

    root: Path
    files: dict[str, FileInfo]
    sample_rate: int
    cache_dir: Path | None = None
    write: bool = False

    def utterance(self, rel: str, uid: str, **labels: Any) -> Utterance:
        """The :class:`Utterance` of file ``rel``."""
        return make_utterance(self.root, rel, self.files[rel], self.sample_rate, uid, **labels)


@dataclass
class LayoutRecords:
    """What a layout derived from the probed files."""

    records: list[Utterance]
    label_ids_without_audio: list[str] = field(default_factory=list)
    unmatched: int = 0
    #: label/split files that match no audio (warned about; an error where the labels are needed)
    label_problems: list[str] = field(default_factory=list)


class Layout(Protocol):
    """A corpus layout: which files are audio, which side files count, how files are labelled."""

    def expected(self, root: Path) -> str:
        """The expected layout, for error messages."""
        ...

    def scan(self, root: Path) -> dict[str, tuple[int, int]]:
        """Relative posix path -> (mtime_ns, size) of every audio file of the layout."""
        ...

    def side_files(self, root: Path) -> list[Path]:
        """Label/split files whose change must invalidate the cached manifest."""
        ...

    def records(self, probed: ProbedFiles) -> LayoutRecords:
        """Labelled, split records of the probed files (redone at every start: cheap)."""
        ...


@dataclass
class Manifest:
    """Utterance records plus what was skipped while building them."""

    records: list[Utterance]
    corrupt: list[str] = field(default_factory=list)
    label_ids_without_audio: list[str] = field(default_factory=list)
    unmatched: int = 0
    probed: int = 0  # files whose header was read in this build (0 on a fully cached start)
    from_cache: bool = False
    truncated: list[str] = field(default_factory=list)
    label_problems: list[str] = field(default_factory=list)


def _stat_side_files(paths: Sequence[Path]) -> dict[str, list[int] | None]:
    out: dict[str, list[int] | None] = {}
    for p in paths:
        try:
            st = p.stat()
            out[str(p)] = [st.st_mtime_ns, st.st_size]
        except FileNotFoundError:
            out[str(p)] = None
    return out


def manifest_key(layout: Layout, root: Path, sample_rate: int) -> str:
    """Hash of everything that decides a manifest (names its cache file)."""
    spec = {"layout": type(layout).__name__, "root": str(root), "sample_rate": sample_rate}
    spec.update(asdict(layout))  # type: ignore[call-overload]  # layouts are dataclasses
    blob = json.dumps({**spec, "v": MANIFEST_VERSION}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _read_cache(path: Path | None) -> dict[str, Any]:
    if path is None or not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _write_cache(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, path)


def build_manifest(
    layout: Layout,
    root: Path,
    sample_rate: int,
    cache_dir: str | os.PathLike[str] | None,
    write: bool,
    on_bad_file: str = "skip",
) -> Manifest:
    """Index a corpus, reusing the cached manifest for files whose mtime and size are unchanged.

    ``write=False`` never touches the disk (used in ``setup`` on every rank); ``write=True`` saves
    the manifest (and parsed side files) under ``cache_dir``. ``on_bad_file``: ``skip`` (warn,
    leave out unreadable files) or ``error`` (one error naming the first bad file).
    """
    root = Path(root)
    require_dir(root, layout.expected(root))
    stats = layout.scan(root)
    if not stats:
        raise FileNotFoundError(
            f"no audio found under {root}: expected the layout {layout.expected(root)}"
        )
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"manifest-{manifest_key(layout, root, sample_rate)}.json"
    old = _read_cache(cache_file)
    files, corrupt, truncated, probed = probe_all(root, stats, old)
    report_bad_files(root, corrupt, truncated, on_bad_file)
    if not files:
        reason = next(iter(corrupt.values()))[2]
        raise FileNotFoundError(
            f"no readable audio under {root}: all {len(corrupt)} files are bad (e.g. "
            f"{root / next(iter(corrupt))}: {reason})"
        )
    side = _stat_side_files(layout.side_files(root))
    cache_parent = cache_file.parent if cache_file is not None else None
    derived = layout.records(ProbedFiles(root, files, sample_rate, cache_parent, write))
    for problem in derived.label_problems:
        warnings.warn(problem, AudioDataWarning, 2)
    if derived.label_ids_without_audio:
        log.info(
            "%d labelled utterance ids have no audio under %s and were skipped",
            len(derived.label_ids_without_audio),
            root,
        )
    payload = {"files": files, "corrupt": corrupt, "truncated": truncated, "side": side}
    if write and cache_file is not None and any(old.get(k) != v for k, v in payload.items()):
        records = [r.to_json() for r in derived.records]
        _write_cache(cache_file, {"version": MANIFEST_VERSION, **payload, "records": records})
    return Manifest(
        records=derived.records,
        corrupt=[str(root / r) for r in corrupt],
        label_ids_without_audio=derived.label_ids_without_audio,
        unmatched=derived.unmatched,
        probed=probed,
        from_cache=probed == 0 and bool(old),
        truncated=[str(root / r) for r in truncated],
        label_problems=list(derived.label_problems),
    )
