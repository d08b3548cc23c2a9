"""Build the model from a composed config: the one place where config becomes parts.

Shared by the ``train``, ``evaluate`` and ``extract`` entry points (none imports another).
"""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from cpc_lightning.errors import check_config, user_errors
from cpc_lightning.model.module import CPCModule


def build_parts(cfg: DictConfig, num_sets: int | None = None) -> dict[str, Any]:
    """Instantiate encoder, context, heads and negative sampler from ``cfg``."""
    check_config(cfg)
    parts: dict[str, Any] = {}
    with user_errors("encoder"):
        parts["encoder"] = instantiate(cfg.encoder)
    with user_errors("context"):
        parts["context"] = instantiate(cfg.context)
    if num_sets is None:
        num_sets = 1 if cfg.model.get("share_heads", True) else len(cfg.model.directions)
    with user_errors("heads"):
        parts["heads"] = instantiate(cfg.heads, num_sets=num_sets)
    with user_errors("negatives"):
        parts["negatives"] = instantiate(cfg.negatives)
    return parts


#: Keys of an audio data config that the streaming DataModule takes (the rest, the layout's, were
#: applied by ``prepare``).
STREAMING_KEYS = (
    "root", "sample_rate", "window", "windows_per_utterance", "short", "batch_size",
    "num_workers", "sampler", "seed", "cache_dir", "augment", "augment_params", "drop_last",
)  # fmt: skip


def build_datamodule(data: DictConfig) -> Any:
    """The DataModule of ``cfg.data``; ``data.streaming=true``: read prepared shards instead."""
    with user_errors("data"):
        if not data.get("streaming", False):
            return instantiate(data)
        from cpc_lightning.data.audio.streaming import StreamingAudioDataModule

        return StreamingAudioDataModule(**{k: data[k] for k in STREAMING_KEYS if k in data})


def build_model(cfg: DictConfig) -> CPCModule:
    """A fresh :class:`CPCModule` from a composed config."""
    parts = build_parts(cfg)
    with user_errors("model"):
        optimizer = instantiate(cfg.model.optimizer) if cfg.model.get("optimizer") else None
        scheduler = instantiate(cfg.model.scheduler) if cfg.model.get("scheduler") else None
        return CPCModule(
            **parts,
            optimizer=optimizer,
            scheduler=scheduler,
            prediction_steps=cfg.model.prediction_steps,
            step_offset=cfg.model.get("step_offset", 0),
            directions=list(cfg.model.get("directions", ["down"])),
            temperature=cfg.model.get("temperature", 1.0),
            compile=bool(cfg.model.get("compile", False)),
        )
