"""Audio corpora: a cached utterance manifest, waveform loading, random windows, batch samplers.

Layouts:
    ``librispeech``  ``<root>/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<n>.flac`` with
                     optional ``.trans.txt``, CPC phone labels ``converted_aligned_phones.txt``
                     and ``train_split.txt`` / ``test_split.txt``.
    ``folder``       any tree of wav/flac/ogg files; labels and speakers from a regex on the
                     relative path.

Phone frames follow the CPC convention at 16 kHz: 10 ms hop (160 samples), 25 ms window
(400 samples), ``frames = floor((samples - 400) / 160) + 1``. Knows no model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from torch.utils.data import Dataset, Sampler

log = logging.getLogger(__name__)

HOP = 160  # samples per 10 ms phone frame at 16 kHz
FRAME_WINDOW = 400  # samples in a 25 ms phone frame at 16 kHz
IGNORE = -100  # label value for "unknown"
AUDIO_EXTENSIONS = ("wav", "flac", "ogg")
MANIFEST_VERSION = 1
_LIBRI_NAME = re.compile(r"^(\d+)-(\d+)-(\d+)\.flac$")


class AudioDataWarning(UserWarning):
    """A problem with the data that was worked around (a skipped file, a resampled batch)."""


def expected_phone_frames(num_samples: int) -> int:
    """Number of 10 ms CPC phone frames for ``num_samples`` samples at 16 kHz (0 if too short)."""
    return max(0, (num_samples - FRAME_WINDOW) // HOP + 1)


def resolve_root(root: str | os.PathLike[str] | None, what: str = "data.root") -> Path:
    """Absolute dataset root; relative paths are taken against Hydra's original cwd when it runs."""
    if root is None or str(root) in ("", "???"):
        raise ValueError(f"{what} is required: set {what}=/path/to/dataset")
    text = os.path.expanduser(str(root))
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.utils import to_absolute_path

        if HydraConfig.initialized():
            text = to_absolute_path(text)
    except ImportError:  # pragma: no cover - hydra is a dependency
        pass
    return Path(text).resolve()


# --------------------------------------------------------------------------------------------
# Records and manifest
# --------------------------------------------------------------------------------------------


@dataclass
class Utterance:
    """One audio file; ``num_samples`` is its length at the corpus ``sample_rate`` (resampled)."""

    uid: str
    path: str
    num_samples: int
    file_frames: int
    file_sample_rate: int
    channels: int
    speaker: str | None = None
    speaker_index: int = IGNORE
    label: str | None = None
    label_index: int = IGNORE
    phones: np.ndarray | None = field(default=None, repr=False)
    split: str = "train"
    text: str | None = None
    stamp: str = ""  # "mtime_ns:size" of the file when indexed

    def to_json(self) -> dict[str, Any]:
        """Serialisable form without the phone array (``phones_present`` says whether it exists)."""
        return {
            "uid": self.uid,
            "path": self.path,
            "num_samples": self.num_samples,
            "file_frames": self.file_frames,
            "file_sample_rate": self.file_sample_rate,
            "channels": self.channels,
            "speaker": self.speaker,
            "label": self.label,
            "phones_present": self.phones is not None,
            "split": self.split,
            "text": self.text,
        }


@dataclass
class CorpusSpec:
    """Everything that decides a manifest; its hash names the cache file."""

    layout: str  # "librispeech" | "folder"
    root: str
    sample_rate: int = 16000
    subsets: list[str] | None = None
    extensions: list[str] = field(default_factory=lambda: list(AUDIO_EXTENSIONS))
    pattern: str | None = None
    test_pattern: str | None = None
    phones_file: str | None = None
    train_split_file: str | None = None
    test_split_file: str | None = None
    val_fraction: float = 0.1
    seed: int = 0
    phone_tolerance: int = 0

    def key(self) -> str:
        blob = json.dumps({**self.__dict__, "v": MANIFEST_VERSION}, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]


