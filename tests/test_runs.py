"""Run dirs: a run written by release 0.1 (``tests/fixtures/run_v0_1``) still rebuilds, gives the
same features and evaluates; refusals name what is wrong."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import TESTS, compose_entry
from omegaconf import OmegaConf

from cpc_lightning.errors import UserError
from cpc_lightning.runs import LEGACY_TARGETS, RESOLVED_CONFIG, open_run, upgrade_config

FIXTURE = TESTS / "fixtures" / "run_v0_1"


@pytest.fixture
def old_run(tmp_path: Path) -> Path:
    run = tmp_path / "run_v0_1"
    shutil.copytree(FIXTURE, run)
    return run


def test_old_config_is_upgraded_to_todays_names() -> None:
    old = OmegaConf.load(FIXTURE / RESOLVED_CONFIG)
    assert old.encoder._target_ == "cpc_lightning.encoders.Conv1dEncoder"
    new = upgrade_config(old)
    targets = [n._target_ for n in (new.encoder, new.context, new.negatives, new.heads)]
    assert targets == [
        "cpc_lightning.model.encoders.audio.Conv1dEncoder",
        "cpc_lightning.model.context.sequence.GRUContext",
        "cpc_lightning.model.negatives.NegativeSampler",
        "cpc_lightning.model.heads.PredictionHeads",
    ]
    assert new.data.test_fraction == 0.34 and "val_fraction" not in new.data
    assert new.data.windows_per_speaker == 2 and "online_probe" not in new.model
    assert "heads" not in new.model and new.heads.num_steps == 2  # model.heads -> heads
    # every legacy target names something that exists today
    from hydra.utils import get_object

    for target in LEGACY_TARGETS.values():
        get_object(target)


def test_old_run_rebuilds_with_the_same_features(old_run: Path) -> None:
    run = open_run(old_run)
    ref = torch.load(old_run / "reference_features.pt")
    g = torch.Generator().manual_seed(ref["seed"])
    x = ref["scale"] * torch.randn(*ref["shape"], generator=g)
    # float32 rounding only: the waveform layer is now one im2col GEMM (another summation order)
    with torch.no_grad():
        torch.testing.assert_close(run.model.features(x, "z"), ref["z"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(run.model.features(x), ref["c"], rtol=1e-5, atol=1e-5)
    assert run.global_step == 2 and run.checkpoint.name == "last.ckpt"


def test_old_run_dir_evaluates(old_run: Path, tmp_path: Path) -> None:
    from cpc_lightning.evaluate import evaluate

    cfg = compose_entry(
        "evaluate",
        [
            f"run_dir={old_run}",
            "task=speakers",
            f"+data.cache_dir={tmp_path / 'cache'}",
            "probe.epochs=2",
            "probe.min_steps=20",
        ],
    )
    report = evaluate(cfg)
    saved = json.loads((old_run / "eval" / "speakers.json").read_text())
    assert saved["global_step"] == 2 and set(saved["sources"]) == {"cpc", "random_init", "mfcc"}
    assert report["sources"]["cpc"]["dim"] == 8 and report["sources"]["cpc"]["counts"]["test_rows"]


def test_checkpoint_of_another_architecture_is_refused_in_one_line(
    old_run: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other.ckpt"
    state = torch.load(old_run / "checkpoints" / "last.ckpt", weights_only=False)
    state["state_dict"] = {
        k: torch.zeros(3, 3) if k.startswith("encoder.") else v
        for k, v in state["state_dict"].items()
    }
    torch.save(state, other)
    with pytest.raises(UserError, match=r"other\.ckpt does not fit the model") as err:
        open_run(old_run, other)
    assert "\n" not in str(err.value)


def test_a_folder_that_is_no_run_dir_is_named(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is not a training run dir"):
        open_run(tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        open_run(tmp_path / "missing")
    with pytest.raises(UserError, match="run_dir=<training run dir> or checkpoint"):
        open_run()
