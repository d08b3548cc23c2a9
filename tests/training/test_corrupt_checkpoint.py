"""A damaged checkpoint on resume (or evaluation): one message naming the file, what is wrong,
and the newest intact checkpoint beside it with the override that uses it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import make_cfg, run_train, tiny

from cpc_lightning.errors import UserError
from cpc_lightning.runs import open_run, resolve_ckpt_path

TINY = tiny("trainer.max_steps=4")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-step run with step0000002.ckpt, step0000004.ckpt and last.ckpt."""
    from cpc_lightning.train import train

    root = tmp_path_factory.mktemp("trained")
    train(make_cfg(TINY, root))
    return root / "run"


@pytest.fixture
def run_dir(trained: Path, tmp_path: Path) -> Path:
    """A copy whose last.ckpt the test may damage (its cache dir stays the original's)."""
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


DAMAGE = {
    "truncated": (lambda b: b[: len(b) // 3], "is truncated or damaged"),
    "garbage": (lambda b: b"garbage\n", "is not a checkpoint"),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_resume_from_a_damaged_last_ckpt_names_the_newest_intact_one(kind, run_dir, tmp_path):
    cut, what = DAMAGE[kind]
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(cut(last.read_bytes()))
    (run_dir / "checkpoints" / "step0000002.ckpt").touch()  # newer mtime, but older step
    newest = run_dir / "checkpoints" / "step0000004.ckpt"
    newest.touch()
    cfg = make_cfg([*TINY, "ckpt_path=last"], tmp_path)
    with pytest.raises(UserError) as err:
        resolve_ckpt_path(cfg, run_dir)
    msg = str(err.value)
    assert "\n" not in msg and f"ckpt_path={last}" in msg and what in msg
    assert f"{newest.name} (step 4)" in msg and f"use ckpt_path={newest}" in msg
    assert "weights_only" not in msg


def test_a_weights_only_file_cannot_resume(run_dir, tmp_path):
    import torch

    last = run_dir / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=False)
    torch.save({"state_dict": state["state_dict"]}, last)
    cfg = make_cfg([*TINY, "ckpt_path=last"], tmp_path)
    with pytest.raises(UserError, match="not a full training checkpoint .no optimizer_states"):
        resolve_ckpt_path(cfg, run_dir)


def test_no_intact_checkpoint_left_says_so(run_dir, tmp_path):
    for ckpt in (run_dir / "checkpoints").glob("*.ckpt"):
        ckpt.write_bytes(b"")
    cfg = make_cfg([*TINY, "ckpt_path=last"], tmp_path)
    with pytest.raises(UserError, match="no other intact checkpoint is in .*start a new run"):
        resolve_ckpt_path(cfg, run_dir)


def test_evaluate_on_a_damaged_checkpoint_names_the_intact_one(run_dir):
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    (run_dir / "checkpoints" / "step0000004.ckpt").touch()
    with pytest.raises(UserError) as err:
        open_run(run_dir)
    msg = str(err.value)
    assert f"checkpoint={last}" in msg and "is truncated or damaged" in msg
    assert f"use checkpoint={run_dir / 'checkpoints' / 'step0000004.ckpt'}" in msg


@pytest.mark.slow  # the message itself: the in-process tests above
def test_cli_resume_on_a_truncated_checkpoint_is_one_line(run_dir, tmp_path):
    """Finding 6: a 46-line traceback (and torch's weights_only advice for garbage)."""
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:3000])
    proc = run_train(
        *TINY,
        "trainer.max_steps=6",
        "ckpt_path=last",
        f"hydra.run.dir={run_dir}",
        env={"CPC_CACHE_DIR": str(tmp_path / "cache")},
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    assert "step0000004.ckpt (step 4)" in errors[0] and "ckpt_path=" in errors[0]
