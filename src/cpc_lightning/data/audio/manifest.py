"""The utterance manifest: every readable audio file of a corpus with its labels and split.

:func:`build_manifest` is layout-agnostic: a :class:`Layout` (``layouts.py``: LibriSpeech, audio
folder, ...) says which files are audio and how they are labelled. File headers are probed once and
cached (``<cache_dir>/manifest-<hash>.json``), revalidated by mtime and size, so a second start
reads no audio. Knows no model.
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
import soundfile as sf

from cpc_lightning.data import IGNORE_INDEX
from cpc_lightning.data.paths import require_dir
from cpc_lightning.progress import track

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = ("wav", "flac", "ogg")
MANIFEST_VERSION = 2
#: (mtime_ns, size, frames, sample_rate, channels) of one audio file, as the cache stores it.
FileInfo = list[int]


class AudioDataWarning(UserWarning):
    """A problem with the data that was worked around (a skipped file, a resampled batch)."""


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


def scan_tree(
    root: Path, extensions: Sequence[str], subdirs: Sequence[str] | None = None
) -> dict[str, tuple[int, int]]:
    """Relative posix path -> (mtime_ns, size) of every file with one of ``extensions``
    (case-insensitive) under ``root`` (or its ``subdirs``), following symlinked folders."""
    exts = tuple("." + e.lower().lstrip(".") for e in extensions)
    out: dict[str, tuple[int, int]] = {}
    # plain strings: pathlib costs more than the stat calls on large trees
    stack = [("" if subdirs is None else s + "/") for s in (subdirs or [""])]
    base = str(root) + os.sep
    while stack:
        prefix = stack.pop()
        try:
            it = os.scandir(base + prefix)
        except FileNotFoundError:
            continue
        with it:
            for entry in it:
                if entry.is_dir(follow_symlinks=True):
                    stack.append(prefix + entry.name + "/")
                elif entry.name.lower().endswith(exts):
                    st = entry.stat()
                    out[prefix + entry.name] = (st.st_mtime_ns, st.st_size)
    return out


def probe_file(path: Path) -> tuple[int, int, int]:
    """(frames, sample_rate, channels) of a readable file; raises on corrupt or truncated audio."""
    info = sf.info(str(path))
    if info.frames <= 0 or info.samplerate <= 0:
        raise RuntimeError("no audio frames")
    with sf.SoundFile(str(path)) as f:  # read the tail: catches files truncated after the header
        tail = min(info.frames, 256)
        f.seek(info.frames - tail)
        got = f.read(tail, dtype="float32", always_2d=True).shape[0]
    if got != tail:
        raise RuntimeError(f"truncated: header says {info.frames} frames, data ends early")
    return int(info.frames), int(info.samplerate), int(info.channels)


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


def _probe_all(
    root: Path, stats: dict[str, tuple[int, int]], old: dict[str, Any]
) -> tuple[dict[str, FileInfo], dict[str, list[Any]], int]:
    """Probe the files whose (mtime, size) changed since the cached manifest ``old``."""
    old_files: dict[str, FileInfo] = old.get("files", {})
    old_corrupt: dict[str, list[Any]] = old.get("corrupt", {})
    files: dict[str, FileInfo] = {}
    corrupt: dict[str, list[Any]] = {}
    probed = 0
    for rel, (mtime, size) in track(sorted(stats.items()), f"manifest {root}", unit="file"):
        prev = old_files.get(rel)
        if prev is not None and prev[0] == mtime and prev[1] == size:
            files[rel] = prev
            continue
        prevc = old_corrupt.get(rel)
        if prevc is not None and prevc[0] == mtime and prevc[1] == size:
            corrupt[rel] = prevc
            continue
        probed += 1
        try:
            frames, sr, ch = probe_file(root / rel)
        except Exception as err:  # noqa: BLE001 - any decoder error means "unreadable"
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            corrupt[rel] = [mtime, size, reason]
            continue
        files[rel] = [mtime, size, frames, sr, ch]
    return files, corrupt, probed


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
) -> Manifest:
    """Index a corpus, reusing the cached manifest for files whose mtime and size are unchanged.

    ``write=False`` never touches the disk (used in ``setup`` on every rank); ``write=True`` saves
    the manifest (and parsed side files) under ``cache_dir``.
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
    files, corrupt, probed = _probe_all(root, stats, old)
    for rel, (_, _, reason) in corrupt.items():
        warnings.warn(f"skipping unreadable audio file {root / rel}: {reason}", AudioDataWarning, 2)
    if not files:
        raise FileNotFoundError(f"no readable audio under {root} ({len(corrupt)} unreadable files)")
    side = _stat_side_files(layout.side_files(root))
    cache_parent = cache_file.parent if cache_file is not None else None
    derived = layout.records(ProbedFiles(root, files, sample_rate, cache_parent, write))
    if corrupt:
        log.warning("%d unreadable audio files skipped under %s", len(corrupt), root)
    if derived.label_ids_without_audio:
        log.info(
            "%d labelled utterance ids have no audio under %s and were skipped",
            len(derived.label_ids_without_audio),
            root,
        )
    payload = {"files": files, "corrupt": corrupt, "side": side}
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
    )
