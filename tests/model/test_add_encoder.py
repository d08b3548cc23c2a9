"""docs/design.md, "How to add an encoder", followed to the letter: a toy encoder registered from
a config folder outside the package composes, trains 2 steps and evaluates."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import run_train, tiny


def test_a_new_encoder_from_a_config_folder_trains_and_evaluates(tmp_path: Path) -> None:
    conf = tmp_path / "my_conf" / "encoder"
    conf.mkdir(parents=True)
    (conf / "toy.yaml").write_text(
        "# A toy encoder: one strided conv, 160 samples per frame.\n"
        "_target_: helpers.toy_encoder.ToyEncoder\n"
        "# Size of z.\n"
        "out_dim: 12\n"
    )
    run_dir = tmp_path / "run"
    env = {"CPC_CACHE_DIR": str(tmp_path / "cache")}
    trained = run_train(
        f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]",
        "encoder=toy",
        *tiny("trainer.max_steps=2", drop=("encoder.hidden_dim",)),
        f"hydra.run.dir={run_dir}",
        env=env,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["setup"]["encoder"] == "ToyEncoder" and result["global_step"] == 2
    out = tmp_path / "eval"
    evaluated = run_train(
        f"run_dir={run_dir}",
        "task=speakers",
        "probe.epochs=2",
        "probe.min_steps=10",
        f"out_dir={out}",
        module="cpc_lightning.evaluate",
        env=env,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    report = json.loads((out / "speakers.json").read_text())
    assert report["sources"]["cpc"]["dim"] == 16  # the context's output (context.out_dim=16)
    assert set(report["sources"]) == {"cpc", "random_init", "mfcc"}
