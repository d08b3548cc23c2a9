"""Build the model from a composed config: the one place where config becomes parts.

Shared by the ``train``, ``evaluate`` and ``extract`` entry points (none imports another).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from cpc_lightning.data.audio.settings import loader_keys
from cpc_lightning.data.audio.streaming import StreamingAudioDataModule
from cpc_lightning.errors import UserError, user_errors
from cpc_lightning.model.checks import check_data, check_modality, check_model_config
from cpc_lightning.model.module import CPCModule


def _refuse(check: Callable[..., None], *args: Any) -> None:
    """Run a start-up check of ``model/checks.py``; its ``ValueError`` is a :class:`UserError`
    with the same message."""
    try:
        check(*args)
    except ValueError as exc:
        raise UserError(str(exc)) from exc


def check_data_fits_model(model: CPCModule, datamodule: Any) -> None:
    """Refuse at start-up, as one :class:`UserError`, data the model cannot train on (modality,
    window, grid, heads' ``max_len``, the negatives' speakers and batches:
    :func:`~cpc_lightning.model.checks.check_data`)."""
    _refuse(check_data, model, datamodule)


def check_same_modality(model: CPCModule, datamodule: Any, what: str) -> None:
    """Refuse, as one :class:`UserError`, data of another modality than the trained model
    ``what`` (``extract``, ``evaluate``: the fix is other data, not another encoder)."""
    _refuse(check_modality, model, datamodule, what)


def build_parts(cfg: DictConfig, num_sets: int | None = None) -> dict[str, Any]:
    """Instantiate encoder, context, heads and negative sampler from ``cfg`` (its model values
    checked first, :func:`~cpc_lightning.model.checks.check_model_config`)."""
    _refuse(check_model_config, cfg)
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


def build_datamodule(data: DictConfig) -> Any:
    """The DataModule of ``cfg.data``; ``data.streaming=true``: read prepared shards instead,
    with ``data.root`` and every loader key (the layout's keys were applied by ``prepare``)."""
    with user_errors("data"):
        if not data.get("streaming", False):
            return instantiate(data)
        keys = ("root", *loader_keys())
        return StreamingAudioDataModule(**{k: data[k] for k in keys if k in data})


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
            all_anchors=bool(cfg.model.get("all_anchors", False)),
        )
