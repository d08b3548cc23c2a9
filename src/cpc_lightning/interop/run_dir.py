"""A converted checkpoint as a model (:func:`convert_cpc_audio`) and as a run dir.

The run dir is what ``train`` writes (its paths are :class:`~cpc_lightning.run_dir.RunDir`'s):
the resolved config and Hydra's config (the full ``train`` config, resolved), the last
checkpoint (a Lightning checkpoint at step 0: the mapped weights, and the mapped Adam state when
the source has one, else none, so a resumed run starts a fresh optimizer), and the result file
and ``RunDir.converted_from`` saying where it came from (``train`` rewrites the first when the
run is continued). It is written into a temporary folder beside ``out`` and renamed into place,
so it is complete or absent.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from cpc_lightning.build import build_model
from cpc_lightning.errors import UserError, user_errors
from cpc_lightning.interop.cpc_audio import CPCAudioCheckpoint, plan, read_checkpoint
from cpc_lightning.interop.cpc_audio_tensors import map_optimizer, map_state
from cpc_lightning.model.module import CPCModule
from cpc_lightning.run_dir import CONVERTED_FROM, RunDir, write_json
from cpc_lightning.training.loggers import build_callbacks

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
#: Where a converted run dir records its source (the result file too, until training rewrites it).
PROVENANCE = CONVERTED_FROM
#: Override keys the checkpoint decides (refused on the command line).
ARCHITECTURE_GROUPS = ("encoder", "context", "heads")


@dataclass
class Converted:
    """A converted checkpoint: its ``train`` config, the model, and what conversion noted."""

    config: DictConfig
    model: CPCModule
    source: CPCAudioCheckpoint
    optimizer_state: dict[str, Any] | None
    overrides: list[str] = field(default_factory=list)  # of `train`, as composed
    notes: list[str] = field(default_factory=list)

    def provenance(self) -> dict[str, Any]:
        """What the result file records about the source."""
        src = self.source
        return {
            "format": "cpc_audio",
            "layout": src.layout,
            "checkpoint": str(src.source),
            "epoch": src.epoch,
            "arguments": {k: v for k, v in src.args.items() if _jsonable(v)},
            "notes": self.notes,
        }


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except TypeError:
        return False
    return True


def compose_train(overrides: list[str]) -> DictConfig:
    """The ``train`` config with ``overrides`` (inside a running Hydra app or outside one)."""
    with user_errors("overrides"):
        if GlobalHydra.instance().is_initialized():
            return compose(config_name="train", overrides=overrides)
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="train", overrides=overrides)


def _check_user_overrides(overrides: list[str], architecture: list[str]) -> None:
    fixed = {o.split("=", 1)[0] for o in architecture}
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key.split(".")[0] in ARCHITECTURE_GROUPS or key in fixed:
            raise UserError(
                f"{override}: the checkpoint fixes the architecture (encoder, context, heads, "
                "model.prediction_steps, ...); drop this override (new_heads= starts fresh heads)"
            )


def convert_cpc_audio(
    checkpoint: str | Path,
    overrides: list[str] | None = None,
    new_heads: str | None = None,
    out_dir: Path | None = None,
) -> Converted:
    """Read a CPC_audio checkpoint and rebuild it here: config, model (eval mode), Adam state."""
    ckpt = read_checkpoint(checkpoint)
    p = plan(ckpt, new_heads)
    overrides = list(overrides or [])
    _check_user_overrides(overrides, p.architecture)
    composed = p.training + overrides + p.architecture
    cfg = compose_train(composed)
    cache = os.environ.get("CPC_CACHE_DIR") or str(Path.cwd() / ".cache")
    OmegaConf.update(cfg, "paths.output_dir", str(out_dir or Path.cwd()), merge=False)
    OmegaConf.update(cfg, "paths.cache_dir", str(Path(cache).resolve()), merge=False)
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    model = build_model(cfg)
    model.load_state_dict(map_state(ckpt, model, p.heads_from_checkpoint))
    opt_state, why = map_optimizer(ckpt, model, p.heads_from_checkpoint)
    return Converted(cfg, model.eval(), ckpt, opt_state, composed, [*p.notes, why])


def _checkpoint_callbacks(cfg: DictConfig, last: Path) -> dict[str, Any]:
    """The state of the run's checkpoint callbacks, owning ``last`` (so that a resumed run
    replaces it instead of writing a ``-v1`` version beside it)."""
    states = {}
    for callback in build_callbacks(cfg):
        if isinstance(callback, ModelCheckpoint):
            callback.last_model_path = str(last)
            states[callback.state_key] = callback.state_dict()
    return states


def lightning_checkpoint(converted: Converted, last: Path) -> dict[str, Any]:
    """The last checkpoint at step 0: weights, the mapped optimizer state (or none), no loop
    state."""
    return {
        "state_dict": converted.model.state_dict(),
        "epoch": 0,
        "global_step": 0,
        "pytorch-lightning_version": pl.__version__,
        "optimizer_states": [converted.optimizer_state] if converted.optimizer_state else [],
        "lr_schedulers": [],
        "callbacks": _checkpoint_callbacks(converted.config, last),
        "converted_from": converted.provenance(),
    }


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"out={out} already exists and is not empty: give a new folder")


def write_run_dir(converted: Converted, out: Path) -> Path:
    """Write ``converted`` as a run dir at ``out`` (complete or not at all); return ``out``."""
    out = out.expanduser().resolve()
    _check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    run = RunDir(tmp)
    try:
        run.hydra_dir.mkdir(parents=True)
        run.checkpoints.mkdir()
        text = OmegaConf.to_yaml(converted.config, resolve=True)
        run.config_resolved.write_text(text)
        run.hydra_config.write_text(text)
        run.hydra_overrides.write_text(OmegaConf.to_yaml(converted.overrides))
        last = RunDir(out).last_checkpoint  # where it will be
        torch.save(lightning_checkpoint(converted, last), run.last_checkpoint)
        provenance = converted.provenance()
        run.write_result({"converted_from": provenance, "global_step": 0, "metrics": {}})
        # train rewrites the result file when the run is continued; this file stays
        write_json(run.converted_from, provenance)
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
