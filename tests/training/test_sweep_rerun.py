"""Re-running into run dirs that hold runs: sweep points are reused or resumed, single runs are
never overwritten, and no ``-v1`` checkpoint appears."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import REPO, cli_env, make_cfg, run_train, tiny
from omegaconf import OmegaConf

from cpc_lightning.errors import UserError
from cpc_lightning.runs import RESOLVED_CONFIG, open_run
from cpc_lightning.training.rerun import config_difference, prepare_point
from cpc_lightning.training.sweep_summary import summarize


def test_config_difference_names_the_first_key_and_ignores_how_to_resume(tmp_path):
    a = make_cfg(tiny(), tmp_path)
    b = make_cfg(tiny("ckpt_path=last", "trainer.enable_progress_bar=true"), tmp_path)
    assert config_difference(a, b) is None
    c = make_cfg(tiny("model.prediction_steps=4"), tmp_path)
    assert config_difference(a, c).startswith("heads.num_steps: 3 -> 4")


def point_dir(tmp_path: Path, cfg, result: bool, last: bool) -> Path:
    out = tmp_path / "point"
    (out / "checkpoints").mkdir(parents=True)
    (out / RESOLVED_CONFIG).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    if result:
        (out / "result.json").write_text(json.dumps({"metrics": {"val/loss": 1.5}}))
    if last:
        (out / "checkpoints" / "last.ckpt").write_bytes(b"x")
    return out


def test_a_finished_point_is_reused(tmp_path):
    cfg = make_cfg(tiny(), tmp_path)
    out = point_dir(tmp_path, cfg, result=True, last=True)
    (out / "failed.txt").write_text("an old failure")
    assert prepare_point(cfg, out) == {"metrics": {"val/loss": 1.5}}
    assert (out / "reused.json").is_file() and (out / "failed.previous.txt").is_file()
    assert not (out / "failed.txt").exists()


def test_an_unfinished_point_resumes_and_another_config_is_refused(tmp_path):
    cfg = make_cfg(tiny(), tmp_path)
    out = point_dir(tmp_path, cfg, result=False, last=True)
    assert prepare_point(cfg, out) is None and cfg.ckpt_path == "last"
    other = make_cfg(tiny("negatives.num_negatives=4"), tmp_path)
    with pytest.raises(UserError, match=r"another config \(negatives.num_negatives: 8 -> 4\)"):
        prepare_point(other, out)


def test_a_fresh_run_never_overwrites_a_run_dir(tmp_path):
    """Finding 3: a second run into the same dir wrote last-v1.ckpt beside a stale last.ckpt."""
    from cpc_lightning.train import train

    cfg = make_cfg(tiny("trainer.max_steps=2"), tmp_path)
    train(cfg)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    with pytest.raises(UserError, match="already holds a run .*ckpt_path=last"):
        train(make_cfg(tiny("trainer.max_steps=4"), tmp_path))
    assert last.read_bytes() == before
    # continuing it replaces last.ckpt in place: no -v1 file
    train(make_cfg(tiny("trainer.max_steps=4", "ckpt_path=last"), tmp_path))
    assert torch.load(last, weights_only=False)["global_step"] == 4
    assert not [p for p in last.parent.iterdir() if "-v" in p.name]


def test_summary_marks_reused_and_resumed_points(tmp_path):
    for num, extra in ((0, "reused"), (1, "resumed"), (2, "")):
        job = tmp_path / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- model.prediction_steps={num + 1}\n")
        result = {"metrics": {"val/loss": 1.0}, "global_step": 8}
        if extra == "resumed":
            result["resumed_from_step"] = 4
        (job / "result.json").write_text(json.dumps(result))
        if extra == "reused":
            (job / "reused.json").write_text("{}")
    summarize(tmp_path)
    with open(tmp_path / "summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["status"] for r in rows] == ["reused", "ok", "ok"]
    assert [r["resumed_from_step"] for r in rows] == ["", "4", ""]
    md = (tmp_path / "summary.md").read_text()
    assert "0 failed or missing" in md and "ok (resumed from step 4)" in md


# ------------------------------------------------------------------------ slow: the CLI
SWEEP = tiny(
    "trainer.max_steps=8",
    "trainer.val_check_interval=4",
    "callbacks.model_checkpoint.every_n_train_steps=2",
    drop=("model.prediction_steps",),
)


@pytest.mark.slow
def test_a_killed_sweep_rerun_reuses_finished_points_and_resumes_the_killed_one(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *SWEEP, "model.prediction_steps=1,2,3", f"hydra.sweep.dir={sweep}"]
    env = {"CPC_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cpc_lightning.train", *args],
        cwd=REPO,
        env=cli_env(**env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    target = sweep / "2" / "checkpoints" / "step0000004.ckpt"
    deadline = time.monotonic() + 400
    while not target.exists():
        assert proc.poll() is None, "the sweep ended before it was killed"
        assert time.monotonic() < deadline, "the third point wrote no checkpoint in time"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (sweep / "2" / "result.json").exists()
    killed_at = torch.load(sweep / "2" / "checkpoints" / "last.ckpt", weights_only=False)
    assert 2 <= killed_at["global_step"] < 8
    finished = {n: (sweep / str(n) / "metrics.csv").read_bytes() for n in (0, 1)}

    again = run_train(*args, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    for n in (0, 1):  # reused: not trained again
        assert (sweep / str(n) / "reused.json").is_file()
        assert (sweep / str(n) / "metrics.csv").read_bytes() == finished[n]
    resumed = json.loads((sweep / "2" / "result.json").read_text())
    assert resumed["global_step"] == 8
    assert resumed["resumed_from_step"] == killed_at["global_step"]
    with open(sweep / "summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["status"], r["global_step"]) for r in rows] == [
        ("reused", "8"),
        ("reused", "8"),
        ("ok", "8"),
    ]
    assert rows[2]["resumed_from_step"] == str(resumed["resumed_from_step"])
    assert not [p for p in sweep.rglob("*.ckpt") if "-v" in p.name]
    assert open_run(sweep / "2").global_step == 8  # what `evaluate run_dir=` names
