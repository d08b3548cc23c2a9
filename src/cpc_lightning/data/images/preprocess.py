"""The held-out (test-time) preprocessing of an image data option, as one object shared by the
image DataModules (validation, ``feature_loader``: ``evaluate``, ``extract``) and the feature API
(``cpc_lightning.load(run).features(images)``).

One image -> float32 ``(3, H, W)`` in [0, 1] (uint8 values / 255) -> shorter side resized to
``resize_size`` (bilinear, antialiased; only if set) -> centre crop ``image_size`` -> normalised
with ``mean``/``std`` -> cut into the ``(G, G, 3, P, P)`` grid of ``patch_size`` patches with
``stride``. :func:`as_unit_images` turns what a user gives (PIL images, uint8 HWC arrays, a float
tensor) into the first step's input, refusing anything ambiguous.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from cpc_lightning.data.images.patches import cut_grid, grid_size

#: What ``features(images)`` accepts, for error messages.
EXPECTED = (
    "images as PIL images, uint8 numpy arrays (H, W, 3) (a list, or one (N, H, W, 3) array; "
    "(H, W) or (H, W, 1) is grayscale) or a float torch tensor (N, 3, H, W) with values in [0, 1]"
)


def to_unit(image: Image.Image | Tensor) -> Tensor:
    """A PIL image (converted to RGB, as the image sources read files) or a ``(C, H, W)`` tensor
    (uint8: values / 255; float: kept) -> float32 ``(C, H, W)``."""
    if isinstance(image, Image.Image):
        image = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
    if image.dtype == torch.uint8:
        return image.to(torch.float32) / 255
    return image.to(torch.float32)


@dataclass(frozen=True)
class ImagePreprocess:
    """The test-time preprocessing of one image (see the module docstring).

    ``min_size``: :meth:`grid` refuses images whose shorter side is below it (data options that
    do not resize, e.g. CIFAR-10, whose DataModule refuses such files too).
    """

    image_size: int
    patch_size: int
    stride: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize_size: int | None = None
    min_size: int | None = None

    @property
    def grid_size(self) -> int:
        """Patches per side, ``G``."""
        return grid_size(self.image_size, self.patch_size, self.stride)

    def __call__(self, image: Image.Image | Tensor) -> Tensor:
        """One image -> the normalised, centre-cropped float32 ``(3, image_size, image_size)``."""
        x = to_unit(image)
        if self.resize_size is not None:
            x = TF.resize(x, [self.resize_size], antialias=True)
        x = TF.center_crop(x, [self.image_size, self.image_size])
        return TF.normalize(x, list(self.mean), list(self.std))

    def grid(self, image: Image.Image | Tensor, name: str = "image") -> Tensor:
        """One image -> its patch grid ``(G, G, 3, P, P)``; an image smaller than ``min_size``
        is a ``ValueError`` naming ``name``."""
        size = image.size if isinstance(image, Image.Image) else tuple(image.shape[:-3:-1])
        if self.min_size is not None and min(size) < self.min_size:
            raise ValueError(
                f"features(): {name} is {size[0]}x{size[1]}, smaller than the {self.min_size}x"
                f"{self.min_size} centre crop of this run's data option (it does not resize): "
                "give larger images, or resize them first"
            )
        return cut_grid(self(image), self.patch_size, self.stride)


_WAVEFORM = " (a waveform? this is an image model)"


def _refuse(what: str) -> ValueError:
    return ValueError(f"features(): {what}; an image model takes {EXPECTED}")


def _from_array(a: np.ndarray, i: int) -> Tensor:
    """One uint8 ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` array -> uint8 ``(3, H, W)``."""
    if a.dtype != np.uint8:
        hint = _WAVEFORM if a.ndim <= 2 else ""
        raise _refuse(f"image {i} is a numpy array of dtype {a.dtype}{hint}, not uint8")
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3):
        raise _refuse(f"image {i} is a uint8 array of shape {a.shape}, not (H, W, 3)")
    x = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)
    return x.expand(3, -1, -1) if x.shape[0] == 1 else x


def _from_tensor(x: Tensor, i: int) -> Tensor:
    """One float ``(3, H, W)`` or ``(1, H, W)`` tensor in [0, 1] -> float ``(3, H, W)``."""
    if not x.is_floating_point():
        raise _refuse(
            f"image {i} is a torch tensor of dtype {x.dtype}, not float (give x.float() / 255 "
            "for uint8 (N, 3, H, W), or the numpy array (N, H, W, 3))"
        )
    if x.dim() != 3 or x.shape[0] not in (1, 3):
        hint = _WAVEFORM if x.dim() <= 2 else ""
        raise _refuse(f"image {i} is a float tensor of shape {tuple(x.shape)}{hint}, not (3, H, W)")
    if bool(x.isnan().any()):
        raise _refuse(f"image {i} has NaN values")
    if x.numel() and not bool(((x >= 0) & (x <= 1)).all()):
        lo, hi = float(x.min()), float(x.max())
        raise _refuse(f"image {i} has values in [{lo:g}, {hi:g}], not in [0, 1]")
    return x.expand(3, -1, -1) if x.shape[0] == 1 else x


def _batch(images: Any) -> list[Any]:
    """The images of a batch: the items of a list, or of one 4-D array/tensor."""
    if isinstance(images, Image.Image):
        return [images]
    if isinstance(images, (np.ndarray, Tensor)):
        kind = "numpy array" if isinstance(images, np.ndarray) else "torch tensor"
        layout = "(N, H, W, 3)" if isinstance(images, np.ndarray) else "(N, 3, H, W)"
        if images.ndim != 4:
            shape = tuple(images.shape)
            hint = _WAVEFORM if images.ndim <= 2 else " (one image: put it in a list)"
            raise _refuse(f"got a {kind} of shape {shape}{hint}, not a batch {layout}")
        return list(images)
    if isinstance(images, (str, bytes)) or not isinstance(images, Sequence):
        raise _refuse(f"got {type(images).__name__}")
    return list(images)


def as_unit_images(images: Any) -> list[Image.Image | Tensor]:
    """What a user gives -> one item per image, each an RGB PIL image or a ``(3, H, W)`` tensor
    (uint8, or float in [0, 1]) for :meth:`ImagePreprocess.grid`; ``ValueError`` otherwise."""
    items = _batch(images)
    if not items:
        raise _refuse("got an empty batch")
    out: list[Image.Image | Tensor] = []
    for i, item in enumerate(items):
        if isinstance(item, Image.Image):
            out.append(item.convert("RGB"))
        elif isinstance(item, np.ndarray):
            out.append(_from_array(item, i))
        elif isinstance(item, Tensor):
            out.append(_from_tensor(item, i))
        else:
            raise _refuse(f"image {i} is a {type(item).__name__}")
    return out
