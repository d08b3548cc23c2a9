"""``cpc_lightning.load(<image run>).features(images)``: the tensors ``extract`` writes for the
same image files (grids, every layer, pooled), the same features for PIL images, uint8 arrays and
float tensors, one-line refusals of what it cannot read, and the image run dir of commit f2cadb0
still loading with its reference features."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SHARED_DATA, TESTS, compose_entry, make_image_tree, make_run
from PIL import Image

import cpc_lightning
from cpc_lightning.api import ImageFeatureExtractor
from cpc_lightning.errors import UserError

#: A tiny image model (two 8-wide stages, 8-d z and c).
TINY_IMAGE_RUN = ["data=imagenet_patches", "encoder.widths=[8,8]", "encoder.blocks=[1,1]",
                  "encoder.out_dim=8", "context.out_dim=8", "context.num_layers=2"]  # fmt: skip

OLD_RUN = TESTS / "fixtures" / "run_f2cadb0_image"
CIFAR_SUBSET = SHARED_DATA / "cifar10_subset"
needs_cifar = pytest.mark.skipif(
    not CIFAR_SUBSET.is_dir(), reason=f"the shared CIFAR-10 subset is absent: {CIFAR_SUBSET}"
)


def cifar_tree(root: Path, per_class: int = 2) -> Path:
    """A few real CIFAR-10 JPEGs (two classes), one turned grayscale and one enlarged to 40x36
    PNG (the CIFAR option centre-crops it)."""
    for split in ("train", "test"):
        for name in ("airplane", "cat"):
            (root / split / name).mkdir(parents=True)
            for src in sorted((CIFAR_SUBSET / split / name).glob("*.jpg"))[:per_class]:
                shutil.copy(src, root / split / name / src.name)
    first = sorted((root / "train" / "cat").glob("*.jpg"))[0]
    with Image.open(first) as im:
        im.convert("L").save(root / "train" / "cat" / "gray.jpg")
        im.resize((40, 36)).save(root / "test" / "cat" / "big.png")
    return root


def image_run(root: Path, *overrides: str) -> Path:
    """An image run dir as ``train`` writes it (config + untrained tiny weights)."""
    return make_run(root, list(overrides), base=TINY_IMAGE_RUN)


def extracted(run: Path, out: Path, *extra: str) -> dict:
    from cpc_lightning.extract import extract

    return extract(compose_entry("extract", [f"run_dir={run}", f"out={out}", *extra]))


def source_of(root: Path, rel: str) -> Path:
    """The image file a feature file ``rel`` (``<path>.npy``) was written for."""
    stem = root / Path(rel).with_suffix("")
    (src,) = [p for p in stem.parent.glob(stem.name + ".*") if p.suffix != ".npy"]
    return src


def assert_api_matches_extract(model: ImageFeatureExtractor, out: Path) -> None:
    """For every file ``extract layers=all`` wrote: the API's ``z`` and every hidden state on
    that image file equal the saved grids (1e-6)."""
    meta = json.loads((out / "features.json").read_text())
    assert meta["modality"] == "image" and meta["files"]
    g = model.grid_size
    assert meta["grid"] == [g, g] and meta["shape"].startswith("(H, W, dim)")
    for rel in meta["files"]:
        with Image.open(source_of(Path(meta["data_root"]), rel)) as im:
            got = model.features([im])
        outputs = [got["z"], *got["hidden_states"]]
        assert len(outputs) == len(meta["layers"])
        for entry, tensor in zip(meta["layers"], outputs, strict=True):
            saved = torch.from_numpy(np.load(out / entry["dir"] / rel))
            assert saved.shape == (g, g, entry["dim"])
            torch.testing.assert_close(tensor[0], saved, rtol=0, atol=1e-6)


@needs_cifar
def test_features_equal_what_extract_writes_for_images(tmp_path: Path) -> None:
    root = cifar_tree(tmp_path / "cifar")
    out = tmp_path / "feats"
    summary = extracted(
        OLD_RUN, out, "data=cifar10_patches", f"data.root={root}", "layers=all", "batch_size=3"
    )
    assert summary["num_files"] == 10 and summary["feature"] == "all"
    assert "train/cat/gray.npy" in summary["files"] and "test/cat/big.npy" in summary["files"]
    assert len(summary["layers"]) == 7  # z + 5 residual blocks + c
    assert_api_matches_extract(cpc_lightning.load(OLD_RUN), out)


@needs_cifar
def test_pooled_features_equal_what_extract_writes(tmp_path: Path) -> None:
    root = cifar_tree(tmp_path / "cifar", per_class=1)
    out = tmp_path / "feats"
    extracted(
        OLD_RUN, out, f"data.root={root}", "feature=z", "pool=grid2", "split=test", "format=pt"
    )
    meta = json.loads((out / "features.json").read_text())
    assert meta["pool"] == "grid2" and meta["dim"] == 4 * 8 and meta["shape"] == "(dim,) per file"
    model = cpc_lightning.load(OLD_RUN)
    for rel in meta["files"]:
        with Image.open(source_of(root, rel)) as im:
            got = model.features(im, pool="grid2")["z_pooled"][0]
        torch.testing.assert_close(got, torch.load(out / rel), rtol=0, atol=1e-6)


def test_a_resizing_data_option_gives_what_extract_writes(tmp_path: Path) -> None:
    """ImageFolder option: shorter side resized to 40, centre crop 32, 3x3 grid of 16x16."""
    tree = make_image_tree(tmp_path / "tree", per_class=1, size=50, classes=("a", "b"))
    Image.new("RGB", (70, 45), (200, 10, 30)).save(tree / "val" / "a" / "wide.png")
    sizes = ["data.image_size=32", "data.patch_size=16", "data.stride=8", "data.resize_size=40"]
    run = image_run(tmp_path, f"data.root={tree}", *sizes)
    model = cpc_lightning.load(run)
    assert model.preprocess.resize_size == 40 and model.grid_size == 3
    extracted(run, tmp_path / "feats", "layers=all")
    assert_api_matches_extract(model, tmp_path / "feats")


def test_the_old_image_run_loads_with_its_reference_features() -> None:
    model = cpc_lightning.load(OLD_RUN)
    assert isinstance(model, ImageFeatureExtractor) and not model.training
    ref = torch.load(OLD_RUN / "reference_features.pt")
    g = torch.Generator().manual_seed(ref["seed"])
    x = ref["scale"] * torch.randn(*ref["shape"], generator=g)
    out = model.grid_features(x)
    torch.testing.assert_close(out["z"], ref["z"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["c"], ref["c"], rtol=1e-5, atol=1e-5)
    assert out["c"] is out["hidden_states"][-1] and len(out["hidden_states"]) == 6
    assert out["z_pooled"].shape == (2, 8) and out["pool"] == "mean"
    torch.testing.assert_close(out["z_pooled"], ref["z"].mean((1, 2)))


def some_images(n: int = 3, size: int = 32) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_pil_uint8_and_float_inputs_give_the_same_features() -> None:
    model = cpc_lightning.load(OLD_RUN)
    arr = some_images()
    pil = [Image.fromarray(a) for a in arr]
    unit = torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255
    ref = model.features(pil, pool="grid4")
    assert ref["z"].shape == (3, 7, 7, 8) and ref["c_pooled"].shape == (3, 16 * 8)
    for other in (arr, list(arr), unit, list(unit), unit.double()):
        got = model.features(other, pool="grid4")
        for key in ("z", "c", "z_pooled", "c_pooled"):
            assert torch.equal(got[key], ref[key]), (type(other), key)
    gray = arr[0, :, :, 0]
    ref = model.features(Image.fromarray(gray))  # PIL "L", read as RGB like a grayscale file
    for other in ([gray], [gray[..., None]], torch.from_numpy(gray)[None, None].float() / 255):
        assert torch.equal(model.features(other)["c"], ref["c"])


@pytest.mark.parametrize(
    ("images", "match"),
    [
        ([], "empty batch"),
        (some_images()[0], r"numpy array of shape \(32, 32, 3\) \(one image: put it in a list\)"),
        (some_images().astype(np.float32), "dtype float32, not uint8"),
        (some_images()[..., :2], r"shape \(32, 32, 2\), not \(H, W, 3\)"),
        (torch.from_numpy(some_images()), "dtype torch.uint8, not float"),
        (torch.rand(2, 32, 32, 3), r"float tensor of shape \(32, 32, 3\), not \(3, H, W\)"),
        (torch.full((1, 3, 32, 32), 2.0), r"values in \[2, 2\], not in \[0, 1\]"),
        (torch.full((1, 3, 32, 32), float("nan")), "NaN"),
        (np.zeros(16000, np.float32), "a waveform\\? this is an image model"),
        ([torch.zeros(16000)], "a waveform\\? this is an image model"),
        (["cat.jpg"], "image 0 is a str"),
        ([np.zeros((16, 16, 3), np.uint8)], r"16x16, smaller than the 32x32 centre crop"),
    ],
)
def test_bad_images_are_refused_in_one_line(images, match: str) -> None:
    model = cpc_lightning.load(OLD_RUN)
    with pytest.raises(ValueError, match=match) as err:
        model.features(images)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="pool='max' must be one of mean, grid2, grid4, none"):
        model.features(list(some_images(1)), pool="max")


def test_audio_and_image_models_refuse_each_others_input(tmp_path: Path) -> None:
    audio = cpc_lightning.load(make_run(tmp_path))
    for images in (Image.fromarray(some_images()[0]), some_images(), [some_images()[0]]):
        with pytest.raises(ValueError, match="this is an audio model: give mono float waveforms"):
            audio.features(images)
    with pytest.raises(ValueError, match="a waveform\\? this is an image model"):
        cpc_lightning.load(OLD_RUN).features(torch.zeros(2, 16000))


def test_extract_refuses_image_files_that_would_share_a_name(tmp_path: Path) -> None:
    tree = make_image_tree(tmp_path / "tree", per_class=1, size=40, classes=("a", "b"))
    Image.new("RGB", (40, 40)).save(tree / "train" / "a" / "0.png")  # beside 0.JPEG
    run = image_run(tmp_path, f"data.root={tree}", "data.image_size=32", "data.patch_size=16",
                    "data.stride=8")  # fmt: skip
    with pytest.raises(UserError, match=r"a/0.JPEG and .*a/0.png would both write train/a/0.npy"):
        extracted(run, tmp_path / "feats")
    assert not (tmp_path / "feats").exists()
    with pytest.raises(UserError, match="pool=max must be null"):
        extracted(run, tmp_path / "feats", "pool=max")
