"""Start-up checks of the training settings: trainer values and the optimizer, before training.

Each would otherwise fail (or misbehave) only once training runs; here it is one
:class:`~cpc_lightning.errors.UserError` naming key, value and fix. The model's values and its
fit to the data are checked by ``model/checks.py`` (through ``build``).
"""

from __future__ import annotations

from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from cpc_lightning.errors import UserError, check_required, user_errors


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


#: trainer keys that must be integers: key -> (smallest value, what to write instead)
_TRAINER_INTS = {
    "max_steps": (-1, "trainer.max_steps=400 (-1: no step limit)"),
    "max_epochs": (-1, "trainer.max_epochs=10 (-1: no epoch limit)"),
    "log_every_n_steps": (1, "trainer.log_every_n_steps=10"),
    "accumulate_grad_batches": (1, "trainer.accumulate_grad_batches=1"),
    "num_sanity_val_steps": (-1, "trainer.num_sanity_val_steps=0"),
    "num_nodes": (1, "trainer.num_nodes=1"),
}
#: trainer keys that take a fraction in [0, 1] or a count of batches (or null)
_TRAINER_AMOUNTS = ("limit_train_batches", "limit_val_batches", "overfit_batches")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_trainer(trainer: DictConfig) -> None:
    for key, (low, example) in _TRAINER_INTS.items():
        value = trainer.get(key)
        if value is None and key == "max_epochs":
            continue
        if key in trainer and not (_is_int(value) and value >= low):
            raise UserError(f"trainer.{key}={value!r} must be an integer >= {low}, e.g. {example}")
    for key in _TRAINER_AMOUNTS:
        value = trainer.get(key)
        ok = (
            value is None
            or (_is_int(value) and value >= 0)
            or (_is_number(value) and 0 <= value <= 1)
        )
        if not ok:
            raise UserError(
                f"trainer.{key}={value!r} must be a fraction in [0, 1], a number of batches or "
                f"null (all), e.g. trainer.{key}=1.0"
            )
    interval = trainer.get("val_check_interval")
    counts = _is_int(interval) and interval >= 1
    fraction = _is_number(interval) and not _is_int(interval) and 0 < interval <= 1
    timed = isinstance(interval, (str, DictConfig, dict))  # wall-clock ("00:00:30:00", {...})
    if not (interval is None or counts or fraction or timed):
        raise UserError(
            f"trainer.val_check_interval={interval!r} must be a number of training steps >= 1, a "
            "fraction of an epoch in (0, 1], a duration or null, e.g. "
            "trainer.val_check_interval=100"
        )
    clip = trainer.get("gradient_clip_val")
    if not (clip is None or (_is_number(clip) and clip >= 0)):
        raise UserError(
            f"trainer.gradient_clip_val={clip!r} must be a number >= 0 or null (no clipping), "
            "e.g. trainer.gradient_clip_val=1.0"
        )


def _check_optimizer(model: DictConfig) -> None:
    opt = model.get("optimizer")
    if not opt:
        return
    lr = opt.get("lr")
    if "lr" in opt and not (_is_number(lr) and lr > 0):
        raise UserError(
            f"model.optimizer.lr={lr!r} must be a positive number (the CPC default is 2e-4)"
        )
    with user_errors("model.optimizer"):  # the optimizer's own checks (betas, eps, ...)
        optimizer = instantiate(opt)([torch.nn.Parameter(torch.zeros(1))])
    if model.get("scheduler"):
        with user_errors("model.scheduler"):
            instantiate(model.scheduler)(optimizer, total_steps=1)


def check_training(cfg: DictConfig) -> None:
    """Fail at start-up, naming key, value and fix, on trainer and optimizer values that would
    otherwise fail (or misbehave) only once training runs."""
    check_required(cfg)
    threads = cfg.get("torch_threads")
    if not (threads is None or (_is_int(threads) and threads >= 1)):
        raise UserError(f"torch_threads={threads!r} must be an integer >= 1 or null, e.g. 1")
    if cfg.get("trainer"):
        _check_trainer(cfg.trainer)
    if cfg.get("model"):
        _check_optimizer(cfg.model)
