"""``python -m cpc_lightning.convert`` as a user types it, and the converted run dir in
``evaluate``, ``extract`` and ``train resume=`` (fine-tuning on fsdd), each a subprocess."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SHARED_DATA, SHARED_FIXTURES, run_train
from helpers import cpc_audio_reference as ref
from helpers.features import assert_api_matches_extract

import cpc_lightning

FIXTURES = SHARED_FIXTURES / "cpc_audio"
pytestmark = pytest.mark.slow  # subprocesses importing torch + Lightning


def convert(tmp: Path, source: Path, name: str = "converted", *extra: str):
    out = tmp / name
    proc = run_train(
        "from=cpc_audio", f"checkpoint={source}", f"out={out}", *extra,
        module="cpc_lightning.convert", env={"CPC_CACHE_DIR": str(tmp / "cache")}, timeout=300,
    )  # fmt: skip
    return proc, out


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not FIXTURES.is_dir() or not SHARED_DATA.is_dir():
        pytest.skip(f"shared fixtures or data absent: {FIXTURES}, {SHARED_DATA}")
    proc, out = convert(tmp_path_factory.mktemp("cli"), FIXTURES / "train_run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_convert_writes_a_run_dir_that_says_where_it_came_from(converted: Path) -> None:
    for name in (".hydra/config.yaml", "config_resolved.yaml", "checkpoints/last.ckpt"):
        assert (converted / name).is_file(), name
    result = json.loads((converted / "result.json").read_text())
    source = result["converted_from"]
    assert source["format"] == "cpc_audio" and source["layout"] == "train_run"
    assert source["checkpoint"].endswith("checkpoint_7.pt") and source["epoch"] == 7
    assert source == json.loads((converted / "converted_from.json").read_text())
    ckpt = torch.load(converted / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 0 and ckpt["optimizer_states"] == []


def test_evaluate_speakers_on_fsdd(converted: Path) -> None:
    proc = run_train(
        f"run_dir={converted}", "task=speakers", "data=fsdd", "probe.epochs=2",
        "probe.min_steps=50", "probe.max_train_items=300", "probe.max_test_items=150",
        module="cpc_lightning.evaluate", timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((converted / "eval" / "speakers.json").read_text())
    cpc = report["sources"]["cpc"]
    assert cpc["dim"] == 64 and cpc["counts"]["test_rows"] >= 150
    assert cpc["accuracy"] > cpc["chance_majority"]
    print(f"converted CPC_audio fixture, fsdd speakers: {100 * cpc['accuracy']:.1f} %")


def test_extract_writes_every_layer_and_the_api_gives_the_same(converted: Path, tmp_path: Path):
    out = tmp_path / "feats"
    proc = run_train(
        f"run_dir={converted}", "data=fsdd", "split=test", f"out={out}", "layers=all",
        module="cpc_lightning.extract", timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((out / "features.json").read_text())
    assert [e["dir"] for e in meta["layers"]] == ["z", "layer_0", "layer_1"]
    assert meta["num_files"] == 300 and meta["frame_rate_hz"] == 100.0
    assert_api_matches_extract(cpc_lightning.load(converted), out)  # 8 kHz: resampled


def train_losses(run: Path) -> list[tuple[int, float]]:
    with open(run / "metrics.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("train/loss")]
    return [(int(float(r["step"])), float(r["train/loss"])) for r in rows]


def test_fine_tuning_the_converted_weights_on_fsdd(tmp_path: Path) -> None:
    if not FIXTURES.is_dir() or not SHARED_DATA.is_dir():
        pytest.skip(f"shared fixtures or data absent: {FIXTURES}, {SHARED_DATA}")
    proc, run = convert(tmp_path, FIXTURES / "train_run", "finetune")
    assert proc.returncode == 0, proc.stderr[-3000:]
    before = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    proc = run_train(
        f"resume={run}", "data=fsdd", "trainer.max_steps=20", "trainer.log_every_n_steps=1",
        "trainer.val_check_interval=10", "trainer.limit_val_batches=2", "probe.enabled=false",
        "trainer.enable_progress_bar=false", env={"CPC_CACHE_DIR": str(tmp_path / "cache")},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = train_losses(run)
    assert [s for s, _ in losses] == list(range(20))
    assert all(math.isfinite(v) for _, v in losses)
    first, last = np.mean([v for _, v in losses[:5]]), np.mean([v for _, v in losses[-5:]])
    print(f"fine-tuning loss, steps 0-4 / 15-19: {first:.4f} / {last:.4f}")
    assert last < first
    after = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert after["global_step"] == 20 and not list(run.glob("checkpoints/last-v*"))
    moved = [
        k
        for k in before
        if k.startswith("heads.") and not torch.equal(before[k], after["state_dict"][k])
    ]
    assert moved  # the converted heads trained on
    assert (run / "converted_from.json").is_file()


def test_a_hub_file_converts_and_a_refusal_is_one_line(tmp_path: Path) -> None:
    args = ref.make_args(arMode="GRU", rnnMode=None)
    proc, out = convert(tmp_path, ref.write_hub(tmp_path / "hub.pt", args, ref.model_state(args)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "result.json").read_text())["converted_from"]["layout"] == "hub"
    args["normMode"] = "weightNorm"
    bad = ref.write_hub(tmp_path / "bad.pt", args, ref.model_state({**args, "normMode": "ID"}))
    proc, out = convert(tmp_path, bad, "never")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if "error" in ln]
    want = f"cpc_lightning.convert: error: checkpoint={bad}: normMode='weightNorm' is unknown"
    assert len(lines) == 1 and lines[0].startswith(want)
    assert not out.exists()
