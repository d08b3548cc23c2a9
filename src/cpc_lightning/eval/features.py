"""Frozen features for the probes: one feature source (a model or MFCC) over one split.

A model source extracts through :meth:`CPCModule.features` (the one feature path); the MFCC
source computes 39-d MFCCs on the label-frame grid. Audio utterances of equal length are batched
(no padding, so every frame is exact); images come from the DataModule's ``feature_loader``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from cpc_lightning.data.audio.frames import HOP_SECONDS, LABEL_HOP
from cpc_lightning.eval.mfcc import mfcc_frames, mfcc_transform
from cpc_lightning.eval.settings import EvalSettings
from cpc_lightning.eval.tasks import Split, Task
from cpc_lightning.model.pooling import pool_grid
from cpc_lightning.progress import Progress, track

LABELS = {
    "cpc": "CPC (trained)",
    "random_init": "random init (same nets)",
    "mfcc": "MFCC (39-d)",
    "pixels": "raw pixels (standardised)",
}


@dataclass
class Source:
    """A feature source: a ``CPCModule`` (trained, or at random init) or None for MFCC (audio)
    and the raw pixels (``name="pixels"``, images)."""

    name: str
    model: Any = None
    tag: str | None = None  # identifies the weights for the cache (None: do not cache)
    title: str | None = None  # the label, when not LABELS[name]

    @property
    def label(self) -> str:
        return self.title or LABELS.get(self.name, self.name)


def device_of(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def length_batches(
    records: Sequence[Any],
    load: Callable[[Any], torch.Tensor],
    batch_size: int,
    desc: str | None = None,
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """``(indices, (B, L) waveforms)`` grouping utterances of equal length (no padding, exact).

    Records are read in order of ``num_samples``, so equal lengths are neighbours and only one
    group is held in memory. ``desc``: show progress (utterances done) under that name.
    """
    order = sorted(range(len(records)), key=lambda i: int(getattr(records[i], "num_samples", 0)))
    group: list[tuple[int, torch.Tensor]] = []
    with Progress(desc or "", len(records), "utt") if desc else nullcontext() as progress:
        for i in order:
            wav = load(records[i]).float().reshape(-1)
            if group and (len(wav) != len(group[0][1]) or len(group) >= batch_size):
                yield [j for j, _ in group], torch.stack([w for _, w in group])
                if progress is not None:
                    progress.update(len(group))
                group = []
            group.append((i, wav))
        if group:
            yield [j for j, _ in group], torch.stack([w for _, w in group])
            if progress is not None:
                progress.update(len(group))


def select(items: Sequence[Any], cap: int | None, seed: int) -> list[Any]:
    """A seeded subset of at most ``cap`` items, in their original order (all if no cap)."""
    if cap is None or len(items) <= cap:
        return list(items)
    keep = sorted(np.random.default_rng(seed).permutation(len(items))[:cap].tolist())
    return [items[i] for i in keep]


class _Featurizer:
    """Context manager: a ``(B, L) -> (B, T, D)`` function for a source, the model in eval mode
    on the settings' device (its training mode and device restored on exit)."""

    def __init__(self, source: Source, settings: EvalSettings, sample_rate: int) -> None:
        self.source, self.settings, self.sample_rate = source, settings, sample_rate
        self.device = device_of(settings.device)

    def __enter__(self) -> Callable[[torch.Tensor], torch.Tensor]:
        model, s = self.source.model, self.settings
        autocast = s.precision == "bf16" and self.device.type in ("cuda", "cpu")
        if model is None:
            transform = mfcc_transform(self.sample_rate).to(self.device)
            return lambda w: mfcc_frames(transform, w.to(self.device)).float().cpu()
        self._state = (model.training, next(model.parameters()).device)
        model.eval().to(self.device)

        def run(x: torch.Tensor) -> torch.Tensor:
            feature = s.feature or ("z" if getattr(model, "modality", "") == "image" else "c")
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=autocast):
                return model.features(x.to(self.device), feature, s.layer).float().cpu()

        return run

    def __exit__(self, *exc: object) -> None:
        if self.source.model is not None:
            training, device = self._state
            self.source.model.train(training).to(device)


def frame_rate(source: Source, sample_rate: int) -> float:
    """Feature frames per second of a source (MFCC frames are 10 ms label frames)."""
    if source.model is None:
        return 1.0 / HOP_SECONDS
    return sample_rate / int(getattr(source.model.encoder, "downsampling", LABEL_HOP))


@torch.no_grad()
def utterance_features(
    source: Source,
    datamodule: Any,
    records: Sequence[Any],
    settings: EvalSettings,
    desc: str | None = None,
) -> list[torch.Tensor]:
    """Frame features ``(T_i, D)`` of each record (in order), from one source (CPU, float32).

    ``desc``: show progress under that name. ``settings.normalise == "utterance"``: a model
    source's features are standardised per utterance (:func:`normalise_utterance`)."""
    out: list[torch.Tensor | None] = [None] * len(records)
    with _Featurizer(source, settings, int(datamodule.sample_rate)) as featurize:
        batches = length_batches(records, datamodule.load, settings.extract_batch, desc)
        for idx, wav in batches:
            feats = featurize(wav if source.model is None else wav.unsqueeze(1))
            for j, i in enumerate(idx):
                out[i] = feats[j]
    if source.model is not None and settings.normalise == "utterance":
        out = [normalise_utterance(f) for f in out]  # type: ignore[arg-type]
    return out  # type: ignore[return-value]


