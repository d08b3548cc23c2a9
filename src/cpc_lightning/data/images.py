"""Images -> grids of overlapping patches (CPC v1/v2), as LightningDataModules.

Batch (dict, see ``cpc_lightning.data``):
    x      float32 (B, G, G, C, P, P)  x[:, i, j] is the patch at row i, column j, cut with stride s
    label  int64   (B,)                class index into ``datamodule.classes``
    index  int64   (B,)                sample index in its split

Two sources:
    ``ImagePatchDataModule``    ImageFolder tree ``<root>/{train,val}/<class>/*.{jpeg,jpg,png}``;
                                random resized crop for training, resize + centre crop otherwise.
    ``CIFAR10PatchDataModule``  CIFAR-10 python batches (``data_batch_1..5``, ``test_batch``) or an
                                ImageFolder tree ``<root>/{train,test}/<class>/*``; random crop with
                                padding + flip for training, centre crop otherwise.

The grid is cut with ``Tensor.unfold``; CPC v2 per-patch augmentation (``augment: v2``) is applied
to all patches of an image at once by ``PatchAugment``.
"""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
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
AUGMENT_MODES = ("none", "v2")


# ----------------------------------------------------------------------------------------------
# Grid and per-patch augmentation
# ----------------------------------------------------------------------------------------------
def grid_size(image_size: int, patch_size: int, stride: int) -> int:
    """Patches per side, G = (image_size - patch_size) // stride + 1."""
    if patch_size < 1 or stride < 1 or image_size < patch_size:
        raise ValueError(
            f"need image_size >= patch_size >= 1 and stride >= 1, got image_size={image_size}, "
            f"patch_size={patch_size}, stride={stride}"
        )
    return (image_size - patch_size) // stride + 1


def cut_grid(img: Tensor, patch_size: int, stride: int) -> Tensor:
    """Cut (..., C, H, W) into overlapping patches (..., Gh, Gw, C, P, P), row-major.

    ``out[..., i, j, :, :, :] == img[..., :, i*stride : i*stride+P, j*stride : j*stride+P]``.
    """
    if img.shape[-1] < patch_size or img.shape[-2] < patch_size:
        raise ValueError(
            f"image of size {tuple(img.shape[-2:])} is smaller than patch {patch_size}"
        )
    # unfold H then W: (..., C, Gh, Gw, P_h, P_w), then move C behind the grid
    patches = img.unfold(-2, patch_size, stride).unfold(-2, patch_size, stride)
    return patches.movedim(-5, -3).contiguous()


class PatchAugment:
    """CPC v2 augmentation of each patch on its own: random crop + horizontal flip + colour drop.

    Works on normalised patches (..., C, P, P) and keeps their shape. The crop (side a random
    fraction in [min_crop, 1] of P, anywhere inside the patch) and the flip are one affine
    ``grid_sample`` resampled back to P x P for all patches at once; colour drop keeps one random
    channel and sets the others to 0 (the dataset mean after normalisation).
    """

    def __init__(self, min_crop: float = 0.7, flip_p: float = 0.5, colour_drop_p: float = 0.5):
        if not 0.0 < min_crop <= 1.0:
            raise ValueError(f"min_crop must be in (0, 1], got {min_crop}")
        self.min_crop = min_crop
        self.flip_p = flip_p
        self.colour_drop_p = colour_drop_p

    def __call__(self, patches: Tensor) -> Tensor:
        """Augment (..., C, P, P) -> (..., C, P, P)."""
        shape = patches.shape
        x = patches.reshape(-1, *shape[-3:])
        n, c = x.shape[:2]
        scale = torch.empty(n).uniform_(self.min_crop, 1.0)
        shift = (torch.rand(n, 2) * 2 - 1) * (1 - scale)[:, None]
        flip = torch.where(torch.rand(n) < self.flip_p, -1.0, 1.0)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = scale * flip
        theta[:, 1, 1] = scale
        theta[:, :, 2] = shift
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if c > 1 and self.colour_drop_p > 0:
            keep = F.one_hot(torch.randint(c, (n,)), c).to(x.dtype)
            drop = torch.rand(n) < self.colour_drop_p
            keep[~drop] = 1.0
            x = x * keep[:, :, None, None]
        return x.reshape(shape)