@dataclass
class Manifest:
    """Utterance records plus what was skipped while building them."""

    records: list[Utterance]
    corrupt: list[str] = field(default_factory=list)
    label_ids_without_audio: list[str] = field(default_factory=list)
    unmatched: int = 0
    probed: int = 0  # files whose header was read in this build (0 on a fully cached start)
    from_cache: bool = False


def _scan(
    root: Path, extensions: Sequence[str], subdirs: Sequence[str] | None
) -> dict[str, tuple[int, int]]:
    """Relative posix path -> (mtime_ns, size) for every audio file (directory walk + stat only)."""
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


def _probe(path: Path) -> tuple[int, int, int]:
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


def _stat_aux(paths: Sequence[Path | None]) -> dict[str, list[int] | None]:
    out: dict[str, list[int] | None] = {}
    for p in paths:
        if p is None:
            continue
        try:
            st = p.stat()
            out[str(p)] = [st.st_mtime_ns, st.st_size]
        except FileNotFoundError:
            out[str(p)] = None
    return out


def _ratio_split(uids: Sequence[str], val_fraction: float, seed: int) -> set[str]:
    """Seeded utterance-level held-out set (at least one when 0 < fraction and >= 2 utterances)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
    n = len(uids)
    n_val = round(n * val_fraction)
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    ordered = sorted(uids)
    return {ordered[i] for i in order[:n_val]}


def _read_id_list(path: Path) -> set[str]:
    return {t for t in path.read_text().split() if t}


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


def _optional_file(root: Path, given: str | None, default_name: str) -> Path | None:
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


def build_manifest(
    spec: CorpusSpec, cache_dir: str | os.PathLike[str] | None, write: bool
) -> Manifest:
    """Index a corpus, reusing the cached manifest for files whose mtime and size are unchanged.

    ``write=False`` never touches the disk (used in ``setup`` on every rank); ``write=True`` saves
    the manifest (and the parsed phone labels) under ``cache_dir``.
    """
    root = Path(spec.root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"data.root {root} does not exist or is not a directory; "
            "set data.root to the dataset folder"
        )
    if spec.layout == "librispeech":
        subsets = spec.subsets
        if subsets is None:
            subsets = sorted(
                d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")
            )
        else:
            for s in subsets:
                if not (root / s).is_dir():
                    raise FileNotFoundError(
                        f"LibriSpeech subset folder {root / s} does not exist "
                        f"(data.subsets={subsets}); "
                        f"found: {sorted(d.name for d in root.iterdir() if d.is_dir())}"
                    )
        stats = _scan(root, ["flac"], subsets)
        layout_msg = "<root>/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<n>.flac"
        stats = {
            r: s
            for r, s in stats.items()
            if r.count("/") == 3 and _LIBRI_NAME.match(r.rsplit("/", 1)[1])
        }
        phones_path = _optional_file(root, spec.phones_file, "converted_aligned_phones.txt")
        train_path = _optional_file(root, spec.train_split_file, "train_split.txt")
        test_path = _optional_file(root, spec.test_split_file, "test_split.txt")
    elif spec.layout == "folder":
        stats = _scan(root, spec.extensions, None)
        layout_msg = "any file matching **/*.{" + ",".join(spec.extensions) + "}"
        phones_path = train_path = test_path = None
    else:
        raise ValueError(f"unknown layout {spec.layout!r}; expected 'librispeech' or 'folder'")
    if not stats:
        raise FileNotFoundError(f"no audio found under {root}: expected the layout {layout_msg}")

    aux = _stat_aux([phones_path, train_path, test_path])
    cache_file = Path(cache_dir) / f"manifest-{spec.key()}.json" if cache_dir is not None else None
    old: dict[str, Any] = {}
    if cache_file is not None and cache_file.exists():
        try:
            old = json.loads(cache_file.read_text())
        except (OSError, json.JSONDecodeError):
            old = {}
    old_files: dict[str, list[int]] = old.get("files", {})
    old_corrupt: dict[str, list[Any]] = old.get("corrupt", {})

    files: dict[str, list[int]] = {}
    corrupt: dict[str, list[Any]] = {}
    probed = 0
    for rel, (mtime, size) in sorted(stats.items()):
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
            frames, sr, ch = _probe(root / rel)
        except Exception as err:  # noqa: BLE001 - any decoder error means "unreadable"
            corrupt[rel] = [
                mtime,
                size,
                str(err).splitlines()[0] if str(err) else type(err).__name__,
            ]
            continue
        files[rel] = [mtime, size, frames, sr, ch]
    for rel, (_, _, reason) in corrupt.items():
        warnings.warn(f"skipping unreadable audio file {root / rel}: {reason}", AudioDataWarning, 2)
    if not files:
        raise FileNotFoundError(f"no readable audio under {root} ({len(corrupt)} unreadable files)")

    unchanged = (
        files == old_files and corrupt == old_corrupt and aux == old.get("aux") and "records" in old
    )
    phones: dict[str, np.ndarray] = {}
    if phones_path is not None:
        phones = load_phones(phones_path, cache_file.parent if cache_file else None, write)
    records, ids_without_audio, unmatched = _derive_records(
        spec, root, files, phones, train_path, test_path
    )
    if corrupt:
        log.warning("%d unreadable audio files skipped under %s", len(corrupt), root)
    if ids_without_audio:
        log.info(
            "%d utterance ids in %s have no audio and were skipped",
            len(ids_without_audio),
            phones_path,
        )
    if write and cache_file is not None and not unchanged:
        payload = {
            "version": MANIFEST_VERSION,
            "spec": spec.__dict__,
            "files": files,
            "corrupt": corrupt,
            "aux": aux,
            "records": [r.to_json() for r in records],
        }
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(cache_file.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(payload))
        os.replace(tmp, cache_file)
    return Manifest(
        records=records,
        corrupt=[str(root / r) for r in corrupt],
        label_ids_without_audio=ids_without_audio,
        unmatched=unmatched,
        probed=probed,
        from_cache=probed == 0 and bool(old),
    )


def _resampled_length(frames: int, orig: int, new: int) -> int:
    g = math.gcd(orig, new)
    return math.ceil(frames * (new // g) / (orig // g))


def _derive_records(
    spec: CorpusSpec,
    root: Path,
    files: dict[str, list[int]],
    phones: dict[str, np.ndarray],
    train_path: Path | None,
    test_path: Path | None,
) -> tuple[list[Utterance], list[str], int]:
    """Labels, speakers, phones and splits from paths and side files (cheap; redone every start)."""
    records: list[Utterance] = []
    unmatched = 0
    rx = re.compile(spec.pattern) if spec.pattern else None
    if rx is not None and not ({"label", "speaker"} & set(rx.groupindex)):
        raise ValueError(
            f"data.pattern {spec.pattern!r} has no named group 'label' or 'speaker'; "
            r"write e.g. '(?P<label>\d)_(?P<speaker>[a-z]+)_\d+\.wav'"
        )
    for rel, (mtime, size, frames, sr, ch) in files.items():
        n = _resampled_length(frames, sr, spec.sample_rate)
        speaker = label = None
        if spec.layout == "librispeech":
            parts = rel.split("/")
            uid = parts[3][: -len(".flac")]
            speaker = parts[1]
        else:
            uid = rel.rsplit(".", 1)[0]
            if rx is not None:
                m = rx.search(rel)
                if m is None:
                    unmatched += 1
                    continue
                groups = m.groupdict()
                speaker, label = groups.get("speaker"), groups.get("label")
        rec = Utterance(uid, f"{root}/{rel}", n, frames, sr, ch, speaker, label=label)
        rec.stamp = f"{mtime}:{size}"
        records.append(rec)
    if unmatched:
        log.info("%d files under %s do not match data.pattern and were skipped", unmatched, root)
    if not records:
        raise ValueError(
            f"no file under {root} matches data.pattern {spec.pattern!r} (relative paths look like "
            f"{next(iter(files))!r})"
        )

    if spec.layout == "librispeech":
        texts: dict[str, str] = {}
        for d, chapter in {(r.path.rsplit("/", 1)[0], r.uid.rsplit("-", 1)[0]) for r in records}:
            trans = f"{d}/{chapter}.trans.txt"  # LibriSpeech: <speaker>-<chapter>.trans.txt
            if os.path.exists(trans):
                with open(trans) as f:
                    for line in f:
                        k, _, v = line.rstrip("\n").partition(" ")
                        texts[k] = v
        by_uid = {r.uid: r for r in records}
        for r in records:
            r.text = texts.get(r.uid)
        ids_without_audio = sorted(u for u in phones if u not in by_uid)
        for uid, values in phones.items():
            r = by_uid.get(uid)
            if r is None:
                continue
            expected = expected_phone_frames(r.num_samples)
            if abs(len(values) - expected) > spec.phone_tolerance:
                raise ValueError(
                    f"phone labels of utterance {uid} have {len(values)} frames but its audio "
                    f"({r.num_samples} samples, {r.path}) gives {expected} = "
                    "floor((samples-400)/160)+1; the label file does not belong to this audio"
                )
            r.phones = values
    else:
        ids_without_audio = []

    uids = [r.uid for r in records]
    if spec.test_pattern:
        trx = re.compile(spec.test_pattern)
        cut = len(str(root)) + 1
        held = {r.uid for r in records if trx.search(r.path[cut:])}
        if not held or len(held) == len(records):
            raise ValueError(
                f"data.test_pattern {spec.test_pattern!r} matches {len(held)} of {len(records)} "
                f"files under {root}; it must select some but not all (held-out split)"
            )
    elif test_path is not None:
        held = _read_id_list(test_path) & set(uids)
    elif train_path is not None:
        held = set(uids) - _read_id_list(train_path)
    else:
        held = _ratio_split(uids, spec.val_fraction, spec.seed)
    for r in records:
        r.split = "val" if r.uid in held else "train"
    return records, ids_without_audio, unmatched


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def resample(wav: torch.Tensor, orig: int, new: int) -> torch.Tensor:
    """``torchaudio.functional.resample`` of a (n,) waveform, clamped to [-1, 1]."""
    if orig == new:
        return wav
    return AF.resample(wav, orig, new).clamp_(-1.0, 1.0).contiguous()


def _pack_paths(records: Sequence[Utterance], sample_rate: int, cache_dir: Path) -> Path | None:
    todo = sorted((r.path, r.stamp) for r in records if r.file_sample_rate != sample_rate)
    if not todo:
        return None
    tag = hashlib.sha1(json.dumps([sample_rate, todo]).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"resampled-{tag}.npy"


def build_resample_cache(
    records: Sequence[Utterance], sample_rate: int, cache_dir: str | os.PathLike[str], write: bool
) -> Path | None:
    """One float32 ``.npy`` holding every file not at ``sample_rate``, resampled once.

    Named by a hash of those files' paths, mtimes and sizes (any change rebuilds it). Returns the
    path if it exists (after writing it when ``write``), else None. Index: ``<name>.json``.
    """
    target = _pack_paths(records, sample_rate, Path(cache_dir))
    if target is None:
        return None
    if target.exists() and target.with_suffix(".json").exists():
        return target
    if not write:
        return None
    todo = sorted((r for r in records if r.file_sample_rate != sample_rate), key=lambda r: r.path)
    reader = AudioReader(sample_rate, memory_cache_mb=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many tiny convolutions: one thread is several times faster
    try:
        index: dict[str, list[int]] = {}
        total = sum(r.num_samples for r in todo)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.stem + f".{os.getpid()}.tmp.npy")
        pack = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(total,))
        offset = 0
        for r in todo:
            try:
                wav = reader.load(r).numpy()
            except Exception as err:  # noqa: BLE001 - the loader warns when it meets it
                log.warning("resample cache: cannot read %s (%s)", r.path, err)
                continue
            pack[offset : offset + wav.size] = wav
            index[r.path] = [offset, int(wav.size)]
            offset += wav.size
        pack.flush()
        del pack
        os.replace(tmp, target)
        index_tmp = target.with_name(target.stem + f".{os.getpid()}.tmp.json")
        index_tmp.write_text(json.dumps(index))
        os.replace(index_tmp, target.with_suffix(".json"))
    finally:
        torch.set_num_threads(threads)
    log.info("resampled %d files to %d Hz into %s", len(index), sample_rate, target)
    return target


class AudioReader:
    """Reads mono float32 waveforms at ``sample_rate`` with soundfile.

    Order of lookup: the in-memory LRU (``memory_cache_mb`` per process), the resample cache
    written by :func:`build_resample_cache` (memory-mapped), then the file itself. Files at
    ``sample_rate`` are read window by window unless ``cache_full`` (the whole corpus fits the LRU);
    others are decoded and resampled once, then kept in the LRU.
    """

    def __init__(self, sample_rate: int = 16000, memory_cache_mb: float = 512.0) -> None:
        self.sample_rate = sample_rate
        self.budget = int(memory_cache_mb * 2**20)
        self.cache_full = False
        self.pack_path: Path | None = None
        self._pack_index: dict[str, list[int]] = {}
        self._pack: np.ndarray | None = None
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._bytes = 0

    def __getstate__(self) -> dict[str, Any]:  # workers start with empty caches, reopen the map
        state = self.__dict__.copy()
        state["_cache"], state["_bytes"], state["_pack"] = OrderedDict(), 0, None
        return state

    def use_resample_cache(self, path: Path | None) -> None:
        """Serve resampled files from ``path`` (as returned by :func:`build_resample_cache`)."""
        self.pack_path, self._pack = path, None
        self._pack_index = json.loads(path.with_suffix(".json").read_text()) if path else {}

    def _decode(self, path: str, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, int]:
        data, sr = sf.read(path, start=start, stop=stop, dtype="float32", always_2d=True)
        mono = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1)
        return np.ascontiguousarray(mono, dtype=np.float32), int(sr)

    def _from_pack(self, path: str, start: int, stop: int | None) -> torch.Tensor | None:
        loc = self._pack_index.get(path)
        if loc is None or self.pack_path is None:
            return None
        if self._pack is None:
            self._pack = np.load(self.pack_path, mmap_mode="r")
        off, n = loc
        stop = n if stop is None else min(stop, n)
        return torch.from_numpy(np.array(self._pack[off + start : off + stop]))

    def _remember(self, path: str, wav: torch.Tensor) -> None:
        nbytes = wav.numel() * 4
        if nbytes <= self.budget:
            self._cache[path] = wav
            self._bytes += nbytes
            while self._bytes > self.budget:
                _, old = self._cache.popitem(last=False)
                self._bytes -= old.numel() * 4

    def load(self, rec: Utterance) -> torch.Tensor:
        """Full utterance, (num_samples,) float32 in [-1, 1]."""
        hit = self._cache.get(rec.path)
        if hit is not None:
            self._cache.move_to_end(rec.path)
            return hit
        wav = self._from_pack(rec.path, 0, None)
        if wav is not None:
            return wav
        mono, sr = self._decode(rec.path)
        wav = resample(torch.from_numpy(mono), sr, self.sample_rate)
        if sr != self.sample_rate or self.cache_full:
            self._remember(rec.path, wav)
        return wav

    def window(self, rec: Utterance, start: int, length: int) -> torch.Tensor:
        """Samples ``[start, start+length)`` (shorter at the end of the file)."""
        if rec.path not in self._cache:
            wav = self._from_pack(rec.path, start, start + length)
            if wav is not None:
                return wav
            if rec.file_sample_rate == self.sample_rate and not self.cache_full:
                mono, _ = self._decode(rec.path, start, min(start + length, rec.file_frames))
                return torch.from_numpy(mono)
        return self.load(rec)[start : start + length]


# --------------------------------------------------------------------------------------------
# Windows
# --------------------------------------------------------------------------------------------


def _seed_of(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


class WindowDataset(Dataset):
    """Random ``window``-sample crops, ``windows_per_utterance`` per utterance per epoch.

    Item ``i`` is utterance ``i % len(records)``. Training starts are drawn from (seed, epoch, i);
    evaluation starts from (seed, i) only. Starts are multiples of 160 so that window frame j is
    label frame ``start // 160 + j``. Shorter utterances are zero-padded (``mask`` False there).
    The epoch lives in shared memory so that worker processes see ``set_epoch``.
    """

    def __init__(
        self,
        records: Sequence[Utterance],
        reader: AudioReader,
        window: int,
        windows_per_utterance: int = 1,
        train: bool = True,
        seed: int = 0,
        augment: Any | None = None,
    ) -> None:
        if window <= 0 or window % HOP:
            raise ValueError(f"data.window must be a positive multiple of {HOP}, got {window}")
        if windows_per_utterance < 1:
            raise ValueError(
                f"data.windows_per_utterance must be >= 1, got {windows_per_utterance}"
            )
        self.records = list(records)
        self.reader = reader
        self.window = window
        self.windows_per_utterance = windows_per_utterance
        self.train = train
        self.seed = seed
        self.augment = augment
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._failed: set[str] = set()

    def __len__(self) -> int:
        return len(self.records) * self.windows_per_utterance

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def utterance_of(self, index: int) -> int:
        return index % len(self.records)

    def start_of(self, index: int) -> int:
        """Window start (multiple of 160) for dataset item ``index`` at the current epoch."""
        rec = self.records[self.utterance_of(index)]
        slots = (rec.num_samples - self.window) // HOP
        if slots <= 0:
            return 0
        parts = (self.seed, self.epoch, index) if self.train else (self.seed, 7919, index)
        return HOP * int(np.random.default_rng(_seed_of(*parts)).integers(0, slots + 1))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        u = self.utterance_of(index)
        rec = self.records[u]
        start = self.start_of(index)
        x = torch.zeros(self.window, dtype=torch.float32)
        mask = torch.zeros(self.window, dtype=torch.bool)
        try:
            real = self.reader.window(rec, start, self.window)
        except Exception as err:  # noqa: BLE001 - a file broken after indexing: keep training
            if rec.path not in self._failed:
                self._failed.add(rec.path)
                warnings.warn(
                    f"could not read {rec.path}: {err}; using silence", AudioDataWarning, 2
                )
            real = torch.zeros(0)
        n = min(real.numel(), self.window)
        if n and self.augment is not None and self.train:
            gen = torch.Generator().manual_seed(_seed_of(self.seed, self.epoch, index, 1))
            real = self.augment(real[:n], gen)
        x[:n] = real[:n]
        mask[:n] = True
        nf = self.window // HOP
        phones = torch.full((nf,), IGNORE, dtype=torch.int64)
        if rec.phones is not None:
            seg = rec.phones[start // HOP : start // HOP + nf]
            phones[: len(seg)] = torch.from_numpy(seg.astype(np.int64))
        return {
            "x": x.unsqueeze(0),
            "mask": mask,
            "speaker": rec.speaker_index,
            "phones": phones,
            "label": rec.label_index,
            "index": u,
        }


# --------------------------------------------------------------------------------------------
# Batch samplers (DDP-aware; yield lists of dataset indices)
# --------------------------------------------------------------------------------------------


def dist_rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Explicit values, else ``torch.distributed``'s when initialised, else (0, 1)."""
    if rank is not None and world_size is not None:
        r, w = rank, world_size
    elif torch.distributed.is_available() and torch.distributed.is_initialized():
        r, w = torch.distributed.get_rank(), torch.distributed.get_world_size()
    else:
        r, w = 0, 1
    if not 0 <= r < w:
        raise ValueError(f"rank {r} is not in [0, world_size={w})")
    return r, w


