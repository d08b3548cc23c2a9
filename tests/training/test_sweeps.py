"""Hydra multirun: every point in its own dir; summary.csv/md/png; failed points recorded."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from helpers import run_train, tiny

from cpc_lightning.training.sweep_summary import collect_points, summarize, swept_keys

TINY = tiny(
    "trainer.max_steps=2",
    drop=(
        "model.prediction_steps",
        "negatives.num_negatives",
        "trainer.max_steps",
    ),
)


def fake_job(sweep: Path, num: int, overrides: list[str], loss: float | None, error: str = ""):
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if error:
        (job / "failed.txt").write_text(f"Traceback (most recent call last):\n  ...\n{error}\n")
    elif loss is not None:
        result = {"metrics": {"val/loss": loss, "val/acc": 0.5}, "global_step": 10}
        (job / "result.json").write_text(json.dumps(result))


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_summary_of_k_by_n_sweep_with_a_failed_point(tmp_path):
    num = 0
    for k in (2, 4):
        for n in (16, 64):
            err = "UserError: boom" if (k, n) == (4, 64) else ""
            fake_job(
                tmp_path,
                num,
                [
                    f"model.prediction_steps={k}",
                    f"negatives.num_negatives={n}",
                    "trainer.max_steps=10",
                ],
                1.0 / k + n / 1000,
                err,
            )
            num += 1
    fake_job(
        tmp_path,
        num,
        ["model.prediction_steps=8", "negatives.num_negatives=16", "trainer.max_steps=10"],
        None,
    )  # never wrote a result
    points = summarize(tmp_path, "val/loss")
    assert swept_keys(points) == ["model.prediction_steps", "negatives.num_negatives"]
    rows = read_csv(tmp_path / "summary.csv")
    assert [r["status"] for r in rows] == ["ok", "ok", "ok", "failed", "missing"]
    assert rows[3]["error"] == "UserError: boom"
    assert float(rows[0]["val/loss"]) == pytest.approx(0.516)
    md = (tmp_path / "summary.md").read_text()
    assert "**FAILED**" in md and "UserError: boom" in md
    assert (tmp_path / "summary.png").stat().st_size > 1000


def test_summary_heatmap_for_other_keys(tmp_path):
    num = 0
    for lr in (1e-3, 1e-4):
        for ctx in ("gru", "lstm"):
            fake_job(tmp_path, num, [f"model.optimizer.lr={lr}", f"context={ctx}"], 1.0 + num)
            num += 1
    points = collect_points(tmp_path)
    assert [p.job for p in points] == ["0", "1", "2", "3"]
    summarize(tmp_path, "val/loss")
    assert len(read_csv(tmp_path / "summary.csv")) == 4
    assert (tmp_path / "summary.png").stat().st_size > 1000


@pytest.mark.slow
def test_multirun_2x2_writes_summary(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_train(
        "-m",
        *TINY,
        "model.prediction_steps=2,3",
        "negatives.num_negatives=4,8",
        f"hydra.sweep.dir={sweep}",
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    for job in range(4):
        assert (sweep / str(job) / "result.json").is_file()
        assert (sweep / str(job) / "checkpoints" / "last.ckpt").is_file()
    rows = read_csv(sweep / "summary.csv")
    assert len(rows) == 4
    assert {(r["model.prediction_steps"], r["negatives.num_negatives"]) for r in rows} == {
        ("2", "4"),
        ("2", "8"),
        ("3", "4"),
        ("3", "8"),
    }
    assert all(r["status"] == "ok" and r["global_step"] == "2" for r in rows)
    assert all(float(r["val/loss"]) > 0 for r in rows)
    assert "val/acc_k3" in rows[0]
    assert len((sweep / "summary.md").read_text().strip().splitlines()) == 4 + 4
    assert (sweep / "summary.png").stat().st_size > 1000


@pytest.mark.slow
def test_multirun_failed_point_is_recorded_and_others_finish(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_train(
        "-m",
        *TINY,
        "model.prediction_steps=2,0",
        "negatives.num_negatives=4,8",
        f"hydra.sweep.dir={sweep}",
    )
    # every point ran and the summary is written, then the sweep says it failed (exit 1), the
    # log giving summary.md's count
    assert proc.returncode == 1, proc.stderr[-4000:]
    assert "(4 points, 2 failed or missing)" in (sweep / "summary.md").read_text()
    assert "4 points, 2 failed or missing (jobs 2, 3)" in proc.stdout + proc.stderr
    rows = read_csv(sweep / "summary.csv")
    assert len(rows) == 4
    by_k = {}
    for r in rows:
        by_k.setdefault(r["model.prediction_steps"], []).append(r)
    assert all(r["status"] == "ok" for r in by_k["2"])
    assert all(r["status"] == "failed" for r in by_k["0"])
    assert all("model.prediction_steps=0" in r["error"] for r in by_k["0"])
    assert "**FAILED**" in (sweep / "summary.md").read_text()


@pytest.mark.slow
def test_optuna_search_runs_its_trials_and_writes_the_summary(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="pip install -e '.[search]'")
    sweep = tmp_path / "sweep"
    proc = run_train(
        "-m",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=3",
        *TINY,
        "trainer.max_steps=4",
        "trainer.val_check_interval=4",
        f"hydra.sweep.dir={sweep}",
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = read_csv(sweep / "summary.csv")
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows)
    for r in rows:
        assert 1e-5 <= float(r["model.optimizer.lr"]) <= 2e-3
        assert int(r["model.prediction_steps"]) in (4, 8, 12)
        assert 0.0 <= float(r["val/online_probe_acc"]) <= 1.0
    assert (sweep / "summary.png").stat().st_size > 0
    assert "best_value" in (sweep / "optimization_results.yaml").read_text()