def make_patch_augment(augment: str) -> PatchAugment | None:
    """``"v2"`` -> ``PatchAugment()``, ``"none"`` -> None."""
    if augment not in AUGMENT_MODES:
        raise ValueError(f"augment must be one of {AUGMENT_MODES}, got {augment!r}")
    return PatchAugment() if augment == "v2" else None


# ----------------------------------------------------------------------------------------------
# Sources: where images come from
# ----------------------------------------------------------------------------------------------
def resolve_root(root: str | os.PathLike) -> Path:
    """A relative root is relative to the launch directory when Hydra runs, else to the cwd."""
    path = Path(os.fspath(root)).expanduser()
    if not path.is_absolute():
        from hydra.core.hydra_config import HydraConfig
        from hydra.utils import to_absolute_path

        if HydraConfig.initialized():
            return Path(to_absolute_path(str(path)))
    return path


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


# ----------------------------------------------------------------------------------------------
# Dataset
# ----------------------------------------------------------------------------------------------
class PatchGridDataset(Dataset):
    """One image -> ``{"x": (G, G, C, P, P), "label": int64, "index": int64}``.

    ``transform`` maps a PIL image to a normalised float tensor (C, S, S); ``min_size`` (if set)
    rejects images whose shorter side is below it with an error naming the file. Unreadable
    files are skipped with a warning naming them (the next readable sample is returned).
    """

    def __init__(
        self,
        source: FolderSource | ArraySource,
        transform: Callable[[Image.Image], Tensor],
        patch_size: int,
        stride: int,
        patch_augment: Callable[[Tensor], Tensor] | None = None,
        min_size: int | None = None,
        size_hint: str = "",
    ):
        self.source = source
        self.transform = transform
        self.patch_size = patch_size
        self.stride = stride
        self.patch_augment = patch_augment
        self.min_size = min_size
        self.size_hint = size_hint
        self._warned: set[int] = set()

    def __len__(self) -> int:
        return len(self.source)

    def _load(self, idx: int) -> tuple[Image.Image, int, int]:
        n = len(self.source)
        for step in range(n):
            j = (idx + step) % n
            try:
                img, label = self.source.load(j)
            except (OSError, SyntaxError, Image.DecompressionBombError) as err:
                if j not in self._warned:
                    self._warned.add(j)
                    warnings.warn(
                        f"skipping unreadable image {self.source.name(j)} ({err}); "
                        f"replace or delete the file",
                        RuntimeWarning,
                        stacklevel=3,
                    )
                continue
            return img, label, j
        raise RuntimeError(f"no readable image among the {n} of this split")

    def __getitem__(self, idx: int) -> dict[str, Tensor]:
        img, label, j = self._load(idx)
        if self.min_size is not None and min(img.size) < self.min_size:
            w, h = img.size
            raise ValueError(
                f"image {self.source.name(j)} is {w}x{h}, smaller than the {self.min_size}x"
                f"{self.min_size} crop; {self.size_hint}"
            )
        x = cut_grid(self.transform(img), self.patch_size, self.stride)
        if self.patch_augment is not None:
            x = self.patch_augment(x)
        return {
            "x": x,
            "label": torch.tensor(label, dtype=torch.int64),
            "index": torch.tensor(j, dtype=torch.int64),
        }


# ----------------------------------------------------------------------------------------------
# DataModules
# ----------------------------------------------------------------------------------------------
def _to_tensor(mean: Sequence[float], std: Sequence[float]) -> list:
    return [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=[float(m) for m in mean], std=[float(s) for s in std]),
    ]


