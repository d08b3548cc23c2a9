"""Images -> grids of overlapping patches (CPC v1/v2): cutting, augmentation, dataset.

The grid is cut with ``Tensor.unfold``; CPC v2 per-patch augmentation (``augment: v2``) is applied
to all patches of an image at once by ``PatchAugment``. Whole-image colour augmentations
(``colour_jitter``, ``grayscale``: CPC v2, lightning-bolts) run on the cropped image before it is
normalised and cut (:func:`make_image_augment`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2

from cpc_lightning.data.images.sources import ArraySource, FolderSource
from cpc_lightning.data.resumable import seed_of

AUGMENT_MODES = ("none", "v2")
#: Whole-image augmentations ``data.augment`` may add, with their ``data.augment_params`` defaults
#: (lightning-bolts' CPC v2 transforms): a colour jitter applied with probability p, grayscale
#: with probability p.
IMAGE_AUGMENTS: dict[str, dict[str, float]] = {
    "colour_jitter": {"p": 0.8, "brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.2},
    "grayscale": {"p": 0.25},
}


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


def augment_names(augment: str | Sequence[str] | None) -> list[str]:
    """``data.augment`` (``none``, ``v2`` or a list of names) -> the names, checked."""
    names = ["none"] if augment is None else [augment] if isinstance(augment, str) else augment
    names = [str(n) for n in names]
    known = (*AUGMENT_MODES, *IMAGE_AUGMENTS)
    unknown = [n for n in names if n not in known]
    if unknown or (len(names) > 1 and "none" in names):
        raise ValueError(
            f"augment must be one of {AUGMENT_MODES} or a list of {known[1:]}, got {augment!r}"
        )
    return [n for n in names if n != "none"]


def make_patch_augment(augment: str | Sequence[str] | None) -> PatchAugment | None:
    """``"v2"`` (or a list naming it) -> ``PatchAugment()``, otherwise None."""
    return PatchAugment() if "v2" in augment_names(augment) else None


def make_image_augment(
    augment: str | Sequence[str] | None,
    params: Mapping[str, Mapping[str, float]] | None = None,
) -> list[Callable]:
    """Whole-image transforms (torchvision v2, on the cropped PIL image, before normalisation) for
    the ``IMAGE_AUGMENTS`` named in ``augment``, in its order; ``params`` overrides their
    defaults. Empty when none is named, so a training transform without them is unchanged."""
    params = params or {}
    out: list[Callable] = []
    for name in augment_names(augment):
        if name not in IMAGE_AUGMENTS:
            continue
        kw = {**IMAGE_AUGMENTS[name], **dict(params.get(name) or {})}
        bad = sorted(set(kw) - set(IMAGE_AUGMENTS[name]))
        if bad or not 0.0 <= float(kw["p"]) <= 1.0:
            raise ValueError(
                f"data.augment_params.{name}: keys {sorted(IMAGE_AUGMENTS[name])} with p in "
                f"[0, 1], got {dict(params.get(name) or {})}"
            )
        p = float(kw.pop("p"))
        if name == "grayscale":
            out.append(v2.RandomGrayscale(p=p))
        else:
            out.append(v2.RandomApply([v2.ColorJitter(**{k: float(v) for k, v in kw.items()})], p))
    return out


class PatchGridDataset(Dataset):
    """One image -> ``{"x": (G, G, C, P, P), "label": int64, "index": int64}``.

    ``transform`` maps a PIL image to a normalised float tensor (C, S, S); ``min_size`` (if set)
    rejects images whose shorter side is below it with an error naming the file. Unreadable
    files are skipped with a warning naming them (the next readable sample is returned). With a
    ``seed``, the random transforms of item ``i`` draw from ``(seed, epoch, i)`` only (a resumed
    run, or a worker process, sees the same crops); the epoch is shared with worker processes.
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
        seed: int | None = None,
    ):
        self.source = source
        self.seed = seed
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self.transform = transform
        self.patch_size = patch_size
        self.stride = stride
        self.patch_augment = patch_augment
        self.min_size = min_size
        self.size_hint = size_hint
        self._warned: set[int] = set()

    def __len__(self) -> int:
        return len(self.source)

    def set_epoch(self, epoch: int) -> None:
        """The epoch the seeded transforms draw from (the batch sampler forwards it)."""
        self._epoch.fill_(int(epoch))

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

    def _grid(self, img: Image.Image) -> Tensor:
        x = cut_grid(self.transform(img), self.patch_size, self.stride)
        return self.patch_augment(x) if self.patch_augment is not None else x

    def __getitem__(self, idx: int) -> dict[str, Tensor]:
        img, label, j = self._load(idx)
        if self.min_size is not None and min(img.size) < self.min_size:
            w, h = img.size
            raise ValueError(
                f"image {self.source.name(j)} is {w}x{h}, smaller than the {self.min_size}x"
                f"{self.min_size} crop; {self.size_hint}"
            )
        if self.seed is None:
            x = self._grid(img)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed_of(self.seed, int(self._epoch.item()), idx))
                x = self._grid(img)
        return {
            "x": x,
            "label": torch.tensor(label, dtype=torch.int64),
            "index": torch.tensor(j, dtype=torch.int64),
        }
