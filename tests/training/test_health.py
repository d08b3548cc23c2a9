"""Throughput and health signals in metrics.csv; the run's environment in result.json."""

from __future__ import annotations

import csv
import json
import math

import pytest
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