class _EpochHook(Sampler[int]):
    """``batch_sampler.sampler``: Lightning calls ``set_epoch`` on this (not on the batch sampler),
    so it forwards. Iterating it gives the batch sampler's indices, flattened."""

    def __init__(self, owner: _BatchSampler) -> None:
        self.owner = owner

    def set_epoch(self, epoch: int) -> None:
        self.owner.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        return (i for b in self.owner for i in b)

    def __len__(self) -> int:
        return sum(len(b) for b in self.owner)


class _BatchSampler(Sampler[list[int]]):
    """Shared parts: rank/world, per-epoch reseeding, equal batch counts on every rank."""

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
        dataset: WindowDataset | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        if num_items < 1:
            raise ValueError("the sampler got an empty dataset")
        self.num_items = num_items
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.rank, self.world_size = dist_rank_world(rank, world_size)
        self.dataset = dataset
        self.epoch = 0
        self.sampler = _EpochHook(self)

    def set_epoch(self, epoch: int) -> None:
        """Reseed for ``epoch`` (Lightning calls this); also tells the dataset, even in workers."""
        self.epoch = epoch
        if self.dataset is not None:
            self.dataset.set_epoch(epoch)

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng(_seed_of(self.seed, self.epoch if self.shuffle else 0, 17))

    def _global_batches(self) -> list[list[int]]:
        raise NotImplementedError

    def _shard(self, batches: list[list[int]]) -> list[list[int]]:
        w = self.world_size
        if w == 1:
            return batches
        if len(batches) % w:  # pad by repeating from the start so every rank gets as many
            if not batches:
                return []
            extra = w - len(batches) % w
            batches = batches + [batches[i % len(batches)] for i in range(extra)]
        return batches[self.rank :: w]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._shard(self._global_batches())

    def __len__(self) -> int:
        return math.ceil(self._num_global_batches() / self.world_size)

    def _num_global_batches(self) -> int:
        raise NotImplementedError


