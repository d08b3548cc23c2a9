"""Acceptance: ``cpc_lightning.load(run_dir).features`` on a run dir written by
``python -m cpc_lightning.train`` (what ``make train`` runs, with small sizes) gives the tensors
``python -m cpc_lightning.extract layers=all`` writes for the same files."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import run_train, tiny
from helpers.features import assert_api_matches_extract

import cpc_lightning


@pytest.mark.slow  # two subprocesses: train, extract
def test_a_trained_run_dir_gives_what_extract_writes(tmp_path: Path) -> None:
    env = {"CPC_CACHE_DIR": str(tmp_path / "cache")}
    run = tmp_path / "run"
    proc = run_train(*tiny("context.num_layers=2"), f"hydra.run.dir={run}", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "feats"
    proc = run_train(
        f"run_dir={run}", f"out={out}", "layers=all", module="cpc_lightning.extract", env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = cpc_lightning.load(run)
    assert model.source["checkpoint"].endswith("last.ckpt")
    assert_api_matches_extract(model, out, count=5)
