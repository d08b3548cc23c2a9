"""``logger=wandb`` from the command line, offline: a sweep's points in one group
(``job_type=sweep_point``) with its summary run, and the full `make train` pipeline."""

from __future__ import annotations

import pytest
from helpers import run_train, tiny
from helpers.wandb_offline import offline_env, offline_runs


@pytest.mark.slow
def test_sweep_points_share_a_group_and_the_summary_joins_it(tmp_path):
    pytest.importorskip("wandb")
    sweep = tmp_path / "sweep"
    proc = run_train(
        "-m",
        *tiny("trainer.max_steps=2", drop=("model.prediction_steps",)),
        "model.prediction_steps=2,3",
        "logger=wandb",
        f"hydra.sweep.dir={sweep}",
        env=offline_env(tmp_path / "home"),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    points = [run for job in ("0", "1") for run in offline_runs(sweep / job)]
    assert [p.run.job_type for p in points] == ["sweep_point", "sweep_point"]
    assert {p.run.run_group for p in points} == {"train-sweep"}
    (summary,) = offline_runs(sweep)
    assert summary.run.run_group == "train-sweep" and summary.run.job_type == "sweep_summary"
    table = summary.table("sweep/table")
    assert [row[table["columns"].index("status")] for row in table["data"]] == ["ok", "ok"]
    assert summary.image("sweep/plot").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_make_train_with_wandb_holds_the_probe_table_and_the_plots(tmp_path):
    """Acceptance: the default pipeline (`make train`, its end-of-run probes included),
    offline; the W&B run read back. (tests/training/test_wandb_results.py: the same, tiny.)"""
    pytest.importorskip("wandb")
    run_dir = tmp_path / "run"
    proc = run_train(
        "logger=wandb", f"hydra.run.dir={run_dir}", env=offline_env(tmp_path / "home"), timeout=3600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    (run,) = offline_runs(run_dir)
    assert run.run.job_type == "train"
    table = run.table("probe/table")
    assert table["columns"][:3] == ["features", "phones", "speakers"]
    assert all(isinstance(v, float) for v in table["data"][0][1:])
    assert run.image("plots/per_k").read_bytes()[:4] == b"\x89PNG"
    assert f"wandb sync {run.folder}" in proc.stdout
