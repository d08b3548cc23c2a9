"""The train entry point as users run it: a real fit of a few steps, run-dir contents, errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from helpers import make_cfg, run_train, tiny

TINY = tiny(drop=("probe.enabled", "trainer.accelerator"))


def run_cli(args: list[str], tmp_path: Path):
    return run_train(*args, env={"CPC_CACHE_DIR": str(tmp_path / "cache")})


def test_default_pipeline_fits_and_probes(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli([*TINY, "probe.epochs=2", f"hydra.run.dir={run_dir}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Linear probes on frozen features" in proc.stdout
    assert "random init" in proc.stdout and "phones" in proc.stdout
    for name in (
        ".hydra/config.yaml",
        "config_resolved.yaml",
        "checkpoints/last.ckpt",
        "metrics.csv",
    ):
        assert (run_dir / name).is_file(), name
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    keys = set(rows[0])
    for k in (1, 3):
        for stage in ("train", "val"):
            assert {f"{stage}/acc_k{k}", f"{stage}/mi_k{k}", f"{stage}/loss_k{k}"} <= keys
    steps = [int(r["step"]) for r in rows if r.get("train/loss")]
    assert max(steps) == 3


VARIANTS = [
    "context=lstm",
    "context=transformer",
    "negatives=same_sequence",
    "model.prediction_steps=4",
    "logger=tensorboard",
]


@pytest.mark.parametrize("override", VARIANTS)
def test_variants_fit_and_write_their_run_dir(override, tmp_path, monkeypatch):
    """The same ``train()`` the CLI calls, in-process (no interpreter start per variant)."""
    from cpc_lightning.train import train

    cfg = make_cfg([*TINY, override, "probe.enabled=false"], tmp_path)
    result = train(cfg)
    run_dir = tmp_path / "run"
    assert result["global_step"] == 4
    check_run_dir(run_dir, override)
    # Every run records its key choices (sweeps over modes and K are told apart by them).
    setup = json.loads((run_dir / "result.json").read_text())["setup"]
    expected = {
        "context=lstm": ("context", "LSTMContext"),
        "context=transformer": ("context", "TransformerContext"),
        "negatives=same_sequence": ("negatives", "same_sequence"),
        "model.prediction_steps=4": ("prediction_steps", 4),
    }.get(override)
    if expected:
        assert setup[expected[0]] == expected[1], setup
    assert setup["negatives"] and setup["prediction_steps"] and setup["num_negatives"]


def test_last_step_is_logged_and_validated_between_intervals(tmp_path):
    """max_steps between logging and validation intervals: the last step still gets its rows
    in metrics.csv and a val/ metric for a sweeper."""
    from cpc_lightning.train import train

    overrides = tiny(
        "trainer.max_steps=3",
        "trainer.log_every_n_steps=50",
        "trainer.val_check_interval=100",
        drop=("probe.enabled",),
    )
    result = train(make_cfg([*overrides, "probe.enabled=false"], tmp_path))
    assert result["global_step"] == 3
    assert "val/loss" in result["metrics"] and "val/acc_k1" in result["metrics"]
    with open(tmp_path / "run" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows if r.get("train/loss")] == [2]
    assert [int(r["step"]) for r in rows if r.get("val/loss")] == [2]


@pytest.mark.slow
@pytest.mark.parametrize("override", VARIANTS)
def test_variants_from_the_command_line(override, tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli([*TINY, override, "probe.enabled=false", f"hydra.run.dir={run_dir}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_run_dir(run_dir, override)


def check_run_dir(run_dir: Path, override: str) -> None:
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "metrics.csv").is_file()
    if override == "logger=tensorboard":
        assert list((run_dir / "tensorboard").rglob("events.out.tfevents*"))


MISTAKES = [
    ("encoder=nope", "nope"),
    ("model.prediction_steps=0", "model.prediction_steps=0"),
    ("data.window=320", "data.window=320"),
    ("negatives.num_negatives=-1", "negatives.num_negatives=-1"),
]


@pytest.mark.parametrize("override,needle", MISTAKES[2:])
def test_config_mistakes_raise_a_user_error_naming_the_value(override, needle, tmp_path):
    from cpc_lightning.errors import UserError
    from cpc_lightning.train import train

    with pytest.raises(UserError, match=needle.replace(".", r"\.")):
        train(make_cfg([*TINY, override], tmp_path))


@pytest.mark.parametrize(
    "override,needle",
    [MISTAKES[0], MISTAKES[1], pytest.param(*MISTAKES[2], marks=pytest.mark.slow)],
)
def test_config_mistakes_fail_with_one_clear_message(override, needle, tmp_path):
    proc = run_cli([*TINY, override, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode != 0
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr


def test_help_lists_every_config_group():
    from helpers import CONF

    proc = run_train("--help", timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    listed = {
        line.split(":", 1)[0]
        for line in proc.stdout.split("== Config ==")[0].splitlines()
        if ": " in line
    }
    groups = {p.name for p in CONF.iterdir() if p.is_dir()} - {"hydra"}  # Hydra's own
    assert groups <= listed, groups - listed


def test_a_preset_without_its_dataset_folder_says_how_to_fix_it(tmp_path):
    """``data=fsdd`` with no $CPC_DATA_DIR reads ./data/fsdd: missing -> one line naming the
    folder, data.root and CPC_DATA_DIR, exit code 2, nothing written."""
    proc = run_train(
        "data=fsdd",
        f"hydra.run.dir={tmp_path / 'run'}",
        env={"CPC_DATA_DIR": None},
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = [ln for ln in proc.stderr.splitlines() if "error" in ln]
    assert len(err) == 1 and str(tmp_path / "data" / "fsdd") in err[0]
    assert "data.root" in err[0] and "CPC_DATA_DIR" in err[0]
    assert "Traceback" not in proc.stderr
