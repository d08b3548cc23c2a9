"""Build the model parts from a composed config, check them, and rebuild a trained run.

Shared by the ``train``, ``evaluate`` and ``extract`` entry points (none imports another).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cpc_lightning.module import CPCModule

RESOLVED_CONFIG = "config_resolved.yaml"


class UserError(Exception):
    """A mistake in the configuration or the input data, reported as one message."""


def _root_cause(exc: BaseException) -> BaseException:
    while isinstance(exc, InstantiationException) and exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


@contextlib.contextmanager
def user_errors(where: str) -> Iterator[None]:
    """Turn configuration/data errors raised while building ``where`` into :class:`UserError`."""
    try:
        yield
    except UserError:
        raise
    except InstantiationException as exc:
        cause = _root_cause(exc)
        if isinstance(cause, (ValueError, FileNotFoundError, NotADirectoryError, KeyError)):
            raise UserError(f"{where}: {cause}") from exc
        raise UserError(f"{where}: {exc}") from exc
    except (ValueError, FileNotFoundError, NotADirectoryError) as exc:
        raise UserError(f"{where}: {exc}") from exc


def check_config(cfg: DictConfig) -> None:
    """Fail early, with the offending key and value, on values that cannot work."""
    k = cfg.model.prediction_steps
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise UserError(f"model.prediction_steps={k!r} must be an integer >= 1 (paper audio: 12)")
    off = cfg.model.get("step_offset", 0)
    if not isinstance(off, int) or off < 0:
        raise UserError(f"model.step_offset={off!r} must be an integer >= 0")
    n = cfg.negatives.num_negatives
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise UserError(f"negatives.num_negatives={n!r} must be an integer >= 1 (paper: 128)")


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
    with user_errors("model.heads"):
        parts["heads"] = instantiate(cfg.model.heads, num_sets=num_sets)
    with user_errors("negatives"):
        parts["negatives"] = instantiate(cfg.negatives)
    return parts


def build_model(cfg: DictConfig) -> CPCModule:
    """A fresh :class:`CPCModule` from a composed config."""
    parts = build_parts(cfg)
    with user_errors("model"):
        optimizer = instantiate(cfg.model.optimizer) if cfg.model.get("optimizer") else None
        scheduler = instantiate(cfg.model.scheduler) if cfg.model.get("scheduler") else None
        model = CPCModule(
            **parts,
            optimizer=optimizer,
            scheduler=scheduler,
            prediction_steps=cfg.model.prediction_steps,
            step_offset=cfg.model.get("step_offset", 0),
            directions=list(cfg.model.get("directions", ["down"])),
            temperature=cfg.model.get("temperature", 1.0),
        )
    return model


def check_data_fits_model(model: CPCModule, datamodule: Any) -> None:
    """Window long enough for the encoder and K; speakers present where negatives need them."""
    encoder = model.encoder
    window = getattr(datamodule, "window", None)
    if window is not None and hasattr(encoder, "num_frames"):
        field = encoder.receptive_field
        frames = encoder.num_frames(int(window))
        need = model.steps[-1] + 1
        if window < field or frames < need:
            raise UserError(
                f"data.window={window} samples is too short: the encoder's receptive field is "
                f"{field} samples and predicting {model.steps[-1]} steps ahead needs at least "
                f"{need} frames ({need * encoder.downsampling} samples); "
                f"got {frames} frames. Raise data.window or lower model.prediction_steps"
            )
    if model.negatives.needs_speakers and not getattr(datamodule, "provides_speakers", False):
        raise UserError(
            f"negatives={model.negatives.mode} needs speaker ids per sequence, but "
            f"{type(datamodule).__name__} provides none: use data=librispeech or "
            "data=synthetic_speech, or give data.pattern a (?P<speaker>...) group"
        )


def find_checkpoint(run_dir: Path) -> Path:
    """``last.ckpt`` of a run dir (or the newest checkpoint there)."""
    ckpt_dir = run_dir / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    if last.is_file():
        return last
    found = sorted(ckpt_dir.glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise UserError(
            f"no checkpoint in {ckpt_dir}: train with callbacks=default (it writes last.ckpt) "
            "or pass checkpoint=<file>"
        )
    return found[-1]


def load_run_config(run_dir: Path) -> DictConfig:
    """The resolved training config saved in a run dir."""
    for name in (RESOLVED_CONFIG, ".hydra/config.yaml"):
        path = run_dir / name
        if path.is_file():
            return OmegaConf.load(path)
    raise UserError(
        f"{run_dir} is not a training run dir: it has neither {RESOLVED_CONFIG} nor "
        ".hydra/config.yaml (point run_dir at a directory written by cpc_lightning.train)"
    )


def load_trained(run_dir: Path, checkpoint: Path | None = None) -> tuple[DictConfig, CPCModule]:
    """Rebuild the model of a run dir and load its weights (CPU, eval mode)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run_dir={run_dir} does not exist")
    cfg = load_run_config(run_dir)
    model = build_model(cfg)
    ckpt = Path(checkpoint) if checkpoint else find_checkpoint(run_dir)
    if not ckpt.is_file():
        raise UserError(f"checkpoint={ckpt} does not exist")
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    model.load_state_dict(state["state_dict"])
    return cfg, model.eval()
