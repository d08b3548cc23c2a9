"""Where images come from: ImageFolder trees and CIFAR-10 python batches, as indexed sources."""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def scan_image_folder(
    split_dir: Path, classes: Sequence[str] | None = None
) -> tuple[list[tuple[Path, int]], list[str]]:
    """Index ``<split_dir>/<class>/**/*.{jpeg,jpg,png}`` (case-insensitive), sorted.

    Returns ``(samples, classes)``; ``samples`` is a list of ``(path, class index)``. With
    ``classes`` given (the training classes), every class folder must be one of them.
    """
    if not split_dir.is_dir():
        raise FileNotFoundError(
            f"{split_dir} is not a directory; expected class folders {split_dir}/<class>/*.JPEG"
        )
    found = sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not found:
        raise FileNotFoundError(
            f"{split_dir} has no class folders; expected {split_dir}/<class>/*.JPEG "
            f"(one folder per class)"
        )
    if classes is None:
        classes = found
    else:
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise ValueError(
                f"{split_dir} has class folders {unknown} that the training split lacks; "
                f"use the same class folder names in every split"
            )
    index = {name: i for i, name in enumerate(classes)}
    samples: list[tuple[Path, int]] = []
    for name in found:
        class_dir = split_dir / name
        files = sorted(
            Path(dirpath) / f
            for dirpath, _, filenames in os.walk(class_dir, followlinks=True)
            for f in filenames
            if _is_image(f)
        )
        if not files:
            raise FileNotFoundError(
                f"class folder {class_dir} has no images ({'/'.join(IMAGE_EXTENSIONS)}, any case); "
                f"add images to it or remove the folder"
            )
        samples.extend((f, index[name]) for f in files)
    return samples, list(classes)


class FolderSource:
    """Image files with labels; ``load(i)`` decodes one as an RGB PIL image."""

    def __init__(self, samples: list[tuple[Path, int]]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def name(self, i: int) -> str:
        return str(self.samples[i][0])

    def load(self, i: int) -> tuple[Image.Image, int]:
        path, label = self.samples[i]
        with Image.open(path) as img:
            return img.convert("RGB"), label


class ArraySource:
    """Images held in memory as uint8 (N, H, W, C) with labels (CIFAR-10 python batches)."""

    def __init__(self, images: np.ndarray, labels: Sequence[int], origin: str):
        self.images = images
        self.labels = [int(v) for v in labels]
        self.origin = origin

    def __len__(self) -> int:
        return len(self.images)

    def name(self, i: int) -> str:
        return f"{self.origin}[{i}]"

    def load(self, i: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[i]), self.labels[i]


def hold_out(
    source: FolderSource | ArraySource, fraction: float, seed: int = 0
) -> tuple[FolderSource | ArraySource, FolderSource | ArraySource]:
    """Split ``source`` into (kept, held out): ``fraction`` of each class's images, drawn with
    ``seed``, in their original order. A validation split of the training images for model
    selection; the same images for every run seed."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {fraction}")
    labels = np.asarray(
        [lab for _, lab in source.samples] if isinstance(source, FolderSource) else source.labels
    )
    rng = np.random.default_rng(seed)
    held = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        count = max(1, round(fraction * len(members)))
        held[rng.permutation(members)[:count]] = True
    return _subset(source, np.flatnonzero(~held)), _subset(source, np.flatnonzero(held))


def _subset(source: FolderSource | ArraySource, keep: np.ndarray) -> FolderSource | ArraySource:
    if isinstance(source, FolderSource):
        return FolderSource([source.samples[i] for i in keep])
    labels = [source.labels[i] for i in keep]
    return ArraySource(source.images[keep], labels, f"{source.origin} (subset)")


def find_cifar_batches(root: Path) -> Path | None:
    """The folder holding ``data_batch_1`` (``root`` or ``root/cifar-10-batches-py``), or None."""
    for folder in (root, root / "cifar-10-batches-py"):
        if (folder / "data_batch_1").is_file():
            return folder
    return None


def read_cifar_batches(folder: Path, train: bool) -> tuple[np.ndarray, list[int], list[str]]:
    """Read CIFAR-10 python pickle batches: ``(images uint8 (N, 32, 32, 3), labels, classes)``.

    Training reads every ``data_batch_<n>`` present (1..5); test reads ``test_batch``. Class
    names come from ``batches.meta`` when present.
    """
    names = sorted(
        (p.name for p in folder.glob("data_batch_*") if p.name[11:].isdigit()),
        key=lambda s: int(s[11:]),
    )
    files = [folder / n for n in names] if train else [folder / "test_batch"]
    if not files or not all(f.is_file() for f in files):
        want = "data_batch_1..5" if train else "test_batch"
        raise FileNotFoundError(f"{folder} lacks the CIFAR-10 python batch file(s) {want}")
    images, labels = [], []
    for f in files:
        with open(f, "rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.extend(int(v) for v in batch[b"labels"])
    classes = list(CIFAR10_CLASSES)
    meta = folder / "batches.meta"
    if meta.is_file():
        with open(meta, "rb") as fh:
            classes = [n.decode() for n in pickle.load(fh, encoding="bytes")[b"label_names"]]
    return np.ascontiguousarray(np.concatenate(images)), labels, classes
