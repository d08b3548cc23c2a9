"""The image yardsticks of ``evaluate task=classes``: the raw-pixel baseline, the spatial pooling
modes, the probe's weight decay chosen on held-out TRAINING images only, and the paired-bootstrap
interval of the trained net against each baseline over the test images."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO, SHARED_DATA, TESTS, cli_env
from torch import nn

from cpc_lightning.data.images.patches import cut_grid
from cpc_lightning.eval.features import Source, image_from_grid, pixel_rows
from cpc_lightning.eval.linear_probe import choose_weight_decay, fit_probe
from cpc_lightning.eval.probe_tasks import evaluate_sources
from cpc_lightning.eval.probes import baseline_names, comparison_sources
from cpc_lightning.eval.registry import get_task
from cpc_lightning.eval.settings import EvalSettings

CIFAR_SUBSET = SHARED_DATA / "cifar10_subset"
FAST = {"epochs": 1, "min_steps": 20, "batch_size": 64, "lr": 0.1}


@pytest.mark.parametrize(("patch", "stride"), [(8, 8), (8, 4), (6, 3)])
def test_the_image_comes_back_from_its_patch_grid(patch: int, stride: int) -> None:
    side = 4 * stride + patch
    img = torch.randn(3, 3, side, side)
    grid = cut_grid(img, patch, stride)
    assert grid.shape == (3, 5, 5, 3, patch, patch)
    torch.testing.assert_close(image_from_grid(grid, stride), img)
    rows = pixel_rows(grid, stride, side=None)
    assert rows.shape == (3, 3 * side * side)
    torch.testing.assert_close(rows, img.flatten(1))


def test_large_images_are_area_averaged_to_pixel_side() -> None:
    img = torch.arange(2 * 3 * 64 * 64, dtype=torch.float32).reshape(2, 3, 64, 64)
    rows = pixel_rows(cut_grid(img, 16, 16), 16, side=32)
    assert rows.shape == (2, 3 * 32 * 32)
    torch.testing.assert_close(rows, nn.functional.avg_pool2d(img, 2).flatten(1))


def test_the_probe_standardises_with_the_training_rows_only() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 12, generator=g) * 5 + 3
    y = (x[:, 0] > 3).long()
    clean = fit_probe("classes", (x, y), (x[:50], y[:50]), 2, **FAST)
    shifted = fit_probe("classes", (x, y), (x[:50] * 1e3 - 7, y[:50]), 2, **FAST)
    assert clean.train_accuracy == shifted.train_accuracy > 0.9
    assert clean.accuracy > 0.9 and clean.correct and len(clean.correct) == 50


# ---------------------------------------------------------------- a tiny image DataModule + model


class GridData:
    """Images of 3 classes (class = the brightest channel), as 3x3 grids of 4x4 patches."""

    modality = "image"
    labels = ["classes"]
    classes = ["r", "g", "b"]
    image_size, patch_size, stride, num_workers = 8, 4, 2, 0
    root = Path("/nowhere")

    def __init__(self, poison_test: bool = False, n: int = 90, side: int = 8) -> None:
        g = torch.Generator().manual_seed(1)
        self.image_size = side
        self.splits = {}
        for split, count in (("train", n), ("test", n // 3)):
            y = torch.arange(count) % 3
            img = torch.randn(count, 3, side, side, generator=g)
            img[torch.arange(count), y] += 1.5
            if split == "test" and poison_test:
                img, y = torch.randn_like(img) * 9, y[torch.randperm(count, generator=g)]
            self.splits[split] = [
                {"x": cut_grid(img[i], 4, 2), "label": y[i], "index": torch.tensor(i)}
                for i in range(count)
            ]

    def feature_loader(self, split: str, batch_size: int = 16):
        return torch.utils.data.DataLoader(self.splits[split], batch_size=batch_size)


class GridModel(nn.Module):
    """``features``: a linear map of each patch (``z``), its running mean down the rows (``c``)."""

    modality = "image"

    def __init__(self, seed: int = 0, dim: int = 6) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.encoder = nn.Linear(3 * 4 * 4, dim)

    def features(self, x: torch.Tensor, kind: str = "c", layer: int | None = None):
        z = self.encoder(x.flatten(3))  # (B, G, G, D)
        if kind == "z":
            return z
        return z.cumsum(1) / torch.arange(1, z.shape[1] + 1)[None, :, None, None]


def _evaluate(data: GridData, tmp_path: Path | None = None, **settings):
    sources = comparison_sources(
        GridModel(0), None, baseline_names("all", "image"), lambda: GridModel(5), None
    )
    s = EvalSettings.from_mapping({**FAST, "pool": "grid2", **settings})  # 3x3 grids < grid4
    task = get_task("classes")
    return evaluate_sources(sources, data, [task], s, {}, tmp_path)["classes"]


def test_image_baselines_are_random_init_and_pixels() -> None:
    assert baseline_names("all", "image") == ["random_init", "pixels"]
    assert baseline_names("all", "audio") == ["random_init", "mfcc"]
    assert baseline_names("pixels", "audio") == []


@pytest.mark.parametrize(
    ("pool", "cells"), [("mean", 1), ("grid2", 4), ("grid4", 16), ("none", 25)]
)
def test_each_pooling_mode_through_the_probe(pool: str, cells: int) -> None:
    """12x12 images -> 5x5 grids of 4x4 patches (stride 2); ``z`` of 6 dims per position."""
    report = _evaluate(GridData(n=30, side=12), pool=pool, weight_decay=0.0)
    assert report.pool == pool and report.feature == "z"
    assert report.sources["cpc"]["dim"] == report.sources["random_init"]["dim"] == 6 * cells
    assert report.sources["pixels"]["dim"] == 3 * 12 * 12
    assert report.sources["pixels"]["label"] == "raw pixels (standardised)"


def test_feature_c_reads_the_context_grid() -> None:
    from cpc_lightning.eval.features import image_class_features

    data = GridData(n=6)
    s = EvalSettings.from_mapping({"pool": "none", "feature": "c"})
    x, y = image_class_features(Source("cpc", GridModel()), data, "train", s)
    z = GridModel().features(torch.stack([b["x"] for b in data.splits["train"]]), "c")
    torch.testing.assert_close(x, z.flatten(1))
    assert y.tolist() == [0, 1, 2, 0, 1, 2]


def test_capped_splits_are_a_seeded_subset_of_every_class() -> None:
    from cpc_lightning.eval.features import image_class_features

    data = GridData(n=90)
    data.splits["train"].sort(key=lambda b: int(b["label"]))  # a class-sorted folder
    s = EvalSettings.from_mapping({"max_train_items": 12})
    x, y = image_class_features(Source("pixels"), data, "train", s, seed=3)
    assert x.shape == (12, 3 * 8 * 8) and len(set(y.tolist())) == 3


def test_image_defaults_follow_cpc_v2() -> None:
    s = EvalSettings().for_modality("image")
    assert (s.feature, s.pool) == ("z", "grid4") and len(s.weight_decays) == 4
    a = EvalSettings().for_modality("audio")
    assert (a.feature, a.pool, a.weight_decays) == ("c", "mean", [0.0])
    with pytest.raises(ValueError, match="pool='meanstd' does not apply to image"):
        EvalSettings(pool="meanstd").for_modality("image")


def test_weight_decay_choice_never_reads_the_test_images() -> None:
    """The same training images with a clean and a poisoned test split (noise images, shuffled
    labels): every candidate's held-out accuracy and the choice are the same."""
    grid = [0.0, 1.0]
    clean = _evaluate(GridData(), weight_decay=grid)
    poisoned = _evaluate(GridData(poison_test=True), weight_decay=grid)
    for name in ("cpc", "random_init", "pixels"):
        a, b = clean.sources[name], poisoned.sources[name]
        assert set(a["dev_accuracies"]) == {repr(w) for w in grid}
        assert a["dev_accuracies"] == b["dev_accuracies"]
        assert a["weight_decay"] == b["weight_decay"] in grid
        assert a["dev_rows"] == 9  # 10 % of the 90 training images
    assert clean.probe["weight_decay"] == grid
    assert "weight decay chosen among [0.0, 1.0] on 10 % of the training images" in clean.table