class _PatchGridDataModule(pl.LightningDataModule):
    """Loaders shared by the image DataModules; subclasses build the sources and transforms."""

    provides_speakers = False
    handles_distributed = False
    _min_size: int | None = None  # images below this side length are an error (no resize)
    _size_hint = ""  # how to fix that error

    def __init__(
        self,
        root: str | os.PathLike,
        batch_size: int,
        num_workers: int,
        image_size: int,
        patch_size: int,
        stride: int,
        augment: str,
        mean: Sequence[float],
        std: Sequence[float],
    ):
        super().__init__()
        self.root = resolve_root(root)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.image_size = int(image_size)
        self.patch_size = int(patch_size)
        self.stride = int(stride)
        self.grid_size = grid_size(self.image_size, self.patch_size, self.stride)
        self.augment = str(augment)
        self.patch_augment = make_patch_augment(self.augment)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.classes: list[str] = []
        self._sources: dict[str, FolderSource | ArraySource] = {}
        self._train_set: PatchGridDataset | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    # subclasses -------------------------------------------------------------------------------
    def _build_sources(self) -> tuple[FolderSource | ArraySource, FolderSource | ArraySource]:
        raise NotImplementedError

    def _train_transform(self) -> Callable[[Image.Image], Tensor]:
        raise NotImplementedError

    def _eval_transform(self) -> Callable[[Image.Image], Tensor]:
        raise NotImplementedError

    # Lightning --------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Index both splits (once); sets ``classes``."""
        if self._sources:
            return
        train, test = self._build_sources()
        self._sources = {"train": train, "test": test}
        self._train_set = self._dataset("train", self._train_transform(), self.patch_augment)

    def _dataset(self, split: str, transform, patch_augment=None) -> PatchGridDataset:
        return PatchGridDataset(
            self._sources[split],
            transform,
            self.patch_size,
            self.stride,
            patch_augment=patch_augment,
            min_size=self._min_size,
            size_hint=self._size_hint,
        )

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=shuffle and len(dataset) >= batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled, augmented training batches (a last incomplete batch is dropped)."""
        self.setup()
        assert self._train_set is not None
        return self._loader(self._train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Held-out split, deterministic (centre crop, no augmentation), fixed order."""
        return self.feature_loader("test")

    def test_dataloader(self) -> DataLoader:
        """Same as ``val_dataloader``."""
        return self.feature_loader("test")

    def feature_loader(self, split: str, batch_size: int | None = None) -> DataLoader:
        """Unaugmented batches of ``split`` ("train"/"test"; "val" = "test"), fixed order."""
        split = "test" if split == "val" else split
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.setup()
        dataset = self._dataset(split, self._eval_transform())
        return self._loader(dataset, batch_size or self.batch_size, shuffle=False)


