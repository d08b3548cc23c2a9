"""The shard item codec: an utterance written as a litdata item reads back as the same waveform,
labels and record (no litdata needed: items are plain dicts)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cpc_lightning.data import IGNORE_INDEX
from cpc_lightning.data.audio.manifest import Utterance
from cpc_lightning.data.audio.shard_items import (
    INT16_SCALE,
    decode_audio,
    encode_item,
    item_record,
    manifest_records,
    record_entry,
)


class Reader:
    """An AudioReader stand-in: ``load(record)`` -> the record's waveform."""

    def __init__(self, waves: dict[str, torch.Tensor]) -> None:
        self.waves = waves

    def load(self, rec: Utterance) -> torch.Tensor:
        return self.waves[rec.uid]


def records() -> list[Utterance]:
    a = Utterance("s1/a", "s1/a.flac", 800, 800, 16000, 1, speaker="s1", speaker_index=0,
                  phones=np.array([1, 2, 2], dtype=np.int64), rel="s1/a.flac")  # fmt: skip
    b = Utterance("s2/b", "s2/b.flac", 480, 480, 16000, 1, label="yes", label_index=3,
                  rel="s2/b.flac")  # fmt: skip
    return [a, b]


def waves() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        "s1/a": (torch.randint(-32768, 32768, (800,), generator=gen) / INT16_SCALE).float(),
        "s2/b": torch.rand(480, generator=gen) * 2 - 1,
    }


@pytest.mark.parametrize("dtype", ["int16", "float32"])
def test_an_item_decodes_to_its_waveform_and_labels(dtype):
    recs, wav = records(), waves()
    for position, rec in enumerate(recs):
        item = encode_item(position, recs, Reader(wav), dtype)
        assert item["audio"].dtype == np.dtype(dtype) and item["index"] == position
        back = decode_audio(item)
        assert back.dtype == torch.float32
        if dtype == "float32" or rec.uid == "s1/a":  # exact: float, or 16-bit sources in int16
            torch.testing.assert_close(back, wav[rec.uid], rtol=0, atol=0)
        else:
            torch.testing.assert_close(back, wav[rec.uid], rtol=0, atol=1 / INT16_SCALE)
        got = item_record(item, manifest_records([record_entry(r) for r in recs], "train"))
        assert (got.uid, got.speaker_index, got.label_index) == (
            rec.uid, rec.speaker_index, rec.label_index,
        )  # fmt: skip
        if rec.phones is None:
            assert got.phones is None
        else:
            np.testing.assert_array_equal(got.phones, rec.phones)


def test_manifest_records_round_trip_without_the_arrays():
    entries = [record_entry(r) for r in records()]
    assert [e["phones_present"] for e in entries] == [True, False]
    back = manifest_records(entries, "test")
    assert [(r.uid, r.rel, r.num_samples, r.speaker, r.label, r.split) for r in back] == [
        ("s1/a", "s1/a.flac", 800, "s1", None, "test"),
        ("s2/b", "s2/b.flac", 480, None, "yes", "test"),
    ]
    assert back[1].speaker_index == IGNORE_INDEX and back[0].phones is None
