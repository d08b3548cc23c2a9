"""Features per (task, source, data, settings), extracted once and cached on disk.

The cache file ``<cache_dir>/<task>_<source>_<hash>.pt`` is named by a hash of the source's
weights tag, the data config, the window and the extraction settings; a source without a tag is
never cached.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from cpc_lightning.data.audio.frames import LABEL_HOP
from cpc_lightning.eval.features import Source, audio_task_features, image_class_features
from cpc_lightning.eval.settings import EvalSettings
from cpc_lightning.eval.tasks import Split, Task

#: ``{task: {"train": (X, y), "test": (X, y)}}``
TaskFeatures = dict[str, dict[str, Split]]
KEY_SETTINGS = ("feature", "layer", "pool", "normalise", "max_train_items", "max_test_items")
#: Image rows' settings and version (2: capped splits are seeded subsets, pooled as ``pool``).
IMAGE_KEY = {"image_rows": 2}


def _hash(payload: Mapping[str, Any]) -> str:
    blob = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def _cache_path(
    cache_dir: Path | None,
    task: str,
    source: Source,
    data_key: Mapping[str, Any],
    settings: EvalSettings,
    window_frames: int,
    seed: int,
    image: bool = False,
) -> Path | None:
    if cache_dir is None or source.tag is None:
        return None
    payload = {
        "task": task,
        "source": source.name,
        "tag": source.tag,
        "data": data_key,
        "window_frames": window_frames,
        "seed": seed,
        **{k: getattr(settings, k) for k in KEY_SETTINGS},
    }
    if image:
        payload.update(IMAGE_KEY, pixel_side=settings.pixel_side)
    return Path(cache_dir) / f"{task}_{source.name}_{_hash(payload)}.pt"


def _extract(
    source: Source,
    datamodule: Any,
    tasks: Sequence[Task],
    settings: EvalSettings,
    window_frames: int,
    seed: int,
) -> TaskFeatures:
    if datamodule.modality == "image":  # grid-pooled rows, labelled by each task's batch key
        return {
            t.name: {
                s: image_class_features(source, datamodule, s, settings, t.image_labels, seed)
                for s in ("train", "test")
            }
            for t in tasks
            if t.image_labels is not None
        }
    per_split = {
        s: audio_task_features(source, datamodule, s, tasks, settings, window_frames, seed)
        for s in ("train", "test")
    }
    return {
        t.name: {s: per_split[s][t.name] for s in per_split if t.name in per_split[s]}
        for t in tasks
    }


def extract_features(
    source: Source,
    datamodule: Any,
    tasks: Sequence[Task],
    settings: EvalSettings,
    data_key: Mapping[str, Any],
    cache_dir: Path | None = None,
    seed: int = 0,
) -> tuple[TaskFeatures, dict[str, Any]]:
    """``{task name: {"train": (X, y), "test": (X, y)}}`` for one source, via the on-disk cache.

    ``data_key`` identifies the data (its config). Returns the features and, per task,
    ``{"seconds", "cached", "cache_file"}``.
    """
    window_frames = max(1, int(getattr(datamodule, "window", 0) or 0) // LABEL_HOP)
    image = getattr(datamodule, "modality", "audio") == "image"
    paths = {
        t.name: _cache_path(
            cache_dir, t.name, source, data_key, settings, window_frames, seed, image
        )
        for t in tasks
    }
    out: TaskFeatures = {}
    info: dict[str, Any] = {}
    for task, path in paths.items():
        if path is not None and path.is_file():
            out[task] = torch.load(path, map_location="cpu", weights_only=True)
            info[task] = {"seconds": 0.0, "cached": True, "cache_file": str(path)}
    todo = [t for t in tasks if t.name not in out]
    if not todo:
        return out, info
    t0 = time.perf_counter()
    got = _extract(source, datamodule, todo, settings, window_frames, seed)
    seconds = time.perf_counter() - t0
    for task in (t.name for t in todo):
        feats = got.get(task, {})
        if "train" not in feats or "test" not in feats:
            continue
        out[task] = feats
        info[task] = {"seconds": seconds, "cached": False}
        path = paths[task]
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save(feats, tmp)
            tmp.replace(path)
            info[task]["cache_file"] = str(path)
    return out, info
