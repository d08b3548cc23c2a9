"""Finding the audio files of a corpus and probing each once: readable, bad, or cut short.

:func:`scan_tree` lists audio files (following symlinked folders and files, each folder once);
:func:`probe_file` reads a file's header and tail, and every sample of float files (NaN/inf);
:func:`wav_shortfall` compares a WAV header's promised data size with the file;
:func:`report_bad_files` warns about each bad file or, with ``data.on_bad_file=error``, raises.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from cpc_lightning.progress import track

log = logging.getLogger("cpc_lightning.data.audio.manifest")

ON_BAD_FILE = ("skip", "error")
#: soundfile subtypes that can hold NaN/inf (their samples are checked when probed)
FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")
#: per-file warnings listed before the rest is summarised
MAX_LISTED = 20
#: (mtime_ns, size, frames, sample_rate, channels) of one audio file, as the cache stores it.
FileInfo = list[int]


class AudioDataWarning(UserWarning):
    """A problem with the data that was worked around (a skipped file, a resampled batch)."""


def scan_tree(
    root: Path, extensions: Sequence[str], subdirs: Sequence[str] | None = None
) -> dict[str, tuple[int, int]]:
    """Relative posix path -> (mtime_ns, size) of every file with one of ``extensions``
    (case-insensitive) under ``root`` (or its ``subdirs``), following symlinked folders and files.

    Paths stay as seen from ``root`` (links are not resolved). A folder reached twice through
    links (a loop) is read once; a link to nothing is skipped with a warning."""
    exts = tuple("." + e.lower().lstrip(".") for e in extensions)
    out: dict[str, tuple[int, int]] = {}
    # plain strings: pathlib costs more than the stat calls on large trees
    stack = [("" if subdirs is None else s + "/") for s in (subdirs or [""])]
    base = str(root) + os.sep
    seen: set[tuple[int, int]] = set()
    while stack:
        prefix = stack.pop()
        try:
            st = os.stat(base + prefix)
            it = os.scandir(base + prefix)
        except FileNotFoundError:
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        with it:
            for entry in it:
                try:
                    if entry.is_dir(follow_symlinks=True):
                        stack.append(prefix + entry.name + "/")
                    elif entry.name.lower().endswith(exts):
                        st = entry.stat()
                        out[prefix + entry.name] = (st.st_mtime_ns, st.st_size)
                except OSError as err:  # a dangling link, a link loop at a file
                    warnings.warn(
                        f"skipping {base + prefix + entry.name}: {err.strerror or err} (a broken "
                        "symbolic link?)",
                        AudioDataWarning,
                        2,
                    )
    return out


def sf_path(path: str | os.PathLike[str]) -> str | bytes:
    """``path`` for soundfile: its bytes on POSIX, so a file whose name is not UTF-8 (Python
    keeps the bytes as surrogate escapes, which soundfile cannot encode) opens like any other."""
    return os.fsencode(os.fspath(path)) if os.name == "posix" else os.fspath(path)


def probe_file(path: Path) -> tuple[int, int, int]:
    """(frames, sample_rate, channels) of a readable file; raises on corrupt or truncated audio
    and on float audio holding NaN/inf samples."""
    info = sf.info(sf_path(path))
    if info.frames <= 0 or info.samplerate <= 0:
        raise RuntimeError("no audio frames")
    # read the tail: catches files truncated after the header
    with sf.SoundFile(sf_path(path)) as f:
        tail = min(info.frames, 256)
        f.seek(info.frames - tail)
        got = f.read(tail, dtype="float32", always_2d=True).shape[0]
    if got != tail:
        raise RuntimeError(f"truncated: header says {info.frames} frames, data ends early")
    if info.subtype in FLOAT_SUBTYPES:
        bad = first_non_finite(path)
        if bad is not None:
            raise RuntimeError(f"non-finite samples (NaN/inf) from frame {bad} on")
    return int(info.frames), int(info.samplerate), int(info.channels)


def first_non_finite(path: Path, block: int = 1 << 20) -> int | None:
    """The first frame of ``path`` holding a NaN or inf sample (None: all finite)."""
    offset = 0
    for data in sf.blocks(sf_path(path), blocksize=block, dtype="float32", always_2d=True):
        finite = np.isfinite(data).all(axis=1)
        if not finite.all():
            return offset + int(np.argmin(finite))
        offset += data.shape[0]
    return None


def wav_shortfall(path: Path) -> str | None:
    """For a RIFF/WAVE file whose ``data`` chunk header promises more bytes than the file holds
    (a copy cut short), what is missing; None for complete files and other formats."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            return None
        order = "little" if head[:4] == b"RIFF" else "big"
        size, block_align = os.fstat(f.fileno()).st_size, 0
        for _ in range(64):  # chunks before 'data' (fmt, LIST, fact, ...)
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            cid, length = chunk[:4], int.from_bytes(chunk[4:], order)
            if cid == b"fmt ":
                block_align = int.from_bytes(f.read(16)[12:14], order)
                f.seek(length - 16 + (length & 1), os.SEEK_CUR)
                continue
            if cid == b"data":
                held = size - f.tell()
                if length in (0, 0xFFFFFFFF) or held >= length:
                    return None
                if block_align:
                    n, m, unit = length // block_align, held // block_align, "frames"
                else:
                    n, m, unit = length, held, "data bytes"
                return f"its header promises {n} {unit}, the file holds {m} (a copy cut short?)"
            f.seek(length + (length & 1), os.SEEK_CUR)
    return None