class UniformBatchSampler(_BatchSampler):
    """Random batches; each rank gets every ``world_size``-th item of one shared permutation."""

    def _per_rank(self) -> int:
        return math.ceil(self.num_items / self.world_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = (
            self._rng().permutation(self.num_items) if self.shuffle else np.arange(self.num_items)
        )
        total = self._per_rank() * self.world_size
        if total > self.num_items:
            order = np.concatenate([order, order[: total - self.num_items]])
        mine = order[self.rank :: self.world_size].tolist()
        for i in range(len(self)):
            yield mine[i * self.batch_size : (i + 1) * self.batch_size]

    def __len__(self) -> int:
        n = self._per_rank()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)


def _group_by_speaker(speakers: Sequence[int]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(speakers):
        if s < 0:
            raise ValueError(
                "speaker-grouped sampling needs a speaker for every utterance, but some have none; "
                "use data.sampler=uniform or a data.pattern with a (?P<speaker>...) group"
            )
        groups.setdefault(int(s), []).append(i)
    return groups


class SameSpeakerBatchSampler(_BatchSampler):
    """Every batch holds windows of one speaker (as CPC_audio's speaker sampler).

    Each speaker's items are shuffled and cut into batches of ``batch_size`` (the last one smaller
    unless ``drop_last``); the batch order is shuffled and dealt to ranks.
    """

    def __init__(self, speakers: Sequence[int], batch_size: int, **kw: Any) -> None:
        super().__init__(len(speakers), batch_size, **kw)
        self.groups = _group_by_speaker(speakers)

    def _global_batches(self) -> list[list[int]]:
        rng = self._rng()
        batches: list[list[int]] = []
        for s in sorted(self.groups):
            items = np.array(self.groups[s])
            if self.shuffle:
                items = rng.permutation(items)
            for i in range(0, len(items), self.batch_size):
                b = items[i : i + self.batch_size].tolist()
                if len(b) == self.batch_size or not self.drop_last:
                    batches.append(b)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def _num_global_batches(self) -> int:
        f = math.floor if self.drop_last else math.ceil
        return sum(f(len(v) / self.batch_size) for v in self.groups.values())


class SpeakerGroupsBatchSampler(_BatchSampler):
    """P speakers x Q windows each per batch (``batch_size = P * Q``), batch-major by speaker.

    Speakers are drawn without replacement within a batch, weighted by how many of their items the
    epoch has not used yet, so an epoch of ``num_items // (P*Q)`` batches covers nearly everything.
    A speaker with fewer than Q items is sampled with replacement (warned once).
    """

    def __init__(
        self,
        speakers: Sequence[int],
        speakers_per_batch: int,
        utterances_per_speaker: int,
        **kw: Any,
    ) -> None:
        p, q = int(speakers_per_batch), int(utterances_per_speaker)
        if p < 1 or q < 1:
            raise ValueError(
                "data.speakers_per_batch and data.utterances_per_speaker must be >= 1, "
                f"got {p}, {q}"
            )
        kw.pop("batch_size", None)
        super().__init__(len(speakers), p * q, **kw)
        self.p, self.q = p, q
        self.groups = _group_by_speaker(speakers)
        if len(self.groups) < p:
            raise ValueError(
                f"data.speakers_per_batch={p} but the data has only {len(self.groups)} speakers; "
                "lower data.speakers_per_batch"
            )
        few = sorted(s for s, v in self.groups.items() if len(v) < q)
        if few:
            warnings.warn(
                f"{len(few)} speakers have fewer than data.utterances_per_speaker={q} items; "
                "they are sampled with replacement",
                AudioDataWarning,
                2,
            )

    def _num_global_batches(self) -> int:
        return max(1, self.num_items // self.batch_size)

    def _global_batches(self) -> list[list[int]]:
        rng = self._rng()
        spk = sorted(self.groups)
        queues = {s: list(rng.permutation(self.groups[s])) for s in spk}
        left = np.array([len(self.groups[s]) for s in spk], dtype=np.float64)
        batches: list[list[int]] = []
        for _ in range(self._num_global_batches()):
            w = left + 1e-3
            chosen = rng.choice(len(spk), size=self.p, replace=False, p=w / w.sum())
            batch: list[int] = []
            for c in chosen:
                s = spk[c]
                for _ in range(self.q):
                    if not queues[s]:
                        queues[s] = list(rng.permutation(self.groups[s]))
                    batch.append(int(queues[s].pop()))
                left[c] = max(0.0, left[c] - self.q)
            batches.append(batch)
        return batches


def make_batch_sampler(
    name: str,
    speakers: Sequence[int],
    batch_size: int,
    speakers_per_batch: int | None = None,
    utterances_per_speaker: int | None = None,
    **kw: Any,
) -> _BatchSampler:
    """Build ``uniform`` | ``same_speaker`` | ``speaker_groups`` (``kw``: seed, shuffle, drop_last,
    rank, world_size, dataset)."""
    if name == "uniform":
        return UniformBatchSampler(len(speakers), batch_size, **kw)
    if name == "same_speaker":
        return SameSpeakerBatchSampler(speakers, batch_size, **kw)
    if name == "speaker_groups":
        if speakers_per_batch is None or utterances_per_speaker is None:
            raise ValueError(
                "data.sampler=speaker_groups needs data.speakers_per_batch and "
                "data.utterances_per_speaker"
            )
        if batch_size != speakers_per_batch * utterances_per_speaker:
            log.info(
                "speaker_groups: batch size is P*Q = %d (data.batch_size=%d ignored)",
                speakers_per_batch * utterances_per_speaker,
                batch_size,
            )
        kw.pop("drop_last", None)
        return SpeakerGroupsBatchSampler(speakers, speakers_per_batch, utterances_per_speaker, **kw)
    raise ValueError(
        f"data.sampler={name!r} is not one of 'uniform', 'same_speaker', 'speaker_groups'"
    )
