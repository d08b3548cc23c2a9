"""`python -m cpc_lightning.train` on images: an ImageNet-layout tree, the CIFAR-10 experiment."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, run_train
from PIL import Image

DATA_DIR = Path(os.environ.get("CPC_DATA_DIR", REPO.parent / "shared" / "data"))
CIFAR_SUBSET = (DATA_DIR if DATA_DIR.is_absolute() else REPO / DATA_DIR) / "cifar10_subset"


def make_image_tree(root: Path, per_class: int = 4, size: int = 80) -> Path:
    """ImageNet layout: {train,val}/<class>/*.JPEG with random pixels."""
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", 2)):
        for name in ("cat", "dog", "fox"):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / split / name / f"{i}.JPEG")
    return root


def _check_run_dir(run_dir: Path, proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    result = json.loads((run_dir / "result.json").read_text())
    assert result["global_step"] == 2
    return result["metrics"]


def test_train_on_imagenet_layout_tree(tmp_path):
    root = make_image_tree(tmp_path / "imnet", per_class=4, size=80)
    run_dir = tmp_path / "run"
    proc = run_train(
        "data=imagenet_patches",
        "encoder=resnet",
        "context=masked_conv",
        f"data.root={root}",
        "data.batch_size=4",
        "data.image_size=64",
        "data.patch_size=16",
        "data.stride=8",
        "model.prediction_steps=2",
        "negatives.num_negatives=16",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "trainer.accelerator=cpu",
        "logger=csv",
        f"hydra.run.dir={run_dir}",
    )
    metrics = _check_run_dir(run_dir, proc)
    assert {"train/loss", "val/loss", "val/acc_k1", "val/acc_k2"} <= set(metrics)


@pytest.mark.skipif(
    not CIFAR_SUBSET.is_dir(), reason=f"shared CIFAR-10 subset absent: {CIFAR_SUBSET}"
)
def test_cifar_v2_experiment_runs(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_train(
        "experiment=cpc_images_v2_cifar",
        "data.root=../shared/data/cifar10_subset",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "trainer.limit_val_batches=1",
        "trainer.accelerator=cpu",
        f"hydra.run.dir={run_dir}",
    )
    metrics = _check_run_dir(run_dir, proc)
    # step_offset 1 with K=3: rows i+2..i+4
    assert {"val/acc_k2", "val/acc_k3", "val/acc_k4"} <= set(metrics)


def test_missing_image_root_is_one_clear_error(tmp_path):
    missing = tmp_path / "no_such_dataset"
    proc = run_train(
        "data=imagenet_patches",
        "encoder=resnet",
        "context=masked_conv",
        f"data.root={missing}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert proc.returncode != 0
    assert str(missing) in proc.stderr and "train/<class>" in proc.stderr
    assert "Traceback" not in proc.stderr
