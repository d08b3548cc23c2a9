"""Images: patch grids, DataModules, patch encoders and the masked-conv grid context."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CONF, SHARED_DATA
from PIL import Image

from cpc_lightning.data.images.datamodules import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR10PatchDataModule,
    ImagePatchDataModule,
)
from cpc_lightning.data.images.patches import PatchAugment, cut_grid, grid_size
from cpc_lightning.data.images.sources import CIFAR10_CLASSES, read_cifar_batches
from cpc_lightning.model.context.grid import MaskedConvContext
from cpc_lightning.model.encoders.patch import PatchResNet, TorchvisionResNet

CIFAR_SUBSET = SHARED_DATA / "cifar10_subset"


# ---------------------------------------------------------------------------------- helpers
def _write_image(path: Path, size: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    Image.fromarray(arr).save(path, format=fmt)


def make_image_tree(root: Path, classes=("cat", "dog", "fox"), per_class=4, size=80) -> Path:
    """ImageNet layout with mixed-case extensions and one stray non-image file."""
    exts = [".JPEG", ".jpg", ".png", ".JPG"]
    for split, n in (("train", per_class), ("val", 2)):
        for c, name in enumerate(classes):
            for i in range(n):
                _write_image(root / split / name / f"img{i}{exts[i % 4]}", size, 100 * c + i)
    (root / "train" / classes[0] / "notes.txt").write_text("not an image")
    return root


def write_fake_cifar_batches(folder: Path, n_per_batch=6, n_batches=2, seed=0) -> np.ndarray:
    """Official python-pickle layout: data (N, 3072) uint8 channel-major, labels, meta."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    images = []
    for b in range(n_batches + 1):
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n_per_batch)]
        name = f"data_batch_{b + 1}" if b < n_batches else "test_batch"
        with open(folder / name, "wb") as fh:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": name.encode()}, fh)
        images.append((data, labels))
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [c.encode() for c in CIFAR10_CLASSES]}, fh)
    return images


