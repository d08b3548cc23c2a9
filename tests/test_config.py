"""Every option of every config group composes, and its parts instantiate."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from cpc_lightning.builder import build_model

CONF = Path(__file__).resolve().parents[1] / "src" / "cpc_lightning" / "conf"
SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def make_cfg(overrides: list[str], tmp_path: Path) -> DictConfig:
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.paths.cache_dir = str(tmp_path / "cache")
        cfg.paths.root_dir = str(tmp_path)
        del cfg.hydra
    return cfg


def image_tree(root: Path) -> Path:
    from PIL import Image

    for split in ("train", "val"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (80, 80), (10, 200, 30)).save(root / split / cls / "x.png")
    return root


def data_overrides(option: str, tmp_path: Path) -> list[str]:
    """What a user must add for data options that read a dataset from disk."""
    if option == "librispeech":
        return [f"data.root={SHARED / 'librispeech_sample'}"]
    if option == "audio_folder":
        return [
            f"data.root={SHARED / 'fsdd'}",
            r"data.pattern='(?P<label>\d)_(?P<speaker>[a-z]+)_\d+\.wav'",
        ]
    if option in ("fsdd", "speech_commands", "cifar10_patches"):
        return [f"data_dir={SHARED}"]
    if option == "imagenet_patches":
        return [
            f"data.root={image_tree(tmp_path / 'imnet')}",
            "data.image_size=64",
            "data.patch_size=16",
            "data.stride=8",
        ]
    return []


GROUPS = ["encoder", "context", "negatives", "model"]


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_model_groups_build(group, option, tmp_path):
    cfg = make_cfg([f"{group}={option}"], tmp_path)
    model = build_model(cfg)
    assert model.heads.num_steps == cfg.model.prediction_steps


@pytest.mark.parametrize("option", options("data"))
def test_data_options_instantiate(option, tmp_path):
    if option != "synthetic_speech" and not SHARED.is_dir():
        pytest.skip(f"shared example datasets absent: {SHARED}")
    cfg = make_cfg([f"data={option}", *data_overrides(option, tmp_path)], tmp_path)
    dm = instantiate(cfg.data)
    assert dm.batch_size >= 1


@pytest.mark.parametrize("option", options("trainer"))
def test_trainer_presets_instantiate(option, tmp_path):
    cfg = make_cfg([f"trainer={option}"], tmp_path)
    with open_dict(cfg):
        if cfg.trainer.accelerator == "gpu":  # no GPU in CI: the preset must still compose
            cfg.trainer.accelerator, cfg.trainer.devices = "cpu", 1
            cfg.trainer.precision = "32-true"
    trainer = instantiate(cfg.trainer, logger=False)
    assert trainer.max_steps == cfg.trainer.max_steps


@pytest.mark.parametrize("option", options("logger"))
def test_loggers_instantiate(option, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = make_cfg([f"logger={option}"], tmp_path)
    loggers = [instantiate(v) for v in cfg.logger.values()]
    assert loggers


@pytest.mark.parametrize("option", options("callbacks"))
def test_callbacks_instantiate(option, tmp_path):
    cfg = make_cfg([f"callbacks={option}"], tmp_path)
    for node in (cfg.callbacks or {}).values():
        instantiate(node)


@pytest.mark.parametrize("option", options("debug"))
def test_debug_overlays_compose(option, tmp_path):
    cfg = make_cfg([f"debug={option}"], tmp_path)
    assert cfg.probe.enabled is False


@pytest.mark.parametrize("option", options("experiment"))
def test_experiments_build(option, tmp_path):
    cfg = make_cfg([f"experiment={option}", "data.root=/nonexistent"], tmp_path)
    model = build_model(cfg)
    assert model.heads.num_steps == cfg.model.prediction_steps