class ImagePatchDataModule(_PatchGridDataModule):
    """ImageFolder tree ``<root>/{train,val}/<class>/*.{jpeg,jpg,png}`` -> patch grids.

    Training: random resized crop (area fraction in ``crop_scale``) to ``image_size`` + flip,
    then the grid, then per-patch augmentation if ``augment="v2"``. Evaluation: resize the
    shorter side to ``resize_size`` (default ``image_size / 0.875``) and centre crop
    ``image_size``. Defaults are CPC v1's: 256 crops, 7x7 grid of 64x64 patches, stride 32.
    The held-out split is ``val/`` (or ``test/`` if there is no ``val/``).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        batch_size: int = 32,
        num_workers: int = 0,
        image_size: int = 256,
        patch_size: int = 64,
        stride: int = 32,
        augment: str = "none",
        crop_scale: Sequence[float] = (0.2, 1.0),
        resize_size: int | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ):
        super().__init__(
            root, batch_size, num_workers, image_size, patch_size, stride, augment, mean, std
        )
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))
        self.resize_size = int(resize_size or round(self.image_size / 0.875))
        if self.resize_size < self.image_size:
            raise ValueError(
                f"resize_size={self.resize_size} is smaller than image_size={self.image_size}; "
                f"set data.resize_size >= data.image_size (or null)"
            )

    def _build_sources(self) -> tuple[FolderSource, FolderSource]:
        layout = f"{self.root}/train/<class>/*.JPEG and {self.root}/val/<class>/*.JPEG"
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"data.root {self.root} does not exist; expected an ImageFolder tree {layout}; "
                f"set data.root to the dataset folder"
            )
        if not (self.root / "train").is_dir():
            raise FileNotFoundError(
                f"data.root {self.root} has no train/ folder; expected {layout}"
            )
        held_out = next((self.root / d for d in ("val", "test") if (self.root / d).is_dir()), None)
        if held_out is None:
            raise FileNotFoundError(
                f"data.root {self.root} has no val/ (or test/) folder; expected {layout}"
            )
        train, self.classes = scan_image_folder(self.root / "train")
        test, _ = scan_image_folder(held_out, self.classes)
        return FolderSource(train), FolderSource(test)

    def _train_transform(self) -> Callable[[Image.Image], Tensor]:
        return v2.Compose(
            [
                v2.RandomResizedCrop(self.image_size, scale=self.crop_scale, antialias=True),
                v2.RandomHorizontalFlip(),
                *_to_tensor(self.mean, self.std),
            ]
        )

    def _eval_transform(self) -> Callable[[Image.Image], Tensor]:
        return v2.Compose(
            [
                v2.Resize(self.resize_size, antialias=True),
                v2.CenterCrop(self.image_size),
                *_to_tensor(self.mean, self.std),
            ]
        )


class CIFAR10PatchDataModule(_PatchGridDataModule):
    """CIFAR-10 -> patch grids (default 32x32 -> 7x7 grid of 8x8 patches, stride 4).

    ``layout``: ``"batches"`` (official python pickles ``data_batch_1..5`` + ``test_batch`` in
    ``root`` or ``root/cifar-10-batches-py``), ``"folder"`` (``root/{train,test}/<class>/*``) or
    ``"auto"`` (whichever is there). Training: random crop with ``padding`` + horizontal flip of
    the whole image, optional per-patch ``augment="v2"``. Evaluation: centre crop. Images must be
    at least ``image_size`` on each side (no resizing).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        batch_size: int = 64,
        num_workers: int = 0,
        image_size: int = 32,
        patch_size: int = 8,
        stride: int = 4,
        augment: str = "none",
        padding: int = 4,
        layout: str = "auto",
        mean: Sequence[float] = CIFAR10_MEAN,
        std: Sequence[float] = CIFAR10_STD,
    ):
        super().__init__(
            root, batch_size, num_workers, image_size, patch_size, stride, augment, mean, std
        )
        if layout not in ("auto", "batches", "folder"):
            raise ValueError(f"layout must be auto, batches or folder, got {layout!r}")
        self.layout = layout
        self.padding = int(padding)
        self._min_size = self.image_size
        self._size_hint = (
            "set data.image_size <= the smallest image side, or use data=imagenet_patches, "
            "which resizes"
        )

    def _build_sources(self) -> tuple[FolderSource | ArraySource, FolderSource | ArraySource]:
        layouts = (
            f"python batches {self.root}/[cifar-10-batches-py/]data_batch_1..5 + test_batch, "
            f"or an ImageFolder tree {self.root}/train/<class>/*.png and {self.root}/test/<class>/*"
        )
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"data.root {self.root} does not exist; expected CIFAR-10 as {layouts}; "
                f"set data.root to the dataset folder"
            )
        batches = find_cifar_batches(self.root) if self.layout != "folder" else None
        if batches is not None:
            if self.image_size > 32:
                raise ValueError(
                    f"CIFAR-10 batches in {batches} hold 32x32 images, smaller than "
                    f"data.image_size={self.image_size}; set data.image_size <= 32"
                )
            tr_img, tr_lab, self.classes = read_cifar_batches(batches, train=True)
            te_img, te_lab, _ = read_cifar_batches(batches, train=False)
            return (
                ArraySource(tr_img, tr_lab, str(batches / "data_batch_*")),
                ArraySource(te_img, te_lab, str(batches / "test_batch")),
            )
        held_out = next((self.root / d for d in ("test", "val") if (self.root / d).is_dir()), None)
        if self.layout == "batches" or not (self.root / "train").is_dir() or held_out is None:
            raise FileNotFoundError(f"data.root {self.root} holds no CIFAR-10; expected {layouts}")
        train, self.classes = scan_image_folder(self.root / "train")
        test, _ = scan_image_folder(held_out, self.classes)
        return FolderSource(train), FolderSource(test)

    def _train_transform(self) -> Callable[[Image.Image], Tensor]:
        return v2.Compose(
            [
                v2.RandomCrop(self.image_size, padding=self.padding),
                v2.RandomHorizontalFlip(),
                *_to_tensor(self.mean, self.std),
            ]
        )

    def _eval_transform(self) -> Callable[[Image.Image], Tensor]:
        return v2.Compose([v2.CenterCrop(self.image_size), *_to_tensor(self.mean, self.std)])