def _normalise(arr: np.ndarray, mean, std) -> torch.Tensor:
    t = torch.from_numpy(np.array(arr)).permute(2, 0, 1).float() / 255
    return (t - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


# ------------------------------------------------------------------------------------ grid
def test_cut_grid_patches_are_the_crops_they_claim():
    img = torch.randn(2, 3, 32, 32)
    x = cut_grid(img, 8, 4)
    assert x.shape == (2, 7, 7, 3, 8, 8) and x.is_contiguous()
    for i in range(7):
        for j in range(7):
            assert torch.equal(x[:, i, j], img[:, :, i * 4 : i * 4 + 8, j * 4 : j * 4 + 8])
    assert grid_size(256, 64, 32) == 7 and grid_size(32, 8, 4) == 7
    with pytest.raises(ValueError, match="image_size"):
        grid_size(16, 32, 4)


def test_patch_augment_keeps_shape_and_identity_settings():
    x = torch.randn(7, 7, 3, 8, 8)
    out = PatchAugment()(x)
    assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()
    assert not torch.equal(out, x)
    identity = PatchAugment(min_crop=1.0, flip_p=0.0, colour_drop_p=0.0)
    torch.testing.assert_close(identity(x), x, atol=1e-5, rtol=0)
    flip = PatchAugment(min_crop=1.0, flip_p=1.0, colour_drop_p=0.0)
    torch.testing.assert_close(flip(x), x.flip(-1), atol=1e-5, rtol=0)
    drop = PatchAugment(min_crop=1.0, flip_p=0.0, colour_drop_p=1.0)(x + 10)
    zero_channels = (drop.flatten(-2) == 0).all(-1).sum(-1)  # (7, 7) channels dropped per patch
    assert (zero_channels == 2).all()


# --------------------------------------------------------------------------- imagenet tree
def test_imagenet_tree_batches_follow_the_contract(tmp_path):
    root = make_image_tree(tmp_path / "imnet")
    dm = ImagePatchDataModule(
        root, batch_size=4, image_size=64, patch_size=16, stride=8, augment="v2"
    )
    assert dm.grid_size == 7  # known before setup
    dm.setup("fit")
    assert dm.classes == ["cat", "dog", "fox"] and dm.num_classes == 3
    assert (dm.provides_speakers, dm.handles_distributed) == (False, True)  # seeded sampler
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (4, 7, 7, 3, 16, 16) and batch["x"].dtype == torch.float32
    assert batch["label"].dtype == torch.int64 and batch["label"].shape == (4,)
    assert batch["index"].dtype == torch.int64 and batch["index"].shape == (4,)
    assert len(dm.train_dataloader()) == 3  # 12 images, drop_last

    # feature loader: deterministic, fixed order, centre crop, every image once
    for split, n in (("train", 12), ("test", 6)):
        runs = [list(dm.feature_loader(split, batch_size=5)) for _ in range(2)]
        assert [len(b["x"]) for b in runs[0]] == [5] * (n // 5) + ([n % 5] if n % 5 else [])
        index = torch.cat([b["index"] for b in runs[0]])
        assert torch.equal(index, torch.arange(n))
        for a, b in zip(*runs, strict=True):
            assert torch.equal(a["x"], b["x"]) and torch.equal(a["label"], b["label"])
    labels = torch.cat([b["label"] for b in dm.feature_loader("test")])
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]
    val = next(iter(dm.val_dataloader()))
    assert val["x"].shape[1:] == (7, 7, 3, 16, 16)


def test_imagenet_eval_patches_match_centre_crop(tmp_path):
    root = make_image_tree(tmp_path / "imnet", per_class=1, size=64)
    dm = ImagePatchDataModule(
        root, batch_size=1, image_size=64, patch_size=16, stride=8, resize_size=64
    )
    x = next(iter(dm.feature_loader("train")))["x"][0]
    with Image.open(root / "train" / "cat" / "img0.JPEG") as im:
        img = _normalise(np.asarray(im.convert("RGB")), dm.mean, dm.std)
    for i, j in ((0, 0), (3, 5), (6, 6)):
        torch.testing.assert_close(x[i, j], img[:, i * 8 : i * 8 + 16, j * 8 : j * 8 + 16])


def test_missing_root_names_path_and_layout(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as err:
        ImagePatchDataModule(missing).setup()
    msg = str(err.value)
    assert str(missing) in msg and "train/<class>" in msg and "data.root" in msg
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        CIFAR10PatchDataModule(missing).setup()
    (tmp_path / "only_val" / "val" / "a").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no train/ folder"):
        ImagePatchDataModule(tmp_path / "only_val").setup()


def test_class_folder_without_images_is_named(tmp_path):
    root = make_image_tree(tmp_path / "imnet", per_class=1)
    empty = root / "train" / "zebra"
    (empty / "sub").mkdir(parents=True)
    (empty / "readme.txt").write_text("x")
    with pytest.raises(FileNotFoundError) as err:
        ImagePatchDataModule(root, image_size=64, patch_size=16, stride=8).setup()
    assert str(empty) in str(err.value) and "no images" in str(err.value)


def test_unreadable_images_are_skipped_with_a_warning(tmp_path):
    root = make_image_tree(tmp_path / "imnet", per_class=2)
    garbage = root / "train" / "cat" / "img0.JPEG"
    garbage.write_bytes(b"this is not a jpeg at all")
    truncated = root / "train" / "dog" / "img0.JPEG"
    truncated.write_bytes(truncated.read_bytes()[:200])
    dm = ImagePatchDataModule(root, batch_size=2, image_size=64, patch_size=16, stride=8)
    with pytest.warns(RuntimeWarning) as record:
        batches = list(dm.feature_loader("train"))
    messages = " ".join(str(w.message) for w in record)
    assert str(garbage) in messages and str(truncated) in messages
    index = torch.cat([b["index"] for b in batches]).tolist()
    assert index == [1, 1, 3, 3, 4, 5]  # each unreadable file replaced by the next readable one
    assert all(torch.isfinite(b["x"]).all() for b in batches)


def test_image_smaller_than_crop_is_a_clear_error(tmp_path):
    root = tmp_path / "tiny"
    for split in ("train", "test"):
        _write_image(root / split / "a" / "small.png", 16, 0)
    dm = CIFAR10PatchDataModule(root, batch_size=1)
    dm.setup()
    with pytest.raises(ValueError) as err:
        next(iter(dm.train_dataloader()))
    msg = str(err.value)
    assert "small.png" in msg and "16x16" in msg and "data.image_size" in msg
    with pytest.raises(ValueError, match="resize_size"):
        ImagePatchDataModule(root, image_size=64, resize_size=32)


# ----------------------------------------------------------------------------------- cifar
def test_cifar_pickle_batches_reader_and_grid(tmp_path):
    folder = tmp_path / "cifar" / "cifar-10-batches-py"
    written = write_fake_cifar_batches(folder)
    images, labels, classes = read_cifar_batches(folder, train=True)
    assert images.shape == (12, 32, 32, 3) and images.dtype == np.uint8
    assert labels == written[0][1] + written[1][1] and classes == CIFAR10_CLASSES
    np.testing.assert_array_equal(images[7], written[1][0][1].reshape(3, 32, 32).transpose(1, 2, 0))

    dm = CIFAR10PatchDataModule(tmp_path / "cifar", batch_size=4, augment="v2")  # auto-detect
    dm.setup()
    assert dm.classes == CIFAR10_CLASSES and dm.grid_size == 7
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (4, 7, 7, 3, 8, 8)
    test = next(iter(dm.feature_loader("test", batch_size=6)))
    assert test["label"].tolist() == written[2][1]
    img = _normalise(written[2][0][3].reshape(3, 32, 32).transpose(1, 2, 0).copy(), dm.mean, dm.std)
    for i in range(7):
        for j in range(7):
            torch.testing.assert_close(
                test["x"][3, i, j], img[:, i * 4 : i * 4 + 8, j * 4 : j * 4 + 8]
            )
    with pytest.raises(FileNotFoundError, match="no CIFAR-10"):
        CIFAR10PatchDataModule(tmp_path / "cifar", layout="folder").setup()


@pytest.mark.skipif(
    not CIFAR_SUBSET.is_dir(), reason=f"shared CIFAR-10 subset absent: {CIFAR_SUBSET}"
)
def test_cifar10_subset_folder_layout():
    dm = CIFAR10PatchDataModule(CIFAR_SUBSET, batch_size=8)
    dm.setup()
    assert dm.classes == CIFAR10_CLASSES
    assert len(dm.feature_loader("train").dataset) == 5000
    assert len(dm.feature_loader("test").dataset) == 1000
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (8, 7, 7, 3, 8, 8)
    first = next(iter(dm.feature_loader("test", batch_size=3)))
    assert first["label"].tolist() == [0, 0, 0] and first["index"].tolist() == [0, 1, 2]


# -------------------------------------------------------------------------------- encoders
ENCODERS = [
    pytest.param(lambda norm: PatchResNet("small", norm=norm, out_dim=32), id="resnet"),
    pytest.param(
        lambda norm: TorchvisionResNet("resnet18", norm=norm, out_dim=32), id="torchvision"
    ),
]


@pytest.mark.parametrize("make", ENCODERS)
@pytest.mark.parametrize("norm", ["layer", "group"])
def test_encoder_has_no_cross_sample_statistics(make, norm):
    torch.manual_seed(0)
    enc = make(norm).train()
    x = torch.randn(3, 4, 4, 3, 8, 8)
    z = enc(x)
    assert z.shape == (3, 4, 4, 32) and enc.out_dim == 32
    alone = enc(x[:1])
    with_others = enc(torch.cat([x[:1], 5 * torch.randn(2, 4, 4, 3, 8, 8) + 3]))
    torch.testing.assert_close(alone[0], z[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(with_others[0], z[0], atol=1e-5, rtol=1e-5)


def test_batchnorm_encoder_does_share_statistics():
    """The check above would catch a leak: BatchNorm makes outputs depend on the batch."""
    enc = PatchResNet("small", norm="batch").train()
    x = torch.randn(2, 3, 3, 3, 8, 8)
    assert not torch.allclose(enc(x[:1])[0], enc(x)[0], atol=1e-4)


def test_patch_resnet_presets_and_projection():
    assert PatchResNet("small").out_dim == 128
    big = PatchResNet("resnet101")
    assert big.feature_dim == 1024 and big.out_dim == 1024
    assert sum(isinstance(m, torch.nn.GroupNorm) for m in big.modules()) > 60
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in big.modules())
    enc = PatchResNet("small", out_dim=16, blocks=[1, 1], widths=[8, 16])
    assert enc.feature_dim == 16 and isinstance(enc.proj, torch.nn.Identity)
    assert enc(torch.randn(2, 3, 3, 3, 8, 8)).shape == (2, 3, 3, 16)
    with pytest.raises(ValueError, match="preset"):
        PatchResNet("resnet7")
    with pytest.raises(ValueError, match="norm"):
        PatchResNet(norm="instance")


def test_torchvision_resnet_builds_without_download(monkeypatch, tmp_path):
    def no_download(*args, **kwargs):
        raise AssertionError("tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for arch, dim in (("resnet18", 512), ("resnet34", 512), ("resnet50", 2048)):
        enc = TorchvisionResNet(arch, norm="group")
        assert enc.out_dim == dim
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in enc.modules())
    enc = TorchvisionResNet("resnet18", norm="batch", small_input=False, in_channels=1, out_dim=8)
    assert enc(torch.randn(1, 2, 2, 1, 32, 32)).shape == (1, 2, 2, 8)
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------------- masked context
@pytest.fixture
def context():
    torch.manual_seed(0)
    return MaskedConvContext(in_dim=6, out_dim=5, num_layers=2, kernel_size=3).double().eval()


def test_masked_conv_is_row_causal(context):
    assert context.grid is True and context.out_dim == 5 and context.reach == 2
    z = torch.randn(2, 9, 11, 6, dtype=torch.float64)
    c = context(z)
    assert c.shape == (2, 9, 11, 5)
    for i in range(9):
        z2 = z.clone()
        z2[:, i + 1 :] = torch.randn_like(z2[:, i + 1 :])
        c2 = context(z2)
        assert torch.equal(c2[:, : i + 1], c[:, : i + 1]), f"c rows <= {i} saw rows below"
        z3 = z.clone()
        z3[:, i] += 1.0
        assert not torch.allclose(context(z3)[:, i], c[:, i]), f"c row {i} blind to z row {i}"


def test_masked_conv_receptive_field_edges(context):
    z = torch.randn(1, 9, 11, 6, dtype=torch.float64)
    c = context(z)
    row, col, reach = 2, 5, context.reach
    z2 = z.clone()
    z2[:, row, col] += 1.0
    changed = (context(z2) - c).abs().amax(-1)[0] > 0  # (H, W)
    assert not changed[:row].any()
    cols = changed.any(0).nonzero().flatten().tolist()
    assert cols == list(range(col - reach, col + reach + 1))
    assert changed[row, col - reach] and changed[row, col + reach]  # edge of horizontal reach
    assert changed[row + reach].any() and not changed[row + reach + 1 :].any()


def test_masked_conv_rejects_even_kernel_and_bad_shape():
    with pytest.raises(ValueError, match="odd"):
        MaskedConvContext(4, 4, 1, kernel_size=2)
    with pytest.raises(ValueError, match=r"\(B, H, W, 4\)"):
        MaskedConvContext(4, 4, 1, 3)(torch.randn(2, 3, 4))


# ------------------------------------------------------------------------------- configs
@pytest.mark.parametrize(
    "overrides",
    [
        ["data=cifar10_patches", "encoder=resnet", "context=masked_conv"],
        ["data=imagenet_patches", "encoder=torchvision_resnet", "context=masked_conv"],
    ],
)
def test_configs_instantiate(overrides, tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    root = make_image_tree(tmp_path / "imnet", per_class=1)
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"data.root={root}"])
    dm = instantiate(cfg.data)
    enc = instantiate(cfg.encoder)
    ctx = instantiate(cfg.context)
    assert ctx.in_dim == enc.out_dim and ctx.grid
    x = torch.randn(1, dm.grid_size, dm.grid_size, 3, 8, 8)
    assert ctx(enc(x)).shape == (1, dm.grid_size, dm.grid_size, cfg.context.out_dim)


# --------------------------------------------- whole-image colour jitter / grayscale (data.augment)
def _cifar_train_items(tmp_path: Path, augment, params=None, seed=3, n=4) -> torch.Tensor:
    """The first ``n`` training grids (B, G, G, C, P, P) of a fake CIFAR with this augmentation,
    from a fresh DataModule (so two calls share nothing but the seed)."""
    folder = tmp_path / "cifar"
    if not folder.is_dir():
        write_fake_cifar_batches(folder)
    dm = CIFAR10PatchDataModule(
        folder, batch_size=2, augment=augment, augment_params=params, seed=seed
    )
    dm.setup("fit")
    return torch.stack([dm._train_set[i]["x"] for i in range(n)])


def test_image_augment_off_is_todays_transform(tmp_path):
    from cpc_lightning.data.images.patches import make_image_augment

    assert make_image_augment("none") == [] and make_image_augment("v2") == []
    params = {"colour_jitter": {"p": 1.0}, "grayscale": {"p": 1.0}}
    assert make_image_augment(["v2"], params) == []
    # params without the names in augment change nothing: same pixels, same RNG draws
    for augment in ("none", "v2"):
        today = _cifar_train_items(tmp_path, augment)
        assert torch.equal(_cifar_train_items(tmp_path, augment, params), today)


def test_colour_jitter_changes_pixels_deterministically(tmp_path):
    on = {"colour_jitter": {"p": 1.0}}
    plain = _cifar_train_items(tmp_path, "v2")
    jitter = _cifar_train_items(tmp_path, ["v2", "colour_jitter"], on)
    assert jitter.shape == plain.shape and not torch.allclose(jitter, plain)
    assert torch.equal(_cifar_train_items(tmp_path, ["v2", "colour_jitter"], on), jitter)
    assert not torch.equal(
        _cifar_train_items(tmp_path, ["v2", "colour_jitter"], on, seed=4), jitter
    )


def test_grayscale_makes_channels_equal_before_normalisation(tmp_path):
    x = _cifar_train_items(tmp_path, ["colour_jitter", "grayscale"], {"grayscale": {"p": 1.0}})
    mean = torch.tensor(CIFAR10_MEAN)[:, None, None]
    std = torch.tensor(CIFAR10_STD)[:, None, None]
    pixels = x * std + mean  # (..., C, P, P) back to [0, 1]
    torch.testing.assert_close(pixels[..., 0, :, :], pixels[..., 1, :, :], atol=1e-5, rtol=0)
    torch.testing.assert_close(pixels[..., 0, :, :], pixels[..., 2, :, :], atol=1e-5, rtol=0)
    assert pixels.std() > 0.05  # grey, not blank


def test_bad_image_augment_names_and_params_are_named():
    from cpc_lightning.data.images.patches import make_image_augment

    with pytest.raises(ValueError, match="colour_jitter"):
        make_image_augment(["v2", "solarize"])
    with pytest.raises(ValueError, match="data.augment_params.grayscale"):
        make_image_augment(["grayscale"], {"grayscale": {"p": 2.0}})
    with pytest.raises(ValueError, match="data.augment_params.colour_jitter"):
        make_image_augment(["colour_jitter"], {"colour_jitter": {"gamma": 0.1}})
