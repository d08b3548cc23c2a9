"""`python -m cpc_lightning.train` on images, as users type it: an ImageNet-layout tree, CIFAR-10.

The first two commands are the ones users quote, with nothing added but the data root, a run
dir and a small ``trainer.max_steps``: the image data options bring their own model defaults.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
from helpers import SHARED_DATA, make_image_tree, run_train

CIFAR_SUBSET = SHARED_DATA / "cifar10_subset"
needs_cifar = pytest.mark.skipif(
    not CIFAR_SUBSET.is_dir(), reason=f"shared CIFAR-10 subset absent: {CIFAR_SUBSET}"
)


def _check_run_dir(run_dir: Path, proc: subprocess.CompletedProcess, steps: int = 2) -> dict:
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    result = json.loads((run_dir / "result.json").read_text())
    assert result["global_step"] == steps
    return result


def test_users_imagenet_command_trains_as_typed(tmp_path):
    root = make_image_tree(tmp_path / "imnet", per_class=3, size=80)
    run_dir = tmp_path / "run"
    proc = run_train(
        "encoder=resnet",
        "data=imagenet_patches",
        f"data.root={root}",
        "trainer.max_steps=2",
        f"hydra.run.dir={run_dir}",
    )
    result = _check_run_dir(run_dir, proc)
    metrics = result["metrics"]
    assert {"train/loss", "val/loss", *(f"val/acc_k{k}" for k in range(1, 6))} <= set(metrics)
    assert result["setup"]["context"] == "MaskedConvContext"
    assert result["setup"]["prediction_steps"] == 5
    assert "classes" in result["probe_table"]  # the end-of-run probe on image classes


@pytest.mark.slow  # ~2 min: the end-of-run probe extracts all 6000 images of the subset
@needs_cifar
def test_users_cifar_command_trains_as_typed(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_train(
        "data=cifar10_patches",
        f"data.root={CIFAR_SUBSET}",
        "trainer.max_steps=2",
        f"hydra.run.dir={run_dir}",
        timeout=900,
    )
    result = _check_run_dir(run_dir, proc)
    assert result["setup"]["encoder"] == "PatchResNet"
    assert {f"val/acc_k{k}" for k in range(1, 6)} <= set(result["metrics"])


@needs_cifar
def test_cifar_v2_experiment_runs(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_train(
        "experiment=cpc_images_v2_cifar",
        f"data.root={CIFAR_SUBSET}",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "trainer.limit_val_batches=1",
        "trainer.accelerator=cpu",
        f"hydra.run.dir={run_dir}",
    )
    metrics = _check_run_dir(run_dir, proc)["metrics"]
    # step_offset 1 with K=3: rows i+2..i+4
    assert {"val/acc_k2", "val/acc_k3", "val/acc_k4"} <= set(metrics)


def test_k_that_cannot_fit_the_grid_is_refused_at_start_up(tmp_path):
    root = make_image_tree(tmp_path / "imnet", per_class=1, size=80)
    proc = run_train(
        "data=imagenet_patches",
        f"data.root={root}",
        "model.prediction_steps=7",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if "error" in ln]
    assert len(lines) == 1 and "model.prediction_steps=7" in lines[0]
    assert "7 rows" in lines[0] and "at most 6" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


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


@needs_cifar
def test_cpc_v2_loss_options_train_from_the_command_line(tmp_path):
    """Every negative of the batch, anchors for every k, one context net per direction and
    whole-image colour augmentation, as options on the v2 experiment."""
    run_dir = tmp_path / "run"
    proc = run_train(
        "experiment=cpc_images_v2_cifar",
        f"data.root={CIFAR_SUBSET}",
        "negatives.num_negatives=all",  # the experiment sets 128 over negatives=all
        "model.all_anchors=true",
        "context.per_direction=true",
        "data.augment=[v2,colour_jitter,grayscale]",
        "data.augment_params.grayscale.p=0.5",
        "probe.enabled=false",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "trainer.limit_val_batches=1",
        "trainer.accelerator=cpu",
        f"hydra.run.dir={run_dir}",
    )
    result = _check_run_dir(run_dir, proc)
    assert result["setup"]["num_negatives"] == "all"
    metrics = result["metrics"]
    # N + 1 = every patch of the batch: 32 images x 7 x 7
    for k in (2, 3, 4):
        bound = math.log(32 * 49)
        assert abs(metrics[f"val/mi_k{k}"] - (bound - metrics[f"val/loss_k{k}"])) < 1e-3