def probe_all(
    root: Path, stats: dict[str, tuple[int, int]], old: dict[str, Any]
) -> tuple[dict[str, FileInfo], dict[str, list[Any]], dict[str, list[Any]], int]:
    """Probe the files whose (mtime, size) changed since the cached manifest ``old``.

    Returns readable files, unreadable ones (``[mtime, size, reason]``), readable ones with a
    warning (``truncated``, same form) and how many files were probed."""
    old_files: dict[str, FileInfo] = old.get("files", {})
    old_bad = {k: old.get(k, {}) for k in ("corrupt", "truncated")}
    files: dict[str, FileInfo] = {}
    bad: dict[str, dict[str, list[Any]]] = {"corrupt": {}, "truncated": {}}
    probed = 0
    for rel, (mtime, size) in track(sorted(stats.items()), f"manifest {root}", unit="file"):
        prev = old_files.get(rel)
        prevc = old_bad["corrupt"].get(rel)
        if prevc is not None and prevc[:2] == [mtime, size]:
            bad["corrupt"][rel] = prevc
            continue
        if prev is not None and prev[:2] == [mtime, size]:
            files[rel] = prev
            note = old_bad["truncated"].get(rel)
            if note is not None and note[:2] == [mtime, size]:
                bad["truncated"][rel] = note
            continue
        probed += 1
        try:
            frames, sr, ch = probe_file(root / rel)
        except Exception as err:  # noqa: BLE001 - any decoder error means "unreadable"
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            bad["corrupt"][rel] = [mtime, size, reason]
            continue
        files[rel] = [mtime, size, frames, sr, ch]
        short = wav_shortfall(root / rel)
        if short is not None:
            bad["truncated"][rel] = [mtime, size, short]
    return files, bad["corrupt"], bad["truncated"], probed


def report_bad_files(
    root: Path, corrupt: dict[str, list[Any]], truncated: dict[str, list[Any]], on_bad_file: str
) -> None:
    """Warn about each bad file (skipped or read short), or, with ``on_bad_file="error"``, raise
    one error naming them."""
    if on_bad_file not in ON_BAD_FILE:
        raise ValueError(f"data.on_bad_file={on_bad_file!r} must be skip or error")
    bad = [(rel, "unreadable", item[2]) for rel, item in corrupt.items()]
    bad += [(rel, "cut short", item[2]) for rel, item in truncated.items()]
    if on_bad_file == "error" and bad:
        rel, _, reason = bad[0]
        more = f" (and {len(bad) - 1} more bad files)" if len(bad) > 1 else ""
        raise ValueError(
            f"bad audio file {root / rel}: {reason}{more}; replace or delete it, or set "
            "data.on_bad_file=skip to train without unreadable files"
        )
    for rel, kind, reason in bad[:MAX_LISTED]:
        what = (
            "skipping unreadable audio file" if kind == "unreadable" else "reading what there is of"
        )
        warnings.warn(f"{what} {root / rel}: {reason}", AudioDataWarning, 3)
    if len(bad) > MAX_LISTED:
        warnings.warn(
            f"... and {len(bad) - MAX_LISTED} more bad audio files under {root} (not listed)",
            AudioDataWarning,
            3,
        )
    if corrupt:
        log.warning("%d unreadable audio files skipped under %s", len(corrupt), root)
