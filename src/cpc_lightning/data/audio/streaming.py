"""Streaming shards: an optimised, sharded copy of an audio corpus, read with Lightning's litdata.

``python -m cpc_lightning.prepare data=<audio option> out=<dir or URL>`` decodes and resamples
every utterance once and writes ``<out>/train`` and ``<out>/test`` (litdata chunks, one item per
utterance: ``index``, int16 or float32 ``audio``, ``phones``, ``speaker``, ``label``) and
``<out>/cpc_manifest.json`` (label names, the records with their labels and split, counts, the
source config). ``data.streaming=true data.root=<out>`` trains from it with
:class:`StreamingAudioDataModule`: litdata shards the items across DDP ranks and loader
workers, and its loader state (in Lightning's checkpoint) resumes an epoch mid-way.

Item ``index`` is the utterance's position in the file-based DataModule's split, and windows are
cut by the same rule (:func:`~cpc_lightning.data.audio.windows.window_start`): for a fixed
seed an epoch holds the same windows and labels as the file loader's, in litdata's order.
litdata is imported only here (``pip install 'cpc_lightning[streaming]'``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from cpc_lightning.data import IGNORE_INDEX, tasks_with_labels
from cpc_lightning.data.audio.augment import build_augment
from cpc_lightning.data.audio.manifest import Utterance
from cpc_lightning.data.audio.reader import AudioReader
from cpc_lightning.errors import UserError

log = logging.getLogger(__name__)

MANIFEST = "cpc_manifest.json"
FORMAT_VERSION = 1
SPLITS = ("train", "test")
#: int16 shards store ``round(x * 32768)`` (soundfile's own scale: 16-bit sources stay exact).
INT16_SCALE = 32768.0
#: Record fields kept in the manifest (the audio and phones live in the shards).
RECORD_FIELDS = ("uid", "rel", "num_samples", "speaker", "speaker_index", "label", "label_index")


def require_litdata() -> Any:
    """The ``litdata`` module, or one clear error naming the extra to install."""
    try:
        import litdata
    except ImportError as err:
        raise UserError(
            "streaming shards need litdata: pip install 'cpc_lightning[streaming]' "
            f"(import failed: {err})"
        ) from err
    return litdata


def is_url(path: str | os.PathLike[str]) -> bool:
    """``s3://``, ``gs://``, ... (anything with a scheme other than a local path)."""
    return "://" in str(path) and not str(path).startswith("file://")


def join(root: str, *parts: str) -> str:
    """``root/parts`` for a local folder or an object-store URL."""
    return "/".join([str(root).rstrip("/"), *parts])


# ------------------------------------------------------------------ writing (prepare)
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


def record_entry(rec: Utterance) -> dict[str, Any]:
    """A record as the manifest stores it (``phones_present``: whether the shards hold labels)."""
    out = {k: getattr(rec, k) for k in RECORD_FIELDS}
    out["phones_present"] = rec.phones is not None
    return out


def write_shards(
    datamodule: Any,
    out: str,
    num_workers: int = 1,
    chunk_bytes: str = "64MB",
    dtype: str = "int16",
    source: Mapping[str, Any] | None = None,
    start_method: str | None = None,
) -> dict[str, Any]:
    """Write ``datamodule``'s splits as litdata shards under ``out``; return the manifest.

    ``start_method``: of the writer processes (litdata's default, ``spawn``, re-imports in each;
    ``fork`` starts faster where the caller has not started threads that hold locks).
    """
    litdata = require_litdata()
    if dtype not in ("int16", "float32"):
        raise UserError(f"dtype={dtype!r} must be int16 or float32")
    if not is_url(out):
        Path(out).mkdir(parents=True, exist_ok=True)
    splits = {}
    for split in SPLITS:
        records = datamodule.items(split)
        if datamodule.short == "skip":  # never used at this window: leave them out
            records = [r for r in records if r.num_samples >= datamodule.window]
        splits[split] = [record_entry(r) for r in records]
        if not records:
            continue
        fn = partial(encode_item, records=records, reader=datamodule.reader, dtype=dtype)
        with _optimizer_env():
            litdata.optimize(
                fn=fn,
                inputs=list(range(len(records))),
                output_dir=join(out, split),
                chunk_bytes=chunk_bytes,
                num_workers=max(int(num_workers), 1),
                keep_data_ordered=True,  # item position = record position (random access)
                mode="overwrite",
                verbose=False,
                start_method=start_method,
            )
        if not is_url(out) and not Path(join(out, split, "index.json")).is_file():
            raise UserError(
                f"litdata wrote no {join(out, split, 'index.json')}: see its messages above (a "
                "script calling write_shards needs an `if __name__ == '__main__':` guard)"
            )
    manifest = {
        "format": FORMAT_VERSION,
        "sample_rate": datamodule.sample_rate,
        "dtype": dtype,
        "window": datamodule.window,
        "short": datamodule.short,
        "speakers": list(datamodule.speakers),
        "classes": list(datamodule.classes),
        "num_phones": int(datamodule.num_phones),
        "phone_names": list(datamodule.phone_names),
        "provides_speakers": bool(datamodule.provides_speakers),
        "stats": dict(datamodule.stats),
        "source": dict(source or {}),
        "splits": splits,
    }
    _put_text(join(out, MANIFEST), json.dumps(manifest))
    return manifest


