"""Shared test helpers: tiny configurations, generated data, and the CLI as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "src" / "cpc_lightning" / "conf"
TESTS = REPO / "tests"
#: The shared example datasets (``../shared/data`` from the repo root); tests skip without them.
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()
#: The shared test fixtures (``../shared/fixtures``), e.g. CPC_audio checkpoints.
SHARED_FIXTURES = (REPO / ".." / "shared" / "fixtures").resolve()

#: A few-second CPU run of the default pipeline (3 speakers, 16 channels, 4 steps).
BASE = {
    "data.synthetic.num_speakers": "3",
    "data.synthetic.utterances_per_speaker": "4",
    "data.synthetic.min_seconds": "1.0",
    "data.synthetic.max_seconds": "1.5",
    "data.window": "3200",
    "data.batch_size": "4",
    "encoder.hidden_dim": "16",
    "context.out_dim": "16",
    "model.prediction_steps": "3",
    "negatives.num_negatives": "8",
    "trainer.accelerator": "cpu",
    "trainer.max_steps": "4",
    "trainer.val_check_interval": "2",
    "trainer.limit_val_batches": "1",
    "trainer.log_every_n_steps": "1",
    "trainer.enable_progress_bar": "false",
    "callbacks.model_checkpoint.every_n_train_steps": "2",
    "probe.enabled": "false",
}


def tiny(*overrides: str, drop: tuple[str, ...] = ()) -> list[str]:
    """``BASE`` as Hydra overrides, with ``key=value`` items replacing or extending it and the
    keys in ``drop`` left out (for keys a test sets or sweeps itself)."""
    merged = {k: v for k, v in BASE.items() if k not in drop}
    for item in overrides:
        key, value = item.split("=", 1)
        merged[key] = value
    return [f"{k}={v}" for k, v in merged.items()]


def cli_env(**extra: str | None) -> dict[str, str]:
    """The environment of a CLI subprocess: this checkout's package and test helpers, no GPU,
    and the shared example datasets as ``$CPC_DATA_DIR`` (what the data presets read).
    ``extra`` entries override; ``None`` removes a variable."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(TESTS)]),
        "CUDA_VISIBLE_DEVICES": "",
        "CPC_DATA_DIR": str(SHARED_DATA),
        **extra,
    }
    return {k: v for k, v in env.items() if v is not None}


def run_train(
    *args: str,
    timeout: int = 600,
    module: str = "cpc_lightning.train",
    env: dict[str, str | None] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess:
    """``python -m cpc_lightning.train ARGS`` from the repo root, output captured."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd or REPO,
        env=cli_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def compose_entry(name: str, overrides: list[str], hydra: bool = False) -> DictConfig:
    """Compose an entry config (``train`` / ``evaluate`` / ``extract``) without running Hydra."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=name, overrides=overrides, return_hydra_config=hydra)


def make_cfg(overrides: list[str], tmp_path: Path) -> DictConfig:
    """A composed ``train`` config whose paths point into ``tmp_path`` (for in-process runs)."""
    cfg = compose_entry("train", overrides, hydra=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.paths.cache_dir = str(tmp_path / "cache")
        del cfg.hydra
    return cfg


#: A tiny model on a tiny synthetic corpus, for run dirs written without training.
TINY_RUN = [
    "encoder.hidden_dim=16",
    "context.out_dim=16",
    "model.prediction_steps=2",
    "negatives.num_negatives=4",
    "data.window=3200",
    "data.synthetic.num_speakers=3",
    "data.synthetic.utterances_per_speaker=4",
    "data.synthetic.min_seconds=0.6",
    "data.synthetic.max_seconds=1.0",
    "data.synthetic.num_phones=5",
    "data.test_fraction=0.34",
]


def make_run(root: Path, extra: list[str] | None = None, base: list[str] | None = None) -> Path:
    """A run dir as ``train`` writes it (resolved config + checkpoint), untrained tiny weights;
    ``base`` replaces the tiny audio overrides (``TINY_RUN``), e.g. for an image model."""
    from cpc_lightning.build import build_model
    from cpc_lightning.runs import RESOLVED_CONFIG

    run = root / "run"
    cfg = compose_entry("train", (TINY_RUN if base is None else base) + (extra or []))
    cfg.paths.output_dir = str(run)
    cfg.paths.cache_dir = str(root / "cache")
    (run / "checkpoints").mkdir(parents=True)
    (run / RESOLVED_CONFIG).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    torch.manual_seed(0)
    model = build_model(OmegaConf.load(run / RESOLVED_CONFIG))
    torch.save({"state_dict": model.state_dict()}, run / "checkpoints" / "last.ckpt")
    return run


def write_tone(path: Path, seconds: float, sr: int = 16000, channels: int = 1, seed: int = 0):
    """A short noisy tone as 16-bit audio (format from the suffix)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    x = 0.3 * np.sin(2 * np.pi * (150 + 50 * seed) * t) + 0.05 * rng.standard_normal(n)
    data = np.stack([x * (c + 1) / channels for c in range(channels)], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data.astype(np.float32), sr, subtype="PCM_16")
    return n


def make_image_tree(
    root: Path, per_class: int = 4, size: int = 80, classes: tuple[str, ...] = ("cat", "dog", "fox")
) -> Path:
    """ImageNet layout: {train,val}/<class>/*.JPEG with random pixels."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", 2)):
        for name in classes:
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / split / name / f"{i}.JPEG")
    return root
