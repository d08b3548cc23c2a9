"""End-of-run probes on another data option (``probe.data``): scores in result.json's metrics,
so a sweep can maximise them; a bad ``probe.data`` fails before training, not after."""

from __future__ import annotations

import json

import pytest
from helpers import make_cfg, tiny

from cpc_lightning.errors import UserError


def test_probe_data_scores_reach_the_result_metrics(shared_data, tmp_path):
    from cpc_lightning.train import train

    root = shared_data / "timit_sample"
    cfg = make_cfg(
        tiny(
            "+data@probe.data=timit_val",
            f"probe.data.root={root}",
            "probe.enabled=true",
            "probe.tasks=[phones]",
            "probe.baselines=none",
            "probe.min_steps=20",
            "probe.epochs=1",
            "trainer.max_steps=2",
        ),
        tmp_path,
    )
    result = train(cfg)
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    acc = saved["metrics"]["probe/phones/cpc"]
    assert acc == result["metrics"]["probe/phones/cpc"] and 0.0 < acc < 1.0
    assert not any(k.startswith("probe/phones/mfcc") for k in saved["metrics"])  # baselines=none
    report = json.loads((tmp_path / "run" / "eval" / "phones.json").read_text())
    assert report["data"]["target"].endswith("TimitDataModule")


def test_a_bad_probe_data_fails_before_training(tmp_path):
    from cpc_lightning.train import train

    cfg = make_cfg(
        tiny(
            "+data@probe.data=timit_val",
            f"probe.data.root={tmp_path / 'nowhere'}",
            "probe.enabled=true",
        ),
        tmp_path,
    )
    with pytest.raises(UserError, match="probe.data"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing trained
