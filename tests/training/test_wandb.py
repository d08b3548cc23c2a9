"""``logger=wandb`` without credentials: offline run dir with the per-k metrics and the config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, tiny

TINY = tiny("model.prediction_steps=2", "trainer.max_steps=2")


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    return {
        **env,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "tests")]),
        "CUDA_VISIBLE_DEVICES": "",
        "HOME": str(tmp_path / "home"),  # no ~/.netrc: no credentials
        "NETRC": str(tmp_path / "home" / "no-netrc"),
        "WANDB_CONFIG_DIR": str(tmp_path / "home" / ".config" / "wandb"),
    }


@pytest.mark.slow
def test_wandb_without_credentials_logs_offline(tmp_path):
    pytest.importorskip("wandb")
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cpc_lightning.train",
            *TINY,
            "logger=wandb",
            "logger.wandb._target_=helpers.loggers.RecordingWandbLogger",
            "logger.wandb.project=cpc_test",
            "logger.wandb.tags=[tiny,ci]",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=REPO,
        env=_env(tmp_path),
        stdin=subprocess.DEVNULL,  # a login prompt would fail, not hang
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    offline = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1, list((run_dir / "wandb").iterdir())
    assert f"wandb sync {offline[0]}" in proc.stdout
    files = list(offline[0].glob("run-*.wandb"))
    assert files and files[0].stat().st_size > 1000  # W&B's own offline log was written
    record = json.loads((run_dir / "wandb_record.json").read_text())
    assert record["offline"] and record["project"] == "cpc_test"
    assert record["tags"] == ["tiny", "ci"]
    for k in (1, 2):
        assert {f"val/acc_k{k}", f"val/mi_k{k}", f"train/loss_k{k}"} <= set(record["logged"])
    # the resolved training config, as the W&B run holds it
    config = record["config"]
    assert config["model"]["prediction_steps"] == 2
    assert config["negatives"]["num_negatives"] == 8
    assert config["setup"]["prediction_steps"] == 2 and config["setup"]["num_negatives"] == 8
