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
