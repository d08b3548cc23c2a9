"""Trainer presets, mixed precision on CPU, gradient clipping, ``model.compile`` checkpoints."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "src" / "cpc_lightning" / "conf"
TINY = [
    "encoder.hidden_dim=16",
    "context.out_dim=16",
    "data.window=3200",
    "model.prediction_steps=2",
    "negatives.num_negatives=8",
    "data.batch_size=4",
    "data.synthetic.num_speakers=3",
    "data.synthetic.utterances_per_speaker=4",
    "trainer.accelerator=cpu",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "trainer.limit_val_batches=1",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "probe.enabled=false",
]


def run_train(*args: str, timeout: int = 400) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, "-m", "cpc_lightning.train", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("cpu", {"accelerator": "cpu", "devices": 1, "precision": "32-true"}),
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
def test_compiled_run_loads_in_load_trained(tmp_path):
    from cpc_lightning.builder import load_trained

    run_dir = tmp_path / "run"
    proc = run_train(*TINY, "model.compile=true", f"hydra.run.dir={run_dir}", timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    _, model = load_trained(run_dir)
    assert model.encoder is not None
