"""Run dirs written by earlier code (release 0.1 is in ``test_runs.py``; commit f2cadb0 here, an
audio and an image run) still rebuild with the same features and still evaluate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import SHARED_DATA, TESTS, compose_entry

from cpc_lightning.runs import open_run

FIXTURES = TESTS / "fixtures"
CIFAR_SUBSET = SHARED_DATA / "cifar10_subset"


def _copy(name: str, tmp_path: Path) -> Path:
    run = tmp_path / name
    shutil.copytree(FIXTURES / name, run)
    return run


@pytest.mark.parametrize("name", ["run_f2cadb0_audio", "run_f2cadb0_image"])
def test_run_rebuilds_with_the_same_features(name: str, tmp_path: Path) -> None:
    run = open_run(_copy(name, tmp_path))
    ref = torch.load(FIXTURES / name / "reference_features.pt")
    g = torch.Generator().manual_seed(ref["seed"])
    x = ref["scale"] * torch.randn(*ref["shape"], generator=g)
    with torch.no_grad():
        torch.testing.assert_close(run.model.features(x, "z"), ref["z"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(run.model.features(x), ref["c"], rtol=1e-5, atol=1e-5)
    assert run.global_step == 2


def test_audio_run_evaluates(tmp_path: Path) -> None:
    from cpc_lightning.evaluate import evaluate

    run = _copy("run_f2cadb0_audio", tmp_path)
    cfg = compose_entry(
        "evaluate",
        [
            f"run_dir={run}",
            "task=speakers",
            f"+data.cache_dir={tmp_path / 'cache'}",
            "probe.epochs=2",
            "probe.min_steps=20",
        ],
    )
    evaluate(cfg)
    saved = json.loads((run / "eval" / "speakers.json").read_text())
    assert saved["global_step"] == 2
    assert set(saved["sources"]) >= {"cpc", "random_init", "mfcc"}
    assert saved["sources"]["cpc"]["dim"] == 8


@pytest.mark.skipif(not CIFAR_SUBSET.is_dir(), reason=f"{CIFAR_SUBSET} is absent")
def test_image_run_evaluates(tmp_path: Path) -> None:
    from cpc_lightning.evaluate import evaluate

    run = _copy("run_f2cadb0_image", tmp_path)
    cfg = compose_entry(
        "evaluate",
        [
            f"run_dir={run}",
            "task=classes",
            f"data.root={CIFAR_SUBSET}",
            "probe.epochs=1",
            "probe.min_steps=10",
            "probe.max_train_items=200",
            "probe.max_test_items=100",
        ],
    )
    evaluate(cfg)
    saved = json.loads((run / "eval" / "classes.json").read_text())
    assert saved["global_step"] == 2
    assert {"cpc", "random_init"} <= set(saved["sources"])
