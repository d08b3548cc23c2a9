"""``logger=wandb`` without credentials: offline run dir with the per-k metrics and the config."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, tiny

TINY = tiny("model.prediction_steps=2", "trainer.max_steps=2")


def read_wandb_records(path: Path) -> list:
    """The protobuf records of an offline run's ``run-<id>.wandb`` file.

    The file is a 7-byte header then 32 KiB blocks of chunks, each with a 7-byte header
    (crc32 ``<I``, length ``<H``, type ``B``: 1 full, 2 first, 3 middle, 4 last).
    """
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B run file"
    block, pos, chunk, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pos += 7
        if length == 0 and kind == 0:  # zero padding up to the block end
            pos += left - 7
            continue
        chunk += data[pos : pos + length]
        pos += length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    return {
        **env,
        "PYTHONPATH": str(REPO / "src"),
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
    assert files
    records = read_wandb_records(files[0])
    history: dict[str, float] = {}
    config: dict[str, object] = {}
    run = None
    for rec in records:
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            for item in rec.history.item:
                history[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "config":
            config.update({i.key: json.loads(i.value_json) for i in rec.config.update})
        elif kind == "run":
            run = rec.run
            config.update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
    for k in (1, 2):
        assert f"val/acc_k{k}" in history and f"val/mi_k{k}" in history
        assert f"train/loss_k{k}" in history
    assert run is not None and run.project == "cpc_test"
    assert list(run.tags) == ["tiny", "ci"]
    # the resolved training config
    assert config["model"]["prediction_steps"] == 2
    assert config["negatives"]["num_negatives"] == 8
    assert config["setup"]["prediction_steps"] == 2 and config["setup"]["num_negatives"] == 8