def test_choice_is_a_function_of_the_training_rows() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 5, generator=g)
    y = (x[:, 0] + 0.5 * torch.randn(120, generator=g) > 0).long()
    best, acc, n_dev = choose_weight_decay("t", (x, y), 2, [10.0, 0.0], 0.25, seed=0, **FAST)
    assert n_dev == 30 and set(acc) == {"0.0", "10.0"}
    assert acc[repr(best)] == max(acc.values()) and acc["0.0"] > acc["10.0"]


def test_interval_against_each_baseline_matches_the_accuracies(tmp_path: Path) -> None:
    report = _evaluate(GridData(), tmp_path, seeds=[0, 1], weight_decay=0.0)
    assert set(report.comparison) == {"random_init", "pixels"}
    acc = {k: 100 * v["accuracy"] for k, v in report.sources.items()}
    for other, figures in report.comparison.items():
        c = figures["accuracy"]
        assert c["units"] == 30 and c["unit"] == "test image"
        assert c["difference"] == pytest.approx(acc["cpc"] - acc[other], abs=1e-4)
        assert c["interval"][0] <= c["difference"] <= c["interval"][1]
    correct = report.sources["cpc"]["item_correct"]
    assert len(correct) == 30 and set(correct) <= {0.0, 0.5, 1.0}  # mean over the 2 seeds
    assert "minus each baseline" in report.table and "vs raw pixels" in report.table
    assert (tmp_path / "classes.json").is_file()


@pytest.mark.skipif(not CIFAR_SUBSET.is_dir(), reason=f"{CIFAR_SUBSET} is absent")
def test_cli_prints_the_three_sources_with_intervals(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(TESTS / "fixtures" / "run_f2cadb0_image", run)
    cmd = [
        *(sys.executable, "-m", "cpc_lightning.evaluate", f"run_dir={run}", "task=classes"),
        *("data=cifar10_patches", f"data.root={CIFAR_SUBSET}", "probe.max_train_items=300"),
        *("probe.max_test_items=100", "probe.epochs=1", "probe.min_steps=20"),
    ]
    out = subprocess.run(cmd, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    for line in (
        "| CPC (trained) |",
        "| random init (same nets) |",
        "| raw pixels (standardised) |",
    ):
        assert line in out.stdout
    assert "- vs random init (same nets): accuracy " in out.stdout
    assert "- vs raw pixels (standardised): accuracy " in out.stdout
    assert "(100 test images)" in out.stdout
