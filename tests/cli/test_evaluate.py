"""``cpc_lightning.evaluate``: the report of a tiny trained run, and the CLI's refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import compose_entry, make_run, run_train


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("evalrun"))


def test_report_has_every_field(tiny_run: Path) -> None:
    from cpc_lightning.evaluate import evaluate

    cfg = compose_entry(
        "evaluate",
        [
            f"run_dir={tiny_run}",
            "task=speakers",
            "probe.epochs=3",
            "probe.min_steps=20",
            "probe.seeds=[0,1]",
        ],
    )
    report = evaluate(cfg)
    saved = json.loads((tiny_run / "eval" / "speakers.json").read_text())
    assert saved["task"] == "speakers" == report["task"]
    for key in (
        "run_dir",
        "checkpoint",
        "feature",
        "layer",
        "pool",
        "class_names",
        "probe",
        "sources",
        "table",
        "data",
        "random_init_seed",
        "wall_seconds",
    ):
        assert key in saved, key
    assert saved["probe"]["linear"] is True and saved["probe"]["seeds"] == [0, 1]
    assert set(saved["sources"]) == {"cpc", "random_init", "mfcc"}
    for src in saved["sources"].values():
        for key in (
            "accuracy",
            "accuracy_std",
            "accuracies",
            "seeds",
            "train_accuracy",
            "chance_majority",
            "per_class_accuracy",
            "confusion",
            "counts",
            "dim",
            "extract",
        ):
            assert key in src, key
        k = src["num_classes"]
        assert len(src["per_class_accuracy"]) == k and len(src["confusion"]) == k
        assert sum(map(sum, src["confusion"])) == src["counts"]["test_rows"] > 0
        assert len(src["accuracies"]) == 2
    assert saved["sources"]["mfcc"]["dim"] == 78  # 39 MFCC features, mean + std
    caches = sorted(p.name for p in (tiny_run / "eval" / "cache").iterdir())
    assert len(caches) == 3 and all(c.startswith("speakers_") for c in caches)
    # a second run reuses the cached features
    again = evaluate(cfg)
    assert all(s["extract"]["cached"] for s in again["sources"].values())
    assert again["sources"]["cpc"]["accuracies"] == report["sources"]["cpc"]["accuracies"]


def test_phones_task_runs_with_z_and_mlp(tiny_run: Path, tmp_path: Path) -> None:
    from cpc_lightning.evaluate import evaluate

    cfg = compose_entry(
        "evaluate",
        [
            f"run_dir={tiny_run}",
            "task=phones",
            "feature=z",
            "probe.hidden=8",
            "probe.epochs=2",
            "probe.min_steps=20",
            "baseline=random_init",
            f"out_dir={tmp_path}",
        ],
    )
    report = evaluate(cfg)
    assert set(report["sources"]) == {"cpc", "random_init"}
    assert "NOT linear" in report["probe"]["kind"] and report["probe"]["linear"] is False
    assert report["sources"]["cpc"]["dim"] == 16


@pytest.mark.slow  # a subprocess (imports torch + Lightning): ~10-60 s on 2 busy cores
def test_cli_refuses_a_dir_without_config_or_checkpoint(tmp_path: Path) -> None:
    empty = tmp_path / "not_a_run"
    empty.mkdir()
    res = run_train(
        f"run_dir={empty}", "task=speakers", module="cpc_lightning.evaluate", timeout=120
    )
    assert res.returncode != 0
    assert "Traceback" not in res.stderr + res.stdout
    assert "not a training run dir" in res.stderr
    no_ckpt = make_run(tmp_path / "r")
    (no_ckpt / "checkpoints" / "last.ckpt").unlink()
    from cpc_lightning.errors import UserError
    from cpc_lightning.evaluate import evaluate

    with pytest.raises(UserError, match="no checkpoint"):
        evaluate(compose_entry("evaluate", [f"run_dir={no_ckpt}"]))
