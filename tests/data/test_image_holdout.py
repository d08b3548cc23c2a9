"""``data.holdout_fraction``: a validation split of the training images (what the image recipe's
search is scored on), per class, the same for every run seed; the real held-out images unused."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from helpers import SHARED_DATA, compose_entry, make_image_tree

from cpc_lightning.data.images.datamodules import CIFAR10PatchDataModule, ImagePatchDataModule
from cpc_lightning.data.images.sources import ArraySource, FolderSource, hold_out


def _labels(source):
    return [lab for _, lab in source.samples] if isinstance(source, FolderSource) else source.labels


@pytest.mark.parametrize("kind", ["folder", "array"])
def test_hold_out_is_stratified_disjoint_and_fixed(tmp_path, kind):
    labels = [c for c in range(3) for _ in range(20)]
    if kind == "folder":
        source = FolderSource([(tmp_path / f"{i}.png", lab) for i, lab in enumerate(labels)])
    else:
        images = np.arange(60, dtype=np.uint8).reshape(60, 1, 1, 1).repeat(3, axis=3)
        source = ArraySource(images, labels, "batches")
    kept, held = hold_out(source, 0.25)
    assert Counter(_labels(held)) == {0: 5, 1: 5, 2: 5}
    assert Counter(_labels(kept)) == {0: 15, 1: 15, 2: 15}

    def names(s):
        return {s.load(i)[0].getpixel((0, 0)) if kind == "array" else s.samples[i][0]
                for i in range(len(s))}  # fmt: skip

    assert not names(kept) & names(held)
    assert len(names(kept) | names(held)) == 60
    again_kept, again_held = hold_out(source, 0.25)
    assert names(again_held) == names(held)  # the same split on every call (no run seed)
    with pytest.raises(ValueError, match="holdout_fraction"):
        hold_out(source, 1.0)


def test_datamodule_validates_on_training_images_only(tmp_path):
    root = make_image_tree(tmp_path / "imgs", per_class=10, size=72)
    dm = ImagePatchDataModule(root, batch_size=2, image_size=64, patch_size=32, stride=16,
                              holdout_fraction=0.2, seed=5)  # fmt: skip
    dm.setup()
    assert dm.stats == {"train": 24, "test": 6}
    held = [p for p, _ in dm._sources["test"].samples]
    assert all(p.parent.parent.name == "train" for p in held)
    assert not set(held) & {p for p, _ in dm._sources["train"].samples}
    other = ImagePatchDataModule(root, batch_size=2, image_size=64, patch_size=32, stride=16,
                                 holdout_fraction=0.2, seed=6)  # fmt: skip
    other.setup()
    assert [p for p, _ in other._sources["test"].samples] == held  # run seed does not move it
    batch = next(iter(dm.val_dataloader()))
    assert batch["x"].shape[:3] == (2, 3, 3)


@pytest.mark.skipif(
    not (SHARED_DATA / "cifar10").is_dir(), reason="../shared/data/cifar10 is absent"
)
def test_cifar10_val_holds_out_a_tenth_of_the_training_images(monkeypatch):
    monkeypatch.setenv("CPC_DATA_DIR", str(SHARED_DATA))
    cfg = compose_entry("train", ["data=cifar10_val"])
    assert cfg.data.holdout_fraction == 0.1
    dm = CIFAR10PatchDataModule(cfg.data.root, holdout_fraction=cfg.data.holdout_fraction)
    dm.setup()
    assert dm.stats == {"train": 45000, "test": 5000}
    assert Counter(_labels(dm._sources["test"])) == dict.fromkeys(range(10), 500)
    assert all("/train/" in str(p) for p, _ in dm._sources["test"].samples)
