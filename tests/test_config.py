"""Every option of every config group composes, and its parts instantiate and work."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import CONF, SHARED_DATA, make_cfg, make_image_tree
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from cpc_lightning.build import build_model
from cpc_lightning.data import LABELS, DataModule
from cpc_lightning.data.audio.frames import LABEL_HOP
from cpc_lightning.training.environment import choose_precision


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def data_overrides(option: str, tmp_path: Path) -> list[str]:
    """What a user must add for data options that read a dataset from disk (plus small sizes)."""
    if option == "synthetic_speech":
        return [
            "data.synthetic.num_speakers=2",
            "data.synthetic.utterances_per_speaker=6",
            "data.synthetic.max_seconds=2.0",
        ]
    if option == "librispeech":
        return [f"data.root={SHARED_DATA / 'librispeech_sample'}"]
    if option == "audio_folder":
        return [
            f"data.root={SHARED_DATA / 'fsdd'}",
            r"data.pattern='(?P<label>\d)_(?P<speaker>[a-z]+)_\d+\.wav'",
        ]
    if option in (
        "fsdd",
        "speech_commands",
        "cifar10_patches",
        "timit",
        "timit_val",
        "speechocean762",
        "speech_mix",
    ):
        return [f"data_dir={SHARED_DATA}"]
    if option == "cifar10_val":  # its own root holds all 50,000 images: the subset is enough here
        return [f"data_dir={SHARED_DATA}", f"data.root={SHARED_DATA / 'cifar10_subset'}"]
    if option == "imagenet_patches":
        return [
            f"data.root={make_image_tree(tmp_path / 'imnet', per_class=2)}",
            "data.image_size=64",
            "data.patch_size=16",
            "data.stride=8",
            "data.batch_size=4",
        ]
    raise AssertionError(f"no overrides known for data={option}: add them to data_overrides")


GROUPS = ["encoder", "context", "negatives", "model", "heads"]


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_model_groups_build(group, option, tmp_path):
    cfg = make_cfg([f"{group}={option}"], tmp_path)
    model = build_model(cfg)
    assert model.heads.num_steps == cfg.model.prediction_steps


@pytest.mark.parametrize("option", options("data"))
def test_data_options_set_up_and_batch_as_the_contract_says(option, tmp_path):
    if option != "synthetic_speech" and not SHARED_DATA.is_dir():
        pytest.skip(f"shared example datasets absent: {SHARED_DATA}")
    cfg = make_cfg([f"data={option}", *data_overrides(option, tmp_path)], tmp_path)
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    assert isinstance(dm, DataModule)
    assert dm.modality in ("audio", "image") and dm.root.is_dir()
    assert dm.labels and set(dm.labels) <= set(LABELS)
    batch = next(iter(dm.train_dataloader()))
    b = batch["x"].shape[0]
    assert b == dm.batch_size and batch["label"].shape == (b,)
    if dm.modality == "audio":
        assert batch["x"].shape == (b, 1, dm.window)
        assert batch["phones"].shape == (b, dm.window // LABEL_HOP)
        assert dm.items("train") and dm.items("test")
    else:
        g = dm.grid_size
        assert batch["x"].shape[:4] == (b, g, g, 3) and dm.labels == ["classes"]
    # an image option brings image model defaults, an audio option keeps the audio ones
    model = build_model(cfg)
    assert model.modality == dm.modality


@pytest.mark.parametrize("option", ["imagenet_patches", "cifar10_patches"])
def test_image_data_brings_image_model_defaults_unless_overridden(option, tmp_path):
    cfg = make_cfg([f"data={option}", "data.root=/x"], tmp_path)
    assert cfg.encoder._target_.endswith("PatchResNet")
    assert cfg.context._target_.endswith("MaskedConvContext")
    assert (cfg.model.prediction_steps, cfg.model.step_offset) == (5, 0)
    chosen = make_cfg(
        [f"data={option}", "data.root=/x", "context=gru", "model.step_offset=1"], tmp_path
    )
    assert chosen.context._target_.endswith("GRUContext") and chosen.model.step_offset == 1
    assert chosen.model.prediction_steps == 5
    audio = make_cfg([], tmp_path)
    assert audio.encoder._target_.endswith("Conv1dEncoder") and audio.model.prediction_steps == 12


@pytest.mark.parametrize("option", options("trainer"))
def test_trainer_presets_instantiate(option, tmp_path):
    cfg = make_cfg([f"trainer={option}"], tmp_path)
    with open_dict(cfg):
        if cfg.trainer.accelerator == "gpu":  # no GPU in CI: the preset must still compose
            cfg.trainer.accelerator, cfg.trainer.devices = "cpu", 1
            cfg.trainer.precision = "32-true"
    precision = choose_precision(cfg.trainer.precision, cfg.trainer.accelerator)  # as train does
    trainer = instantiate(cfg.trainer, logger=False, precision=precision)
    assert trainer.max_steps == cfg.trainer.max_steps


@pytest.mark.parametrize("option", options("logger"))
def test_loggers_instantiate(option, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = make_cfg([f"logger={option}"], tmp_path)
    loggers = [instantiate(v) for v in cfg.logger.values()]
    assert loggers and all(hasattr(lg, "log_metrics") for lg in loggers)


@pytest.mark.parametrize("option", options("callbacks"))
def test_callbacks_instantiate(option, tmp_path):
    import pytorch_lightning as pl

    cfg = make_cfg([f"callbacks={option}"], tmp_path)
    made = [instantiate(node) for node in (cfg.callbacks or {}).values()]
    assert all(isinstance(cb, pl.Callback) for cb in made)
    assert len(made) == {"none": 0, "default": 4, "online_probe": 5}[option]


@pytest.mark.parametrize("option", options("probe"))
def test_probe_options_give_settings(option, tmp_path):
    from omegaconf import OmegaConf

    from cpc_lightning.eval.settings import EvalSettings

    cfg = make_cfg([f"probe={option}"], tmp_path)
    settings = EvalSettings.from_mapping(OmegaConf.to_container(cfg.probe))
    assert settings.linear == (option == "linear") and settings.min_steps >= 1


@pytest.mark.parametrize("option", options("debug"))
def test_debug_overlays_compose(option, tmp_path):
    cfg = make_cfg([f"debug={option}"], tmp_path)
    assert cfg.probe.enabled is False and cfg.trainer.max_steps <= 200


#: search option -> (overrides it is used with, the swept keys, the metric it maximises)
SEARCHES = {
    "optuna": (
        [],
        {"model.optimizer.lr", "model.prediction_steps", "negatives.num_negatives"},
        "val/online_probe_acc",
    ),
    "cpc_audio_cpu": (
        ["experiment=cpc_audio_cpu"],
        {
            "model.optimizer.lr",
            "data.sampler",
            "data.augment_params.pitch.p",
            "data.augment_params.reverb.p",
        },
        "probe/phones/cpc",
    ),
    "cpc_images_cpu_tpe": (
        ["experiment=cpc_images_cpu"],
        {
            "model.optimizer.lr",
            "encoder.out_dim",
            "data.augment",
            "model.prediction_steps",
            "negatives.num_negatives",
            "probe.feature",
        },
        "probe/classes/cpc",
    ),
    "cpc_images_cpu": (
        ["experiment=cpc_images_cpu"],
        {"encoder.out_dim", "data.augment"},
        "probe/classes/cpc",
    ),
}


@pytest.mark.parametrize("option", options("hparams_search"))
def test_hparams_search_overlays_compose_with_their_sweeper(option):
    from helpers import compose_entry

    extra, swept, metric = SEARCHES[option]
    cfg = compose_entry("train", [*extra, f"hparams_search={option}"], hydra=True)
    assert "optuna" in cfg.hydra.sweeper._target_.lower()
    assert set(cfg.hydra.sweeper.params) == swept
    for key in swept:  # every swept key exists in the config it sweeps
        assert OmegaConf.select(cfg, key, default="missing") != "missing", key
    assert cfg.optimized_metric == metric
    if metric == "val/online_probe_acc":
        assert "online_probe" in cfg.callbacks
    elif cfg.data.get("holdout_fraction"):  # images: a validation split of the training images
        assert cfg.probe.enabled and cfg.probe.data is None and 0 < cfg.data.holdout_fraction < 1
    else:  # an end-of-run probe score: on data that is not the training data's test split
        assert cfg.probe.enabled and cfg.probe.data._target_.endswith("TimitDataModule")


@pytest.mark.parametrize("option", options("experiment"))
def test_experiments_build(option, tmp_path):
    cfg = make_cfg([f"experiment={option}", "data.root=/nonexistent"], tmp_path)
    model = build_model(cfg)
    assert model.heads.num_steps == cfg.model.prediction_steps
    x = torch.zeros(1, 1, 20480) if model.modality == "audio" else None
    if x is not None:
        assert model.features(x).shape[1] == 128  # the paper's 128 frames per window


DOCUMENTED = [
    "train.yaml",
    "evaluate.yaml",
    "extract.yaml",
    "convert.yaml",
    "export.yaml",
    "prepare.yaml",
    "quantize.yaml",
    "hparams_search/optuna.yaml",
    "trainer/cpu.yaml",
    "data/base/audio.yaml",
    "data/librispeech.yaml",
    "data/audio_folder.yaml",
    "data/synthetic_speech.yaml",
    "data/imagenet_patches.yaml",
    "data/cifar10_patches.yaml",
    "data/base/image.yaml",
    "negatives/batch.yaml",
    "probe/linear.yaml",
    "paths/default.yaml",
    *[
        f"{g}/{o}.yaml"
        for g in ("encoder", "context", "model", "heads", "callbacks")
        for o in options(g)
    ],
]
SELF_EXPLANATORY = ("_target_", "_partial_", "_self_", "defaults")


def undocumented_keys(text: str) -> list[str]:
    """Keys with no comment on their line, nor above their run of same-indent sibling keys
    (values that are interpolations name their source and need none)."""
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "- ")) or ":" not in stripped:
            continue
        key, value = (part.strip() for part in stripped.split(":", 1))
        if key in SELF_EXPLANATORY or "#" in line or value.startswith("${"):
            continue
        indent = len(line) - len(line.lstrip())
        j = i - 1
        while j >= 0:
            prev = lines[j]
            if prev.lstrip().startswith("#"):
                break
            same = prev.strip() and len(prev) - len(prev.lstrip()) == indent and ":" in prev
            if not same:
                break
            j -= 1
        parent_line = (
            j >= 0 and lines[j].strip().endswith(":") and not lines[j].lstrip().startswith("#")
        )
        if j < 0 or not (lines[j].lstrip().startswith("#") or parent_line):
            out.append(key)
    return out


@pytest.mark.parametrize("name", DOCUMENTED)
def test_every_config_key_is_documented(name):
    """Every key has a one-line comment where it is defined (or is under a commented block)."""
    assert undocumented_keys((CONF / name).read_text()) == []