def normalise_utterance(frames: torch.Tensor) -> torch.Tensor:
    """``(T, D)`` frames shifted and scaled to zero mean, unit variance per dimension (per-utterance
    CMVN; a constant dimension becomes zeros)."""
    mean = frames.mean(0, keepdim=True)
    std = frames.std(0, keepdim=True, unbiased=False) if len(frames) > 1 else torch.ones_like(mean)
    return (frames - mean) / std.clamp_min(1e-5)


def split_records(datamodule: Any, split: str, settings: EvalSettings, seed: int) -> list[Any]:
    """The records of ``split``, capped by ``max_train_items`` / ``max_test_items`` (seeded)."""
    cap = settings.max_train_items if split == "train" else settings.max_test_items
    return select(datamodule.items(split), cap, seed)


def audio_task_features(
    source: Source,
    datamodule: Any,
    split: str,
    tasks: Sequence[Task],
    settings: EvalSettings,
    window_frames: int,
    seed: int = 0,
) -> dict[str, Split]:
    """Rows and labels per task name for one split of an audio DataModule, from one source
    (each task's ``rows`` of every utterance)."""
    records = split_records(datamodule, split, settings, seed)
    how = "meanstd" if source.model is None else str(settings.for_modality("audio").pool)
    feats = utterance_features(
        source, datamodule, records, settings, f"features {source.name} {split}"
    )
    out: dict[str, Split] = {}
    for task in tasks:
        if task.rows is None:
            raise ValueError(f"task={task.name} is not a linear-probe task (it has no rows)")
        xs, ys = [], []
        for rec, f in zip(records, feats, strict=True):
            got = task.rows(f, rec, window_frames, how)
            if got is not None and len(got[1]):
                xs.append(got[0])
                ys.append(got[1])
        if xs:
            out[task.name] = (torch.cat(xs), torch.cat(ys))
    return out


def image_from_grid(grid: torch.Tensor, stride: int) -> torch.Tensor:
    """Patch grids ``(B, G, G, C, P, P)`` (cut with ``stride``) -> the images they were cut from,
    ``(B, C, S, S)`` with ``S = (G - 1) stride + P`` (``torch.nn.functional.fold``; pixels
    covered by several patches are averaged, so an unaugmented grid gives the image back)."""
    b, gh, gw, c, p, _ = grid.shape
    cols = grid.permute(0, 3, 4, 5, 1, 2).reshape(b, c * p * p, gh * gw)
    size = ((gh - 1) * stride + p, (gw - 1) * stride + p)
    summed = F.fold(cols, size, kernel_size=p, stride=stride)
    cover = F.fold(torch.ones_like(cols[:1]), size, kernel_size=p, stride=stride)
    return summed / cover.clamp_min(1.0)


def pixel_rows(grid: torch.Tensor, stride: int, side: int | None) -> torch.Tensor:
    """The pixel baseline's rows ``(B, C S S)``: the preprocessed images of patch grids (same
    crop and normalisation as the model's input), area-averaged to ``side`` when larger."""
    img = image_from_grid(grid.float(), stride)
    if side is not None and max(img.shape[-2:]) > side:
        img = F.adaptive_avg_pool2d(img, side)
    return img.flatten(1)


def pixel_label(datamodule: Any, settings: EvalSettings) -> str:
    """How reports name the pixel baseline (with the size when area-averaged)."""
    size = int(getattr(datamodule, "image_size", 0) or 0)
    side = settings.pixel_side
    if side is not None and size > side:
        return f"raw pixels (standardised, area-averaged to {side}x{side})"
    return "raw pixels (standardised)"


def _image_loader(datamodule: Any, split: str, settings: EvalSettings, seed: int) -> Any:
    """The unaugmented loader of ``split``, limited to a seeded subset of ``max_train_items`` /
    ``max_test_items`` images (every class, not the first ones of a class-sorted folder)."""
    batch = max(settings.extract_batch, 1)
    loader = datamodule.feature_loader(split, batch_size=batch)
    cap = settings.max_train_items if split == "train" else settings.max_test_items
    dataset = getattr(loader, "dataset", None)
    if cap is None or dataset is None or len(dataset) <= cap:
        return loader
    keep = select(range(len(dataset)), cap, seed)
    workers = int(getattr(datamodule, "num_workers", 0) or 0)
    return DataLoader(Subset(dataset, keep), batch_size=batch, shuffle=False, num_workers=workers)


@torch.no_grad()
def image_class_features(
    source: Source,
    datamodule: Any,
    split: str,
    settings: EvalSettings,
    key: str = "label",
    seed: int = 0,
) -> Split:
    """Rows ``(N, D)`` and the labels (batch ``key``) of one split of an image DataModule: the
    model's grid (``settings.feature``) pooled as ``settings.pool`` (``model/pooling.py``), or
    for the ``pixels`` source the preprocessed images' pixels (:func:`pixel_rows`)."""
    if source.model is None and source.name != "pixels":
        raise ValueError("image runs have no MFCC baseline")
    s = settings.for_modality("image")
    cap = s.max_train_items if split == "train" else s.max_test_items
    stride = int(getattr(datamodule, "stride", 0) or 0)
    xs, ys = [], []
    loader = _image_loader(datamodule, split, s, seed)
    featurize = _Featurizer(source, s, 0) if source.model is not None else nullcontext()
    with featurize as run:
        for batch in track(loader, f"features {source.name} {split}", unit="batch"):
            if run is None:
                xs.append(pixel_rows(batch["x"], stride, s.pixel_side))
            else:
                xs.append(pool_grid(run(batch["x"]), str(s.pool)))
            ys.append(batch[key].long())
    x, y = torch.cat(xs), torch.cat(ys)
    return (x[:cap], y[:cap]) if cap is not None else (x, y)
