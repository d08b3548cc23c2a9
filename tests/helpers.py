"""Shared test helpers: a tiny training configuration and the CLI as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "src" / "cpc_lightning" / "conf"

#: A few-second CPU run of the default pipeline (3 speakers, 16 channels, 4 steps).
BASE = {
    "data.synthetic.num_speakers": "3",
    "data.synthetic.utterances_per_speaker": "4",
    "data.synthetic.min_seconds": "1.0",
    "data.synthetic.max_seconds": "1.5",
    "data.window": "3200",
    "data.batch_size": "4",
    "encoder.hidden_dim": "16",
    "context.out_dim": "16",
    "model.prediction_steps": "3",
    "negatives.num_negatives": "8",
    "trainer.accelerator": "cpu",
    "trainer.max_steps": "4",
    "trainer.val_check_interval": "2",
    "trainer.limit_val_batches": "1",
    "trainer.log_every_n_steps": "1",
    "trainer.enable_progress_bar": "false",
    "callbacks.model_checkpoint.every_n_train_steps": "2",
    "probe.enabled": "false",
}


def tiny(*overrides: str, drop: tuple[str, ...] = ()) -> list[str]:
    """``BASE`` as Hydra overrides, with ``key=value`` items replacing or extending it and the
    keys in ``drop`` left out (for keys a test sets or sweeps itself)."""
    merged = {k: v for k, v in BASE.items() if k not in drop}
    for item in overrides:
        key, value = item.split("=", 1)
        merged[key] = value
    return [f"{k}={v}" for k, v in merged.items()]


def run_train(
    *args: str,
    timeout: int = 600,
    module: str = "cpc_lightning.train",
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """``python -m cpc_lightning.train ARGS`` from the repo root, output captured."""
    full_env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "src"),
        "CUDA_VISIBLE_DEVICES": "",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
