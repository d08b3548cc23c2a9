"""Image LightningDataModules: ImageFolder trees (ImageNet layout) and CIFAR-10, as patch grids.

Batch (dict, see :mod:`cpc_lightning.data`):
    x      float32 (B, G, G, C, P, P)  x[:, i, j] is the patch at row i, column j, cut with stride s
    label  int64   (B,)                class index into ``datamodule.classes``
    index  int64   (B,)                sample index in its split

``ImagePatchDataModule``    ImageFolder tree ``<root>/{train,val}/<class>/*.{jpeg,jpg,png}``;
                            random resized crop for training, resize + centre crop otherwise.
``CIFAR10PatchDataModule``  CIFAR-10 python batches (``data_batch_1..5``, ``test_batch``) or an
                            ImageFolder tree ``<root>/{train,test}/<class>/*``; random crop with
                            padding + flip for training, centre crop otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import pytorch_lightning as pl
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from cpc_lightning.data import labels_with
from cpc_lightning.data.audio.samplers import UniformBatchSampler
from cpc_lightning.data.images.patches import (
    PatchGridDataset,
    grid_size,
    make_image_augment,
    make_patch_augment,
)
from cpc_lightning.data.images.preprocess import ImagePreprocess
from cpc_lightning.data.images.sources import (
    ArraySource,
    FolderSource,
    find_cifar_batches,
    hold_out,
    read_cifar_batches,
    scan_image_folder,
)
from cpc_lightning.data.paths import require_dir, resolve_root
from cpc_lightning.data.resumable import ResumableLoader

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def _to_tensor(mean: Sequence[float], std: Sequence[float]) -> list:
    return [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=[float(m) for m in mean], std=[float(s) for s in std]),
    ]


class _PatchGridDataModule(pl.LightningDataModule):
    """Loaders shared by the image DataModules; subclasses build the sources and transforms.

    Implements the :class:`cpc_lightning.data.DataModule` contract for images (``modality =
    "image"``, labels are ``classes``; no speakers or frame labels). The held-out split is
    ``test``. The training order and augmentation are seeded per (seed, epoch, index) and the
    training loader is resumable (exact resume); the seeded batch sampler shards the training and
    validation loaders across DDP ranks itself (``handles_distributed=True``).
    """

    modality = "image"
    provides_speakers = False
    handles_distributed = True
    num_phones = 0
    _min_size: int | None = None  # images below this side length are an error (no resize)
    _size_hint = ""  # how to fix that error
    _resize_size: int | None = None  # held-out images: shorter side resized to this first

    def __init__(
        self,
        root: str | os.PathLike,
        batch_size: int,
        num_workers: int,
        image_size: int,
        patch_size: int,
        stride: int,
        augment: str | Sequence[str],
        mean: Sequence[float],
        std: Sequence[float],
        seed: int = 0,
        augment_params: Mapping[str, Mapping[str, float]] | None = None,
        holdout_fraction: float = 0.0,
    ):
        super().__init__()
        # > 0: the held-out split is this fraction of the TRAINING images (per class, fixed
        # seed 0), the real held-out folder is never read: a validation split for searches
        self.holdout_fraction = float(holdout_fraction)
        self.root = resolve_root(root)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.image_size = int(image_size)
        self.patch_size = int(patch_size)
        self.stride = int(stride)
        self.grid_size = grid_size(self.image_size, self.patch_size, self.stride)
        self.augment = str(augment) if isinstance(augment, str) else [str(a) for a in augment]
        self.patch_augment = make_patch_augment(self.augment)
        # whole-image colour_jitter / grayscale, inserted before normalisation (empty: none)
        self.image_augment = make_image_augment(self.augment, augment_params)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.classes: list[str] = []
        self.speakers: list[str] = []
        self.phone_names: list[str] = []
        self.stats: dict[str, int] = {}
        self._sources: dict[str, FolderSource | ArraySource] = {}
        self._train_set: PatchGridDataset | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def labels(self) -> list[str]:
        """Label kinds: ``classes`` when there are at least two."""
        return labels_with(0, [], self.classes)

    # subclasses -------------------------------------------------------------------------------
    def _build_sources(self) -> tuple[FolderSource | ArraySource, FolderSource | ArraySource]:
        raise NotImplementedError

    def _train_transform(self) -> Callable[[Image.Image], Tensor]:
        raise NotImplementedError

    def eval_preprocess(self) -> ImagePreprocess:
        """The held-out preprocessing of one image (validation, ``feature_loader``, and
        ``cpc_lightning.load(run).features``): resize if the option resizes, centre crop,
        normalisation; :meth:`ImagePreprocess.grid` also cuts the patch grid."""
        return ImagePreprocess(
            self.image_size, self.patch_size, self.stride, self.mean, self.std,
            self._resize_size, self._min_size,
        )  # fmt: skip

    def _eval_transform(self) -> Callable[[Image.Image], Tensor]:
        return self.eval_preprocess()

    def item_path(self, split: str, i: int, keep_suffix: bool = False) -> str:
        """Item ``i`` of ``split`` as a relative path (without its suffix unless ``keep_suffix``):
        the file's path under ``root`` (folder sources), or ``<split>/<class>/<i:05d>`` (CIFAR-10
        python batches, which have no files)."""
        self.setup()
        source = self._sources[split]
        if isinstance(source, FolderSource):
            rel = source.samples[i][0].relative_to(self.root)
            return (rel if keep_suffix else rel.with_suffix("")).as_posix()
        return f"{split}/{self.classes[source.labels[i]]}/{i:05d}"

    # Lightning --------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Index both splits (once); sets ``classes``."""
        if self._sources:
            return
        train, test = self._build_sources()
        if self.holdout_fraction > 0:
            train, test = hold_out(train, self.holdout_fraction)
        self._sources = {"train": train, "test": test}
        self.stats = {"train": len(train), "test": len(test)}
        self._train_set = self._dataset(
            "train", self._train_transform(), self.patch_augment, seed=self.seed
        )

    def _dataset(
        self, split: str, transform, patch_augment=None, seed: int | None = None
    ) -> PatchGridDataset:
        return PatchGridDataset(
            self._sources[split],
            transform,
            self.patch_size,
            self.stride,
            patch_augment=patch_augment,
            min_size=self._min_size,
            size_hint=self._size_hint,
            seed=seed,
        )

    def _loader(
        self, dataset: PatchGridDataset, batch_size: int, shuffle: bool, shard: bool = True
    ) -> ResumableLoader:
        """Seeded batches (``shuffle``: a new order per epoch); ``shard``: this DDP rank's."""
        sampler = UniformBatchSampler(
            len(dataset),
            batch_size,
            seed=self.seed,
            shuffle=shuffle,
            drop_last=shuffle and len(dataset) >= batch_size,
            dataset=dataset,  # type: ignore[arg-type]  # anything with set_epoch
            **({} if shard else {"rank": 0, "world_size": 1}),
        )
        return ResumableLoader(
            dataset,
            sampler,
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
        """Held-out split, deterministic (centre crop, no augmentation), fixed order; each DDP
        rank validates its shard."""
        self.setup()
        dataset = self._dataset("test", self._eval_transform())
        return self._loader(dataset, self.batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Same as ``val_dataloader``."""
        return self.feature_loader("test")

    def feature_loader(self, split: str, batch_size: int | None = None) -> DataLoader:
        """Unaugmented batches of ``split`` (``train`` or ``test``), fixed order."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.setup()
        dataset = self._dataset(split, self._eval_transform())
        return self._loader(dataset, batch_size or self.batch_size, shuffle=False, shard=False)


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
        augment: str | Sequence[str] = "none",
        crop_scale: Sequence[float] = (0.2, 1.0),
        resize_size: int | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        seed: int = 0,
        augment_params: Mapping[str, Mapping[str, float]] | None = None,
        holdout_fraction: float = 0.0,
    ):
        super().__init__(
            root, batch_size, num_workers, image_size, patch_size, stride, augment, mean, std, seed,
            augment_params, holdout_fraction,
        )  # fmt: skip
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))
        self.resize_size = int(resize_size or round(self.image_size / 0.875))
        self._resize_size = self.resize_size
        if self.resize_size < self.image_size:
            raise ValueError(
                f"resize_size={self.resize_size} is smaller than image_size={self.image_size}; "
                f"set data.resize_size >= data.image_size (or null)"
            )

    def _build_sources(self) -> tuple[FolderSource, FolderSource]:
        layout = f"{self.root}/train/<class>/*.JPEG and {self.root}/val/<class>/*.JPEG"
        require_dir(self.root, f"an ImageFolder tree {layout}")
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
                *self.image_augment,
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
        augment: str | Sequence[str] = "none",
        padding: int = 4,
        layout: str = "auto",
        mean: Sequence[float] = CIFAR10_MEAN,
        std: Sequence[float] = CIFAR10_STD,
        seed: int = 0,
        augment_params: Mapping[str, Mapping[str, float]] | None = None,
        holdout_fraction: float = 0.0,
    ):
        super().__init__(
            root, batch_size, num_workers, image_size, patch_size, stride, augment, mean, std, seed,
            augment_params, holdout_fraction,
        )  # fmt: skip
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
        require_dir(self.root, f"CIFAR-10 as {layouts}")
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
                *self.image_augment,
                *_to_tensor(self.mean, self.std),
            ]
        )
