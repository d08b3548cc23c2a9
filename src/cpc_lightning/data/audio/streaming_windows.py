"""The litdata dataset of :mod:`~cpc_lightning.data.audio.streaming` (imports litdata, an
optional extra: load it only when streaming is used)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from litdata import StreamingDataset

from cpc_lightning.data.audio.manifest import Utterance
from cpc_lightning.data.audio.shard_items import decode_audio, item_record
from cpc_lightning.data.audio.windows import seed_of, window_item, window_start


class StreamingWindows(StreamingDataset):
    """Shard items (whole utterances) -> training windows, cut as the file loader cuts them.

    The window of utterance ``index`` in (litdata's 1-based) epoch ``e`` is the file loader's
    window of item ``index`` in (0-based) epoch ``e - 1``; evaluation windows ignore the epoch.
    """

    def __init__(
        self,
        input_dir: str,
        records: Sequence[Utterance],
        window: int,
        window_seed: int,
        train: bool,
        augment: Any | None = None,
        **kwargs: Any,
    ) -> None:
        # One item deserialised per read: litdata's "auto" decodes windows of 256 items ahead,
        # which halves the items/s of whole-utterance audio items (measured).
        kwargs.setdefault("batch_decode", 0)
        super().__init__(input_dir, **kwargs)
        self.records = list(records)
        self.window = int(window)
        self.window_seed = int(window_seed)
        self.train = bool(train)
        self.augment = augment

    def __getitem__(self, index: Any) -> dict[str, Any]:
        item = super().__getitem__(index)
        rec = item_record(item, self.records)
        u = int(item["index"])
        epoch = self.current_epoch - 1
        start = window_start(rec.num_samples, self.window, self.window_seed, epoch, u, self.train)
        real = decode_audio(item)[start : start + self.window]
        return window_item(
            rec, u, start, self.window, real, self.augment, seed_of(self.window_seed, epoch, u, 1)
        )
