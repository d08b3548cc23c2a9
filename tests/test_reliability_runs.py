"""Issue 30, run dirs: a refused or failed run changes nothing already written; a finished run
is not retrained; a diverged run never ends with ``status: ok`` and exit code 0.

In-process runs of the tiny synthetic pipeline (``helpers.tiny``), plus the CLI where Hydra's
own files (``.hydra/``, ``train.log``) or the one-line errors are what is checked.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from helpers import compose_entry, make_cfg, make_run, run_train, tiny

from cpc_lightning.build import build_model
from cpc_lightning.errors import UserError
from cpc_lightning.train import train
from cpc_lightning.training.guard import TrainingDiverged
from cpc_lightning.training.rerun import RunDirRefused, prepare_point


def checksums(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative path) -> its SHA-256."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def trained(tmp_path: Path, *overrides: str) -> Path:
    """A tiny run of 2 steps in ``tmp_path/run``."""
    train(make_cfg(tiny("trainer.max_steps=2", *overrides), tmp_path))
    return tmp_path / "run"


# --------------------------------------------------------------- finding 1: a failed resume
def test_a_resume_whose_model_does_not_fit_changes_nothing(tmp_path):
    run = trained(tmp_path)
    before = checksums(run)
    bad = make_cfg(tiny("ckpt_path=last", "context.out_dim=32", "trainer.max_steps=4"), tmp_path)
    with pytest.raises(UserError) as err:
        train(bad)
    msg = str(err.value)
    assert "\n" not in msg and "does not fit the model" in msg
    assert "context.out_dim: 16 -> 32" in msg and "nothing was changed" in msg
    assert checksums(run) == before
    # the run is intact: a plain resume continues it
    train(make_cfg(tiny("ckpt_path=last", "trainer.max_steps=4"), tmp_path))
    assert json.loads((run / "result.json").read_text())["global_step"] == 4


# --------------------------------------------------------------- finding 2: a finished run
def test_resuming_a_finished_run_changes_nothing(tmp_path, caplog):
    run = trained(tmp_path)
    before = checksums(run)
    result = train(make_cfg(tiny("ckpt_path=last", "trainer.max_steps=2"), tmp_path))
    assert checksums(run) == before
    assert result["metrics"] and result["global_step"] == 2  # the saved result
    assert any("already reached trainer.max_steps=2" in r.getMessage() for r in caplog.records)


# ------------------------------------------------ finding 5: one rule, a refusal touches nothing
def test_a_new_run_never_replaces_the_rows_of_a_run_killed_before_its_first_checkpoint(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("epoch,step,train/loss\n0,0,2.5\n")
    with pytest.raises(RunDirRefused, match="already holds a run .*metrics.csv.*nothing was"):
        train(make_cfg(tiny("trainer.max_steps=2"), tmp_path))
    assert (run / "metrics.csv").read_text() == "epoch,step,train/loss\n0,0,2.5\n"
    assert sorted(p.name for p in run.iterdir()) == ["metrics.csv"]


def test_a_refused_sweep_point_keeps_its_failure_file(tmp_path):
    cfg = make_cfg(tiny(), tmp_path)
    run = make_run(tmp_path)  # another config (TINY_RUN), with a checkpoint
    (run / "failed.txt").write_text("an old failure")
    before = checksums(run)
    with pytest.raises(RunDirRefused, match="another config"):
        prepare_point(cfg, run)
    assert checksums(run) == before


@pytest.mark.slow
def test_a_refused_new_run_leaves_hydra_files_and_the_log_alone(tmp_path):
    run = make_run(tmp_path)
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text("old: config\n")
    (run / ".hydra" / "overrides.yaml").write_text("- old=override\n")
    (run / "train.log").write_text("the old run's log\n")
    before = checksums(run)
    proc = run_train(*tiny("trainer.max_steps=2"), f"hydra.run.dir={run}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "already holds a run" in proc.stderr and "Traceback" not in proc.stderr
    assert checksums(run) == before


# --------------------------------------------------------------- finding 6: the end state
def _diverges(tmp_path: Path, *overrides: str) -> tuple[str, dict]:
    cfg = make_cfg(tiny("trainer.val_check_interval=2", *overrides), tmp_path)
    with pytest.raises(TrainingDiverged) as err:
        train(cfg)
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert "\n" not in str(err.value) and "model.optimizer.lr" in str(err.value)
    assert result["status"] == "diverged" and result["diverged"]
    return str(err.value), result


def test_a_run_whose_last_steps_were_skipped_is_diverged(tmp_path):
    """lr=1e30: every step after the first is non-finite and skipped (fewer than
    max_consecutive), val/loss NaN."""
    msg, result = _diverges(tmp_path, "model.optimizer.lr=1e30", "trainer.max_steps=8")
    assert "were skipped" in msg and "from step 1" in msg
    assert "no checkpoint is from before step 1" in msg  # its first update gave the NaN
    assert not list((tmp_path / "run" / "checkpoints").glob("*.ckpt"))  # none from the streak


def test_a_run_whose_loss_exploded_is_diverged(tmp_path):
    """lr=1e7: finite but exploded losses; no step skipped."""
    msg, result = _diverges(tmp_path, "model.optimizer.lr=1e7", "trainer.max_steps=20")
    assert "exploded" in msg and "callbacks.guard.max_loss_ratio=10" in msg
    assert result["metrics"]["guard/skipped_steps"] == 0


def test_the_checkpoint_named_after_a_streak_gave_a_finite_loss(tmp_path):
    """max_consecutive=1 named last.ckpt as finite, but it held the update that caused the NaN."""
    msg, _ = _diverges(
        tmp_path,
        "model.optimizer.lr=1e30",
        "trainer.max_steps=8",
        "callbacks.guard.max_consecutive=1",
        "callbacks.model_checkpoint.every_n_train_steps=1",
    )
    # step 0's update gave the NaN of step 1: no checkpoint holds weights with a finite loss
    # (step0000001.ckpt, written before the NaN was seen, is not offered as a fix)
    assert "no checkpoint is from before step 1" in msg and "step0000001" not in msg
    assert "now holds" not in msg and "start a new run" in msg
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"  # not rewritten with those weights
    assert torch.load(last, weights_only=False)["global_step"] == 1


def test_the_printed_fix_works(tmp_path):
    """A healthy run continued at lr=1e30 diverges; the checkpoint the message names gave a
    finite loss, and continuing from it with a sane lr (the printed fix) ends ok."""
    trained(tmp_path, "trainer.max_steps=4")
    msg, _ = _diverges(
        tmp_path,
        "ckpt_path=last",
        "model.optimizer.lr=1e30",  # applied on resume, not the checkpoint's rate
        "trainer.max_steps=8",
        "callbacks.guard.max_consecutive=1",
    )
    good = tmp_path / "run" / "checkpoints" / "step0000004.ckpt"
    assert f"continue from it with resume={tmp_path / 'run'} ckpt_path={good}" in msg
    result = train(make_cfg(tiny(f"ckpt_path={good}", "trainer.max_steps=8"), tmp_path))
    assert result["status"] == "ok" and math.isfinite(result["metrics"]["val/loss"])


def test_a_healthy_run_is_ok(tmp_path):
    run = trained(tmp_path)
    assert json.loads((run / "result.json").read_text())["status"] == "ok"


# --------------------------------------------------------------- finding 9: converted runs
def test_resuming_a_converted_run_keeps_where_it_came_from(tmp_path):
    run = trained(tmp_path)
    source = {"format": "cpc_audio", "path": "/somewhere/checkpoint_10.pt"}
    (run / "converted_from.json").write_text(json.dumps(source))
    train(make_cfg(tiny("ckpt_path=last", "trainer.max_steps=4"), tmp_path))
    assert json.loads((run / "result.json").read_text())["converted_from"] == source


# --------------------------------------------------------------- tracebacks -> one line
def _fake_training_checkpoint(model: torch.nn.Module, path: Path) -> Path:
    state = {"state_dict": model.state_dict(), "optimizer_states": [], "loops": {}}
    torch.save({**state, "global_step": 2, "pytorch-lightning_version": pl.__version__}, path)
    return path


def _image_checkpoint(tmp_path: Path) -> Path:
    cfg = compose_entry("train", ["data=imagenet_patches", "data.root=/nonexistent"])
    return _fake_training_checkpoint(build_model(cfg), tmp_path / "image.ckpt")


def _case(name: str, tmp_path: Path) -> tuple[list[str], str, Path | None]:
    """The command line of a case, what its one line says, and a dir it must not change."""
    if name == "run_dir is a file":
        path = tmp_path / "some.ckpt"
        path.write_bytes(b"x")
        return ["--module=cpc_lightning.evaluate", f"run_dir={path}"], "is a file", None
    run = make_run(tmp_path)
    ckpt = _fake_training_checkpoint(build_model(compose_entry("train", [])), run / "c.ckpt")
    shutil.move(ckpt, run / "checkpoints" / "last.ckpt")  # a full training checkpoint
    if name == "resume model mismatch":
        return [f"resume={run}", "context.out_dim=32"], "context.out_dim", run
    if name == "ckpt_path=last model mismatch":
        args = [*tiny(), f"hydra.run.dir={run}", "ckpt_path=last"]
        return args, "does not fit the model", run
    if name == "ckpt_path=<image checkpoint>":
        args = [*tiny(), f"hydra.run.dir={tmp_path / 'new'}", f"ckpt_path={_image_checkpoint(run)}"]
        return args, "does not fit the model", run
    last = run / "checkpoints" / "last.ckpt"
    return [f"resume={last}"], f"give the run dir (resume={run})", run  # resume=<a .ckpt>


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "resume model mismatch",
        "ckpt_path=last model mismatch",
        "ckpt_path=<image checkpoint>",
        "resume=<a .ckpt file>",
        "run_dir is a file",
    ],
)
def test_one_line_and_exit_2(name, tmp_path):
    args, says, untouched = _case(name, tmp_path)
    before = checksums(untouched) if untouched else None
    module = "cpc_lightning.train"
    if args[0].startswith("--module="):
        module, args = args[0].split("=", 1)[1], args[1:]
    proc = run_train(*args, module=module, env={"CPC_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert says in errors[0]
    if untouched is not None:
        assert checksums(untouched) == before


def test_run_dir_paths_that_are_files_are_named_as_such(tmp_path):
    """In-process halves of the CLI cases above (no subprocess)."""
    from cpc_lightning.runs import check_run_dir_overrides, open_run

    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"x")
    with pytest.raises(UserError, match=rf"give the run dir \(resume={tmp_path / 'run'}\)"):
        check_run_dir_overrides([f"resume={ckpt}"])
    with pytest.raises(UserError, match="does not exist"):
        check_run_dir_overrides([f"resume={tmp_path / 'nowhere'}"])
    with pytest.raises(UserError, match="is a file: give a folder"):
        check_run_dir_overrides([f"hydra.run.dir={ckpt}"])
    check_run_dir_overrides([f"resume={tmp_path / 'run'}", "trainer.max_steps=4"])
    with pytest.raises(UserError, match="is a file, not a run dir"):
        open_run(run_dir=ckpt)
