"""Waveform loading: soundfile decoding, mono mix-down, one-time resampling, caches."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from cpc_lightning.data.audio.manifest import Utterance
from cpc_lightning.data.audio.probe import sf_path
from cpc_lightning.progress import track

log = logging.getLogger(__name__)


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
        for r in track(todo, f"resampling to {sample_rate} Hz", unit="file"):
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
        data, sr = sf.read(sf_path(path), start=start, stop=stop, dtype="float32", always_2d=True)
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
