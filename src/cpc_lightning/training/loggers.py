"""Loggers and callbacks from their config groups (``logger=...``, ``callbacks=...``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig
from pytorch_lightning.loggers import WandbLogger

from cpc_lightning.errors import user_errors
from cpc_lightning.training import wandb as wandb_setup


def in_multirun() -> bool:
    """Whether this process runs a point of a Hydra multirun."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def wandb_group(cfg: DictConfig) -> str:
    """The W&B group of this run: one per multirun (``<task_name>-<sweep dir name>``), else the
    run's own (``<task_name>-<run dir name>``), which its ``evaluate`` runs join."""
    folder = HydraConfig.get().sweep.dir if in_multirun() else cfg.paths.output_dir
    return wandb_setup.run_group(str(cfg.task_name), Path(str(folder)))


def _nodes(node: DictConfig | None) -> list[DictConfig]:
    if not node:
        return []
    return [sub for sub in node.values() if isinstance(sub, DictConfig) and "_target_" in sub]


def build_callbacks(cfg: DictConfig) -> list[Any]:
    """Instantiate every entry of ``cfg.callbacks`` that has a ``_target_``."""
    with user_errors("callbacks"):
        return [instantiate(sub) for sub in _nodes(cfg.get("callbacks"))]


def build_loggers(cfg: DictConfig, out_dir: Path, resuming: bool) -> list[Any]:
    """Instantiate ``cfg.logger``; a W&B logger gets :func:`wandb_setup.logger_kwargs`."""
    out = []
    with user_errors("logger"):
        for sub in _nodes(cfg.get("logger")):
            if issubclass(get_class(str(sub._target_)), WandbLogger):
                group, sweep = wandb_group(cfg), in_multirun()
                kwargs = wandb_setup.logger_kwargs(cfg, sub, out_dir, resuming, group, sweep)
                # partial: `config` (wandb.init's) would clash with instantiate's own argument
                out.append(instantiate(sub, _partial_=True)(**kwargs))
            else:
                out.append(instantiate(sub))
    return out
