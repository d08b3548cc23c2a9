"""Throughput and health signals in metrics.csv; the run's environment in result.json."""

from __future__ import annotations

import csv
import json
import math
import time

import pytest
import pytorch_lightning as pl
import torch
from helpers import run_train, tiny

from cpc_lightning.training.environment import choose_precision, code_version, native_bf16_cpu


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def padded_run(tmp_path_factory):
    """4 steps on 1.0-1.5 s utterances cut into 2 s windows: a quarter to half is padding."""
    run_dir = tmp_path_factory.mktemp("health") / "run"
    proc = run_train(*tiny("data.window=32000"), f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return run_dir


def test_health_metrics_are_logged_with_sane_values(padded_run):
    all_rows = _rows(padded_run / "metrics.csv")
    lr_at = {r["step"]: float(r["lr-Adam"]) for r in all_rows if r.get("lr-Adam")}
    rows = [r for r in all_rows if r.get("perf/step_time_s")]
    assert len(rows) == 4  # log_every_n_steps=1: every step, the first one included
    for r in rows:
        v = {k: float(x) for k, x in r.items() if x and k.startswith(("perf/", "health/"))}
        assert 0 < v["perf/step_time_s"] < 60
        assert 0 <= v["perf/data_wait_frac"] < 1
        # 4 windows of 2 s per step at the measured step time (one device: total == per device)
        assert v["perf/audio_s_per_s"] == pytest.approx(4 * 2.0 / v["perf/step_time_s"], rel=1e-3)
        assert v["perf/audio_s_per_s_total"] == pytest.approx(v["perf/audio_s_per_s"])
        assert 0.25 <= v["health/padded_frac"] <= 0.5
        assert v["perf/peak_mem_mb"] > 50
        parts = [v[f"health/grad_norm_{p}"] for p in ("encoder", "context", "heads")]
        assert all(p > 0 and math.isfinite(p) for p in parts)
        assert v["health/grad_norm"] == pytest.approx(math.sqrt(sum(p * p for p in parts)), 1e-4)
        assert v["health/lr"] == pytest.approx(lr_at[r["step"]], rel=1e-6)


def test_result_json_records_code_and_library_versions(padded_run):
    env = json.loads((padded_run / "result.json").read_text())["environment"]
    assert env["torch"].startswith("2.") and env["pytorch_lightning"].startswith("2.")
    assert env["device"]["type"] == "cpu" and env["device"]["precision"] == "32-true"
    assert env["code"]["package"]
    if "git_commit" in env["code"]:  # run from a checkout
        assert len(env["code"]["git_commit"]) == 40 and isinstance(env["code"]["git_dirty"], bool)
    hparams = (padded_run / "hparams.yaml").read_text()
    assert "environment" in hparams and "pytorch_lightning" in hparams


def test_code_version_in_a_checkout_names_the_commit():
    code = code_version()
    assert code["package"]
    assert set(code) <= {"package", "git_commit", "git_dirty"}


def test_auto_precision_follows_the_cpu_flags(caplog):
    caplog.set_level("INFO", logger="cpc_lightning.train")
    assert native_bf16_cpu({"avx2", "amx_bf16"}) == "amx_bf16"
    assert choose_precision("auto", "cpu", {"avx2", "avx512_bf16"}) == "bf16-mixed"
    assert "avx512_bf16" in caplog.text
    assert choose_precision("auto", "cpu", {"avx2", "fma"}) == "32-true"
    assert "no native bf16" in caplog.text
    assert choose_precision("32-true", "cpu", {"amx_bf16"}) == "32-true"  # explicit wins


class _SleepySet(torch.utils.data.Dataset):
    """Audio-shaped items that take ``delay`` seconds each to "load"."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def __len__(self) -> int:
        return 64

    def __getitem__(self, i):
        time.sleep(self.delay)
        return {"x": torch.randn(1, 1600), "mask": torch.ones(1600, dtype=torch.bool)}


class _Toy(pl.LightningModule):
    """A one-layer model whose step takes ``delay`` seconds (standing in for compute)."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.encoder = torch.nn.Linear(1600, 4)
        self.delay = delay

    def training_step(self, batch, batch_idx):
        time.sleep(self.delay)
        return self.encoder(batch["x"][:, 0]).square().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _wait_fraction(tmp_path, load_delay: float, step_delay: float) -> float:
    from pytorch_lightning.loggers import CSVLogger

    from cpc_lightning.training.health import TrainingHealth

    trainer = pl.Trainer(
        accelerator="cpu", max_steps=6, log_every_n_steps=3, callbacks=[TrainingHealth()],
        logger=CSVLogger(tmp_path, name="", version=""), enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(_SleepySet(load_delay), batch_size=2)
    trainer.fit(_Toy(step_delay), loader)
    rows = [r for r in _rows(tmp_path / "metrics.csv") if r.get("perf/data_wait_frac")]
    assert [int(r["step"]) for r in rows] == [2, 5]
    assert all(float(r["health/grad_norm_encoder"]) > 0 for r in rows)
    return float(rows[-1]["perf/data_wait_frac"])


def test_data_wait_tells_a_loader_bottleneck_from_a_compute_one(tmp_path):
    assert _wait_fraction(tmp_path / "loader", load_delay=0.1, step_delay=0.0) > 0.6
    assert _wait_fraction(tmp_path / "compute", load_delay=0.0, step_delay=0.2) < 0.2
