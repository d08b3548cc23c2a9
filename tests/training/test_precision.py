"""Trainer presets, mixed precision on CPU, gradient clipping, ``model.compile`` checkpoints."""

from __future__ import annotations

import json
import math

import pytest
from helpers import CONF, run_train, tiny
from hydra import compose, initialize_config_dir

TINY = tiny("model.prediction_steps=2")


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("cpu", {"accelerator": "cpu", "devices": 1, "precision": "auto"}),
        ("gpu", {"accelerator": "gpu", "devices": 1, "precision": "bf16-mixed"}),
        ("ddp", {"accelerator": "gpu", "devices": 8, "num_nodes": 1}),
        ("ddp_sim", {"accelerator": "cpu", "devices": 2, "strategy": "ddp_spawn"}),
    ],
)
def test_trainer_presets(preset, expected):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"trainer={preset}", "trainer.gradient_clip_val=1.0"])
    for key, value in expected.items():
        assert cfg.trainer[key] == value, key
    assert cfg.trainer.gradient_clip_val == 1.0


@pytest.mark.slow
def test_bf16_mixed_on_cpu_trains_with_finite_loss(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_train(
        *TINY,
        "trainer.precision=bf16-mixed",
        "trainer.gradient_clip_val=0.5",
        f"hydra.run.dir={run_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["global_step"] == 4
    for key in ("train/loss", "val/loss", "val/acc_k2"):
        assert math.isfinite(result["metrics"][key]), key
    assert "bf16" in proc.stderr + proc.stdout  # Lightning reports the precision it uses


@pytest.mark.slow
def test_compiled_run_loads_in_open_run(tmp_path):
    from cpc_lightning.runs import open_run

    run_dir = tmp_path / "run"
    proc = run_train(*TINY, "model.compile=true", f"hydra.run.dir={run_dir}", timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    run = open_run(run_dir)
    assert run.global_step == 4 and run.model.encoder is not None
