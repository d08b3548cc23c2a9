"""The shard item codec: one utterance as a litdata item, and its record in the shard manifest.

An item is ``index`` (the utterance's position in its split), ``audio`` (int16 at soundfile's
scale :data:`INT16_SCALE`, or float32), ``phones`` (int16 frame labels, empty when the corpus has
none), ``speaker`` and ``label`` (ids). The writer (:mod:`~cpc_lightning.data.audio.shards`) and
both readers (:mod:`~cpc_lightning.data.audio.streaming`,
:mod:`~cpc_lightning.data.audio.streaming_windows`) import it; it imports neither.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from cpc_lightning.data import IGNORE_INDEX
from cpc_lightning.data.audio.manifest import Utterance
from cpc_lightning.data.audio.reader import AudioReader

#: int16 shards store ``round(x * 32768)`` (soundfile's own scale: 16-bit sources stay exact).
INT16_SCALE = 32768.0
#: Record fields kept in the manifest (the audio and phones live in the shards).
RECORD_FIELDS = ("uid", "rel", "num_samples", "speaker", "speaker_index", "label", "label_index")


def encode_item(
    position: int, records: Sequence[Utterance], reader: AudioReader, dtype: str
) -> dict[str, Any]:
    """The shard item of ``records[position]``: its decoded, resampled waveform and labels."""
    rec = records[position]
    wav = reader.load(rec).numpy()
    if dtype == "int16":
        audio = np.clip(np.round(wav * INT16_SCALE), -32768, 32767).astype(np.int16)
    else:
        audio = wav.astype(np.float32)
    phones = rec.phones if rec.phones is not None else np.zeros(0)
    return {
        "index": int(position),
        "audio": audio,
        "phones": np.asarray(phones, dtype=np.int16),
        "speaker": int(rec.speaker_index),
        "label": int(rec.label_index),
    }


def decode_audio(item: Mapping[str, Any]) -> torch.Tensor:
    """An item's waveform as float32 ``(n,)`` in [-1, 1]."""
    audio = np.asarray(item["audio"])
    if audio.dtype == np.int16:
        return torch.from_numpy(audio.astype(np.float32) / INT16_SCALE)
    return torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))


def item_record(item: Mapping[str, Any], records: Sequence[Utterance]) -> Utterance:
    """The record of an item, with its frame labels attached."""
    phones = np.asarray(item["phones"])
    return replace(
        records[int(item["index"])], phones=phones.astype(np.int64) if phones.size else None
    )


def record_entry(rec: Utterance) -> dict[str, Any]:
    """A record as the manifest stores it (``phones_present``: whether the shards hold labels)."""
    out = {k: getattr(rec, k) for k in RECORD_FIELDS}
    out["phones_present"] = rec.phones is not None
    return out


def manifest_records(entries: Sequence[Mapping[str, Any]], split: str) -> list[Utterance]:
    """The manifest's records of one split as :class:`Utterance` (phones come with the items)."""
    return [
        Utterance(
            uid=e["uid"],
            path=e["rel"],
            num_samples=int(e["num_samples"]),
            file_frames=int(e["num_samples"]),
            file_sample_rate=0,
            channels=1,
            speaker=e.get("speaker"),
            speaker_index=int(e.get("speaker_index", IGNORE_INDEX)),
            label=e.get("label"),
            label_index=int(e.get("label_index", IGNORE_INDEX)),
            split=split,
            rel=e["rel"],
        )
        for e in entries
    ]
