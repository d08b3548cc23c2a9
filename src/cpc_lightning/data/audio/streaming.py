"""Training from streaming shards (``data.streaming=true``), read with Lightning's litdata.

``data.streaming=true data.root=<out>`` trains from the shards that ``prepare`` wrote
(:mod:`~cpc_lightning.data.audio.shards`) with :class:`StreamingAudioDataModule`: litdata shards
the items across DDP ranks and loader workers, and its loader state (in Lightning's checkpoint)
resumes an epoch mid-way.

Item ``index`` is the utterance's position in the file-based DataModule's split, and windows are
cut by the same rule (:func:`~cpc_lightning.data.audio.windows.window_start`): for a fixed
seed an epoch holds the same windows and labels as the file loader's, in litdata's order. The
loader keys are the file DataModule's (:class:`~cpc_lightning.data.audio.settings.LoaderSettings`);
those streaming does not implement are refused at start-up. litdata is an optional extra
(``pip install 'cpc_lightning[streaming]'``), imported only when shards are read.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from cpc_lightning.data import labels_with
from cpc_lightning.data.audio.augment import build_augment
from cpc_lightning.data.audio.manifest import Utterance
from cpc_lightning.data.audio.settings import check_streaming, loader_settings
from cpc_lightning.data.audio.shard_items import decode_audio, manifest_records
from cpc_lightning.data.audio.shards import SPLITS, is_url, join, read_manifest, require_litdata
from cpc_lightning.errors import UserError

log = logging.getLogger(__name__)


class StreamingAudioDataModule(pl.LightningDataModule):
    """Audio batches from prepared shards (``data.streaming=true``); the DataModule contract of
    :mod:`cpc_lightning.data` (``items``/``load`` read single utterances by position).

    The split, labels and (for ``short=skip``) the utterances left out were fixed by
    ``prepare``; the window, batch size, workers, seed and augmentation are chosen here. Batches
    come from a litdata ``StreamingDataLoader``: shuffled chunks, sharded over DDP ranks and
    workers with equal counts per rank, its position saved in Lightning's checkpoint.
    """

    modality = "audio"
    handles_distributed = True

    def __init__(self, root: str | os.PathLike[str], **loader: Any) -> None:
        """``root``: the ``prepare`` output (folder or URL); ``loader``: the keys of
        :class:`~cpc_lightning.data.audio.settings.LoaderSettings`."""
        super().__init__()
        if str(root) in ("", "???", "None"):
            raise UserError("data.root is required with data.streaming=true: the prepare output")
        s = self.settings = loader_settings(loader)
        check_streaming(s)
        self.root = str(root) if is_url(root) else str(Path(root).expanduser().resolve())
        self.sample_rate, self.window, self.short = s.sample_rate, s.window, s.short
        self.batch_size, self.num_workers = int(s.batch_size), s.num_workers
        if self.num_workers == 0:
            # litdata's chunk thread polls without sleeping: in the training process it holds
            # the GIL against the step (loading measured ~10x slower); in a worker it does not.
            log.info("data.streaming=true with data.num_workers=0: reading shards in 1 worker")
            self.num_workers = 1
        self.seed, self.drop_last = s.seed, s.drop_last
        self.cache_dir = s.cache_path
        self.augment = build_augment(s.augment, s.augment_params, self.sample_rate)
        self.manifest: dict[str, Any] | None = None
        self._records: dict[str, list[Utterance]] = {}
        self._random_access: dict[str, Any] = {}
        self.speakers: list[str] = []
        self.classes: list[str] = []
        self.num_phones, self.phone_names = 0, []
        self.provides_speakers, self.stats = False, {}

    def prepare_data(self) -> None:
        """Nothing to write: the shards are the prepared data."""
        require_litdata()

    def setup(self, stage: str | None = None) -> None:
        """Read and check the manifest (label names, records, counts)."""
        if self.manifest is not None:
            return
        require_litdata()
        m = read_manifest(self.root)
        if int(m["sample_rate"]) != self.sample_rate:
            raise UserError(
                f"data.sample_rate={self.sample_rate} but the shards in {self.root} are at "
                f"{m['sample_rate']} Hz: set data.sample_rate={m['sample_rate']} or prepare again"
            )
        self._records = {s: manifest_records(m["splits"].get(s, []), s) for s in SPLITS}
        shortest = min((r.num_samples for r in self._records["train"]), default=0)
        if self.short == "skip" and shortest < self.window:
            raise UserError(
                f"data.short=skip with data.window={self.window}, but the shards keep utterances "
                f"of {shortest} samples (prepared with window={m['window']}, short={m['short']}): "
                f"prepare again with data.window={self.window} data.short=skip, or use short=pad"
            )
        if not self._records["train"]:
            raise UserError(f"the shards in {self.root} hold no training utterances")
        self.speakers, self.classes = list(m["speakers"]), list(m["classes"])
        self.num_phones, self.phone_names = int(m["num_phones"]), list(m["phone_names"])
        self.provides_speakers = bool(m["provides_speakers"])
        self.stats = {**m["stats"], "streaming": True}
        self.manifest = m

    @property
    def labels(self) -> list[str]:
        """Label kinds the shards have."""
        return labels_with(self.num_phones, self.speakers, self.classes)

    def items(self, split: str) -> list[Utterance]:
        """Records of ``split`` (``train`` or ``test``), in shard order."""
        if split not in SPLITS:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.setup()
        return list(self._records[split])

    def load(self, record: Utterance) -> torch.Tensor:
        """Whole utterance at ``sample_rate``: float32 ``(num_samples,)``, read from its shard."""
        self.setup()
        split = record.split
        if split not in self._random_access:
            from litdata import StreamingDataset  # optional extra: imported only when streaming

            self._random_access[split] = StreamingDataset(
                join(self.root, split), cache_dir=self._chunk_cache(split), batch_decode=0
            )
        position = self._position(record)
        return decode_audio(self._random_access[split][position])

    def _position(self, record: Utterance) -> int:
        if not hasattr(self, "_positions"):
            self._positions = {
                s: {r.uid: i for i, r in enumerate(recs)} for s, recs in self._records.items()
            }
        return self._positions[record.split][record.uid]

    def _chunk_cache(self, split: str) -> str | None:
        """Where litdata keeps downloaded chunks of a URL (local shards are read in place)."""
        if not is_url(self.root):
            return None
        tag = hashlib.sha1(self.root.encode()).hexdigest()[:16]
        return str(self.cache_dir / "streaming" / tag / split)

    def _loader(self, split: str, train: bool) -> Any:
        # optional extra: litdata (and StreamingWindows, a litdata dataset) only when streaming
        from litdata import StreamingDataLoader

        from cpc_lightning.data.audio.streaming_windows import StreamingWindows

        self.setup()
        ds = StreamingWindows(
            join(self.root, split),
            records=self._records[split],
            window=self.window,
            window_seed=self.seed,
            train=train,
            augment=self.augment if train else None,
            shuffle=train,
            seed=self.seed,
            drop_last=self.drop_last if train else False,
            cache_dir=self._chunk_cache(split),
        )
        return StreamingDataLoader(
            ds,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            drop_last=self.drop_last if train else False,
        )

    def train_dataloader(self) -> Any:
        return self._loader("train", train=True)

    def val_dataloader(self) -> Any:
        self.setup()
        return self._loader("test", train=False) if self._records["test"] else []

    def test_dataloader(self) -> Any:
        return self.val_dataloader()
