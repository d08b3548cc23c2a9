"""Audio LightningDataModules: LibriSpeech layout, generic audio folders, the synthetic corpus.

Loaders yield the audio batch of :mod:`cpc_lightning.data` (``x`` (B, 1, L), ``mask`` (B, L),
``speaker`` (B,), ``phones`` (B, L // 160), ``label`` (B,), ``index`` (B,)).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from cpc_lightning.data import IGNORE_INDEX, label_index, labels_with
from cpc_lightning.data.audio.augment import build_augment
from cpc_lightning.data.audio.labels import SplitRule
from cpc_lightning.data.audio.layouts import FolderLayout, LibriSpeechLayout
from cpc_lightning.data.audio.manifest import (
    AUDIO_EXTENSIONS,
    Layout,
    Manifest,
    Utterance,
    build_manifest,
)
from cpc_lightning.data.audio.reader import AudioReader, build_resample_cache
from cpc_lightning.data.audio.samplers import check_sampler, make_batch_sampler
from cpc_lightning.data.audio.settings import loader_settings, plain
from cpc_lightning.data.audio.synthetic import ensure_synthetic_corpus
from cpc_lightning.data.audio.windows import WindowDataset
from cpc_lightning.data.paths import resolve_root
from cpc_lightning.data.resumable import ResumableLoader
from cpc_lightning.errors import UserError

log = logging.getLogger(__name__)

__all__ = [
    "AudioDataModule",
    "AudioFolderDataModule",
    "LibriSpeechDataModule",
    "SyntheticSpeechDataModule",
]


class AudioDataModule(pl.LightningDataModule):
    """Base audio DataModule: a manifest of utterances, random windows, speaker-aware samplers.

    Subclasses say where the corpus is (``root``) and how it is laid out (:meth:`layout`). The
    batch samplers shard across DDP ranks themselves (``handles_distributed = True``): the
    trainer must be built with ``use_distributed_sampler=False`` so Lightning keeps them.

    The held-out ``test`` split (Lightning's validation loop) is chosen by ``test_pattern``,
    ``test_speakers``, ``num_test_speakers``, the layout's split files, or ``test_fraction``
    (see :class:`~cpc_lightning.data.audio.labels.SplitRule`); ``exclude_speakers`` are in
    neither split.

    Caching: files not at ``sample_rate`` are resampled once into one memory-mapped ``.npy`` in
    ``cache_dir`` by ``prepare_data`` (``resample_cache``; float32, ~230 MB per hour of audio),
    else in memory; a corpus whose audio fits ``memory_cache_mb`` is kept whole in memory per
    process. ``prepare_data`` (rank 0) writes the manifest cache; ``setup`` only reads it.
    """

    modality = "audio"
    handles_distributed: bool = True

    def __init__(
        self,
        test_pattern: str | None = None,
        test_speakers: Sequence[str] | None = None,
        num_test_speakers: int | None = None,
        test_fraction: float = 0.1,
        exclude_speakers: Sequence[str] | None = None,
        memory_cache_mb: float = 512.0,
        resample_cache: bool = True,
        num_phones: int | None = None,
        streaming: bool = False,
        on_bad_file: str = "skip",
        **loader: Any,
    ) -> None:
        """The corpus keys; ``loader``: the keys of
        :class:`~cpc_lightning.data.audio.settings.LoaderSettings` (window, batches, ...)."""
        super().__init__()
        if streaming:
            raise ValueError(
                "data.streaming=true is read by cpc_lightning.build.build_datamodule (prepared "
                "shards), not by the file-based DataModules"
            )
        s = self.settings = loader_settings(loader)
        self.on_bad_file = on_bad_file  # skip | error: checked by build_manifest
        self.batch_size = check_sampler(
            s.sampler, s.batch_size, s.speakers_per_batch, s.windows_per_speaker
        )
        self.sampler_name, self.speakers_per_batch = s.sampler, s.speakers_per_batch
        self.windows_per_speaker = s.windows_per_speaker
        self.sample_rate, self.window, self.short = s.sample_rate, s.window, s.short
        self.windows_per_utterance = s.windows_per_utterance
        self.num_workers, self.seed, self.drop_last = s.num_workers, s.seed, s.drop_last
        speakers = [str(x) for x in plain(test_speakers)] if test_speakers else None
        excluded = [str(x) for x in plain(exclude_speakers)] if exclude_speakers else None
        self.split_rule = SplitRule(
            test_pattern, speakers, num_test_speakers, float(test_fraction), self.seed,
            exclude_speakers=excluded,
        )  # fmt: skip
        self.cache_dir = s.cache_path
        self.augment = build_augment(s.augment, s.augment_params, self.sample_rate)
        self.resample_cache = bool(resample_cache)
        self._num_phones_cfg = num_phones
        self.reader = AudioReader(self.sample_rate, float(memory_cache_mb))
        self.root: Path | None = None
        self.speakers: list[str] = []
        self.classes: list[str] = []
        self.num_phones = 0
        self.phone_names: list[str] = []
        self.provides_speakers = False
        self.stats: dict[str, int] = {}
        self.label_problems: list[str] = []  # label/split files that match no audio
        self._manifest: Manifest | None = None
        self._records: dict[str, list[Utterance]] = {}
        self.train_set: WindowDataset | None = None
        self.val_set: WindowDataset | None = None

    # --- subclasses -------------------------------------------------------------------------
    def layout(self) -> Layout:
        """How the corpus under ``root`` is laid out and labelled."""
        raise NotImplementedError

    def prepare_corpus(self) -> None:
        """Make the corpus exist under ``root`` (generated corpora write it here)."""

    def _build_manifest(self, write: bool) -> Manifest:
        self.prepare_corpus()
        assert self.root is not None
        return build_manifest(
            self.layout(), self.root, self.sample_rate, self.cache_dir, write, self.on_bad_file
        )

    # --- Lightning hooks --------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Build and write the manifest cache (Lightning runs this on one process per node)."""
        self._manifest = self._build_manifest(write=True)
        if self.resample_cache:
            build_resample_cache(self._manifest.records, self.sample_rate, self.cache_dir, True)

    def setup(self, stage: str | None = None) -> None:
        """Read the manifest (never writes) and build the window datasets."""
        if self.train_set is not None:
            return
        manifest = self._manifest or self._build_manifest(write=False)
        self._manifest = manifest
        self.label_problems = list(manifest.label_problems)
        records = manifest.records
        if self.resample_cache:  # read-only here: use it if prepare_data wrote it
            pack = build_resample_cache(records, self.sample_rate, self.cache_dir, write=False)
            self.reader.use_resample_cache(pack)
        self.reader.cache_full = sum(r.num_samples for r in records) * 4 <= self.reader.budget
        self._index_labels(records)
        self._records = {s: [r for r in records if r.split == s] for s in ("train", "test")}
        self._records["excluded"] = [r for r in records if r.split == "excluded"]
        windows = self._window_records(manifest)
        self.train_set = WindowDataset(
            windows["train"],
            self.reader,
            self.window,
            self.windows_per_utterance,
            train=True,
            seed=self.seed,
            augment=self.augment,
        )
        self.val_set = WindowDataset(
            windows["test"], self.reader, self.window, 1, train=False, seed=self.seed
        )

    def _index_labels(self, records: list[Utterance]) -> None:
        """Speaker/class names and ids, the phone count, and the speaker requirement."""
        spk = label_index(r.speaker for r in records)
        cls = label_index(r.label for r in records)
        self.speakers, self.classes = list(spk), list(cls)
        for r in records:
            r.speaker_index = spk[r.speaker] if r.speaker is not None else IGNORE_INDEX
            r.label_index = cls[r.label] if r.label is not None else IGNORE_INDEX
        self.provides_speakers = bool(records) and all(r.speaker is not None for r in records)
        if self._num_phones_cfg is not None:
            self.num_phones = int(self._num_phones_cfg)
        else:
            maxes = [int(r.phones.max()) for r in records if r.phones is not None and r.phones.size]
            self.num_phones = max(maxes) + 1 if maxes else 0
        if self.sampler_name != "uniform" and not self.provides_speakers:
            raise ValueError(
                f"data.sampler={self.sampler_name} needs a speaker for every utterance, but "
                f"{self.root} gives none for some; use data.sampler=uniform or a "
                "data.pattern with a (?P<speaker>...) group"
            )

    def _window_records(self, manifest: Manifest) -> dict[str, list[Utterance]]:
        """Records to cut training/validation windows from (short ones padded or skipped)."""
        kept = {k: self._records[k] for k in ("train", "test")}
        n_short = sum(r.num_samples < self.window for v in kept.values() for r in v)
        windows = {k: list(v) for k, v in kept.items()}
        if self.short == "skip" and n_short:
            windows = {
                k: [r for r in v if r.num_samples >= self.window] for k, v in windows.items()
            }
            log.info("%d utterances shorter than data.window=%d skipped", n_short, self.window)
        elif n_short:
            log.info(
                "%d utterances shorter than data.window=%d are zero-padded", n_short, self.window
            )
        self.stats = {
            "utterances": len(manifest.records),
            "train": len(self._records["train"]),
            "test": len(self._records["test"]),
            "excluded_from_split": len(self._records["excluded"]),
            "corrupt": len(manifest.corrupt),
            "truncated": len(manifest.truncated),
            "label_ids_without_audio": len(manifest.label_ids_without_audio),
            "unmatched": manifest.unmatched,
            "short": n_short,
            "short_skipped": n_short if self.short == "skip" else 0,
            "short_padded": n_short if self.short == "pad" else 0,
        }
        if not windows["train"]:
            raise ValueError(
                f"no training utterances left (data.short={self.short}, data.window={self.window}, "
                f"{n_short} shorter); lower data.window or use data.short=pad"
            )
        return windows

    # --- evaluation API ---------------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        """Label kinds this corpus has (``cpc_lightning.data.LABELS``; frame phones also give
        phone sequences)."""
        records = [r for v in self._records.values() for r in v]
        sequences = any(r.phone_seq is not None for r in records)
        return labels_with(self.num_phones, self.speakers, self.classes, sequences)

    def items(self, split: str) -> list[Utterance]:
        """Utterance records of ``split`` (``train`` or ``test``, the held-out split)."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if not self._records:
            self.setup()
        return list(self._records[split])

    def load(self, record: Utterance) -> torch.Tensor:
        """Whole utterance at ``sample_rate``: float32 (num_samples,)."""
        return self.reader.load(record)

    # --- loaders ----------------------------------------------------------------------------
    def _loader(self, ds: WindowDataset, train: bool) -> ResumableLoader:
        speakers = [ds.records[ds.utterance_of(i)].speaker_index for i in range(len(ds))]
        p = self.speakers_per_batch
        if self.sampler_name == "speaker_groups" and not train and p is not None:
            p = min(int(p), len(set(speakers)))  # a held-out split may have fewer speakers
        sampler = make_batch_sampler(
            self.sampler_name,
            speakers,
            self.batch_size,
            p,
            self.windows_per_speaker,
            seed=self.seed,
            shuffle=train,
            drop_last=self.drop_last if train else False,
            dataset=ds,
        )
        if train and len(sampler) == 0:
            raise UserError(
                f"the training loader would be empty: {len(ds)} windows per epoch on this rank are "
                f"fewer than data.batch_size={self.batch_size} with data.drop_last=true; lower "
                "data.batch_size or set data.drop_last=false"
            )
        return ResumableLoader(
            ds,
            sampler,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        assert self.train_set is not None
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader | list:
        self.setup("validate")
        assert self.val_set is not None
        if len(self.val_set) == 0:
            return []
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader | list:
        return self.val_dataloader()


class LibriSpeechDataModule(AudioDataModule):
    """``<root>/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<n>.flac`` + CPC labels.

    ``subsets`` (default: every folder in root), ``phones_file`` / ``train_split_file`` /
    ``test_split_file`` (default: ``converted_aligned_phones.txt``, ``train_split.txt``,
    ``test_split.txt`` in root when present). ``phone_tolerance``: frames a label line may differ
    from ``floor((samples-400)/160)+1``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        subsets: Sequence[str] | None = None,
        phones_file: str | None = None,
        train_split_file: str | None = None,
        test_split_file: str | None = None,
        phone_tolerance: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.root = resolve_root(root)
        self.subsets = list(plain(subsets)) if subsets is not None else None
        self.phones_file = phones_file
        self.train_split_file = train_split_file
        self.test_split_file = test_split_file
        self.phone_tolerance = int(phone_tolerance)

    def layout(self) -> Layout:
        return LibriSpeechLayout(
            self.subsets,
            self.phones_file,
            self.train_split_file,
            self.test_split_file,
            self.phone_tolerance,
            self.split_rule,
        )


class AudioFolderDataModule(AudioDataModule):
    """Any folder of audio files; ``pattern`` (regex on the path relative to root, named groups
    ``label`` and/or ``speaker``) gives labels; ``test_pattern`` selects the held-out split."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        pattern: str | None = None,
        extensions: Sequence[str] = AUDIO_EXTENSIONS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.root = resolve_root(root)
        self.pattern = pattern
        self.extensions = [str(e).lower().lstrip(".") for e in plain(extensions)]

    def layout(self) -> Layout:
        return FolderLayout(self.extensions, self.pattern, self.split_rule)


class SyntheticSpeechDataModule(LibriSpeechDataModule):
    """The generated speech-like corpus (``data=synthetic_speech``), read as LibriSpeech.

    ``synthetic``: keyword arguments of ``ensure_synthetic_corpus`` (``num_speakers``,
    ``utterances_per_speaker``, ``min_seconds``, ``max_seconds``, ``num_phones``, ...); the corpus
    is written under ``cache_dir`` once (``prepare_data``; ``setup`` generates it only if missing).
    """

    def __init__(
        self,
        synthetic: Mapping[str, Any] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> None:
        self.synthetic = dict(plain(synthetic) or {})
        cache = Path(cache_dir) if cache_dir is not None else Path.cwd() / ".cache"
        kwargs.setdefault("num_phones", self.synthetic.get("num_phones"))
        super().__init__(root=cache, cache_dir=cache, **kwargs)
        self._corpus_root: Path | None = None

    def prepare_corpus(self) -> None:
        """Generate the corpus under ``cache_dir`` once (then only its root is looked up)."""
        if self._corpus_root is None:
            params = {"seed": self.seed, **self.synthetic, "sample_rate": self.sample_rate}
            self._corpus_root = Path(ensure_synthetic_corpus(self.cache_dir, **params))
            self.root = self._corpus_root