@contextlib.contextmanager
def _optimizer_env() -> Iterator[None]:
    """Undo what ``litdata.optimize`` changes in this process: it forces the multiprocessing
    start method to ``spawn`` (every later DataLoader worker would re-import everything:
    loaders then ran at a few items a second, measured) and sets ``DATA_OPTIMIZER_*``."""
    method = multiprocessing.get_start_method(allow_none=True)
    before = {k: v for k, v in os.environ.items() if k.startswith("DATA_OPTIMIZER_")}
    try:
        yield
    finally:
        multiprocessing.set_start_method(method, force=True)
        for key in [k for k in os.environ if k.startswith("DATA_OPTIMIZER_")]:
            del os.environ[key]
        os.environ.update(before)


def _put_text(target: str, text: str) -> None:
    if not is_url(target):
        tmp = f"{target}.{os.getpid()}.tmp"
        Path(tmp).write_text(text)
        os.replace(tmp, target)
        return
    from litdata.streaming.fs_provider import _get_fs_provider

    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / MANIFEST
        local.write_text(text)
        _get_fs_provider(target).upload_file(str(local), target)


def read_manifest(root: str) -> dict[str, Any]:
    """``<root>/cpc_manifest.json`` (downloaded first for a URL), checked."""
    target = join(root, MANIFEST)
    if is_url(root):
        require_litdata()
        from litdata.streaming.fs_provider import _get_fs_provider

        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / MANIFEST
            _get_fs_provider(target).download_file(target, str(local))
            text = local.read_text()
    else:
        path = Path(target)
        if not path.is_file():
            raise UserError(
                f"data.root={root} has no {MANIFEST}: with data.streaming=true, data.root is the "
                "folder written by `python -m cpc_lightning.prepare data=<option> out=<dir>`"
            )
        text = path.read_text()
    manifest = json.loads(text)
    if manifest.get("format") != FORMAT_VERSION:
        raise UserError(
            f"{target} has format {manifest.get('format')!r}, this release reads "
            f"{FORMAT_VERSION}: run cpc_lightning.prepare again"
        )
    return manifest


def manifest_records(entries: Sequence[Mapping[str, Any]], split: str) -> list[Utterance]:
    """The manifest's records of one split as :class:`Utterance` (phones come with the items)."""
    out = []
    for e in entries:
        out.append(
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
        )
    return out


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


# ------------------------------------------------------------------ reading (training)
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

    def __init__(
        self,
        root: str | os.PathLike[str],
        sample_rate: int = 16000,
        window: int = 20480,
        windows_per_utterance: int = 1,
        short: str = "pad",
        batch_size: int = 8,
        num_workers: int = 0,
        sampler: str = "uniform",
        seed: int = 0,
        cache_dir: str | os.PathLike[str] | None = None,
        augment: Sequence[str] | None = None,
        augment_params: Mapping[str, Mapping[str, Any]] | None = None,
        drop_last: bool = True,
    ) -> None:
        super().__init__()
        if str(root) in ("", "???", "None"):
            raise UserError("data.root is required with data.streaming=true: the prepare output")
        if int(windows_per_utterance) != 1:
            raise UserError(
                f"data.windows_per_utterance={windows_per_utterance} with data.streaming=true: "
                "shards give one window per utterance per epoch; set it to 1 (or train more epochs)"
            )
        if sampler != "uniform":
            raise UserError(
                f"data.sampler={sampler} with data.streaming=true: streamed batches are uniform "
                "shuffles of chunks; use data.sampler=uniform (and a negatives mode that needs no "
                "speaker-grouped batches)"
            )
        self.root = str(root) if is_url(root) else str(Path(root).expanduser().resolve())
        self.sample_rate, self.window, self.short = int(sample_rate), int(window), short
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        if self.num_workers == 0:
            # litdata's chunk thread polls without sleeping: in the training process it holds
            # the GIL against the step (loading measured ~10x slower); in a worker it does not.
            log.info("data.streaming=true with data.num_workers=0: reading shards in 1 worker")
            self.num_workers = 1
        self.seed, self.drop_last = int(seed), bool(drop_last)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else Path.cwd() / ".cache"
        from cpc_lightning.data.audio.datamodules import plain

        self.augment = build_augment(plain(augment), plain(augment_params), self.sample_rate)
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
    def tasks(self) -> list[str]:
        """Probe tasks the shards have labels for."""
        return tasks_with_labels(self.num_phones, self.speakers, self.classes)

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
            from litdata import StreamingDataset

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
