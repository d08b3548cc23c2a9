"""Trainer presets and launchers: ``trainer=ddp_sim`` via the CLI, ``launcher=slurm|local``."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from helpers import CONF, run_train, tiny
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

TINY = tiny(
    "model.prediction_steps=2",
    drop=(
        "model.prediction_steps",
        "trainer.accelerator",
    ),
)


def compose_train(*overrides: str):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def test_slurm_launcher_resolves_resources_from_trainer():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = compose_train(
        "launcher=slurm", "trainer=ddp", "trainer.num_nodes=2", "hydra.launcher.partition=gpu"
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.nodes == 2
    assert launcher.gpus_per_node == launcher.tasks_per_node == cfg.trainer.devices == 8
    assert launcher.partition == "gpu"
    assert launcher.max_num_timeout > 0
    assert cfg.auto_resume is True
    plugin = cfg.trainer.plugins[0]
    assert plugin._target_.endswith("SLURMEnvironment") and plugin.auto_requeue is False
    # default: one node; gpus follow trainer.devices
    single = compose_train("launcher=slurm", "trainer=gpu")
    assert single.hydra.launcher.nodes == 1 and single.hydra.launcher.gpus_per_node == 1


def test_launcher_default_is_hydra_basic():
    cfg = compose_train()
    assert "BasicLauncher" in cfg.hydra.launcher._target_
    assert cfg.auto_resume is False and OmegaConf.is_missing(cfg, "resume")


@pytest.mark.slow
def test_slurm_cfg_hydra_cli_shows_settings():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    # `--cfg hydra` shows the launcher node as written (interpolations unresolved) ...
    proc = run_train("launcher=slurm", "trainer=ddp", "--cfg", "hydra")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SlurmLauncher" in proc.stdout and "gpus_per_node: ${trainer.devices}" in proc.stdout
    # ... and `--cfg all --resolve --package hydra.launcher` the values SLURM gets
    args = ["--cfg", "all", "--resolve", "--package", "hydra.launcher"]
    proc = run_train("launcher=slurm", "trainer=ddp", "trainer.num_nodes=4", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shown = OmegaConf.create(proc.stdout.split("\n", 1)[1])  # first line: "# @package ..."
    assert shown.gpus_per_node == shown.tasks_per_node == 8
    assert shown.nodes == 4 and shown.max_num_timeout == 20


@pytest.mark.slow
def test_ddp_sim_global_negatives_ranks_end_identical(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_train(
        *TINY,
        "trainer=ddp_sim",
        "negatives=global",
        f"hydra.run.dir={run_dir}",
        "+callbacks.rank_dump._target_=helpers.callbacks.RankStateDump",
        f"+callbacks.rank_dump.dirpath={tmp_path / 'ranks'}",
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0 = torch.load(tmp_path / "ranks" / "rank0.pt")
    r1 = torch.load(tmp_path / "ranks" / "rank1.pt")
    assert r0.keys() == r1.keys() and len(r0) > 0
    for name in r0:
        assert torch.equal(r0[name], r1[name]), name
    assert json.loads((run_dir / "result.json").read_text())["global_step"] == 4
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 4
    # the checkpoint holds the trained (rank 0 == rank 1) weights
    for name in r0:
        assert torch.equal(ckpt["state_dict"][name], r0[name]), name


@pytest.mark.slow
def test_local_submitit_launcher_runs_a_sweep(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    proc = run_train(
        "-m",
        "launcher=local",
        *TINY,
        "trainer.accelerator=cpu",
        "model.prediction_steps=2,3",
        f"hydra.sweep.dir={sweep}",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (sweep / ".submitit").is_dir()
    for job in ("0", "1"):
        result = json.loads((sweep / job / "result.json").read_text())
        assert result["global_step"] == 4
        assert result["environment"]["torch_threads"] == 1  # the points share the cores
    with open(sweep / "summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["model.prediction_steps"] for r in rows] == ["2", "3"]
    assert all(r["status"] == "ok" for r in rows)
