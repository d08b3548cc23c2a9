"""``python -m cpc_lightning.train``: compose the config, build the parts, fit, probe.

Returns the metric named by ``optimized_metric`` (for sweepers). The Hydra run dir gets
``.hydra/config.yaml``, ``config_resolved.yaml``, ``checkpoints/`` (incl. ``last.ckpt``),
``metrics.csv`` and ``result.json``.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import sys
import traceback
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cpc_lightning.builder import (
    RESOLVED_CONFIG,
    UserError,
    build_model,
    check_data_fits_model,
    user_errors,
)
from cpc_lightning.probe import audio_probe_data, fit_probe, markdown_table

log = logging.getLogger("cpc_lightning.train")


def _instantiate_group(node: DictConfig | None, where: str) -> list[Any]:
    if not node:
        return []
    out = []
    with user_errors(where):
        for _, sub in node.items():
            if isinstance(sub, DictConfig) and "_target_" in sub:
                out.append(instantiate(sub))
    return out


def run_probes(cfg: DictConfig, model: Any, initial: dict[str, Any], datamodule: Any) -> str:
    """Linear probes on frozen features: trained CPC vs. the same nets at their initial weights."""
    tasks = list(cfg.probe.tasks)
    if not hasattr(datamodule, "items"):
        log.info("probe skipped: %s has no utterance list", type(datamodule).__name__)
        return ""
    tasks = [t for t in tasks if t != "phones" or getattr(datamodule, "num_phones", 0) > 0]
    window_frames = max(1, int(getattr(datamodule, "window", 20480)) // 160)
    sources = {
        "CPC (trained)": (model.encoder, model.context),
        "random init (same nets)": (initial["encoder"], initial["context"]),
    }
    results: dict[str, dict[str, Any]] = {}
    for name, (enc, ctx) in sources.items():
        kw = dict(tasks=tasks, feature=cfg.probe.feature, window_frames=window_frames)
        train = audio_probe_data(enc.cpu(), ctx.cpu(), datamodule, "train", **kw)
        test = audio_probe_data(enc, ctx, datamodule, "test", **kw)
        results[name] = {}
        for task in tasks:
            if task not in train or task not in test:
                continue
            num_classes = {"phones": getattr(datamodule, "num_phones", None)}.get(task)
            results[name][task] = fit_probe(
                task,
                train[task],
                test[task],
                num_classes=num_classes,
                epochs=cfg.probe.epochs,
                lr=cfg.probe.lr,
                weight_decay=cfg.probe.weight_decay,
                batch_size=cfg.probe.batch_size,
                seed=cfg.seed,
                max_train=cfg.probe.max_frames,
            )
    table = markdown_table(results, tasks)
    return table


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit CPC as configured; return the final metrics (and the probe table if run)."""
    pl.seed_everything(cfg.seed, workers=True)
    with user_errors("data"):
        datamodule = instantiate(cfg.data)
        datamodule.prepare_data()
        datamodule.setup("fit")
    model = build_model(cfg)
    check_data_fits_model(model, datamodule)
    initial = {"encoder": copy.deepcopy(model.encoder), "context": copy.deepcopy(model.context)}
    if cfg.model.get("compile", False):
        model.encoder = torch.compile(model.encoder)
        model.context = torch.compile(model.context)

    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / RESOLVED_CONFIG).write_text(OmegaConf.to_yaml(cfg, resolve=True))

    callbacks = _instantiate_group(cfg.get("callbacks"), "callbacks")
    loggers = _instantiate_group(cfg.get("logger"), "logger")
    with user_errors("trainer"):
        trainer: pl.Trainer = instantiate(
            cfg.trainer,
            callbacks=callbacks,
            logger=loggers or False,
            use_distributed_sampler=not getattr(datamodule, "handles_distributed", False),
        )
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path == "last":
        last = out_dir / "checkpoints" / "last.ckpt"
        ckpt_path = str(last) if last.is_file() else None
        if ckpt_path is None:
            log.warning("ckpt_path=last but %s does not exist: starting from scratch", last)
    elif ckpt_path and not Path(ckpt_path).is_file():
        raise UserError(f"ckpt_path={ckpt_path} does not exist")

    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    if trainer.checkpoint_callback is not None:
        # A final checkpoint at the last step, whatever the save interval (every rank calls it).
        trainer.save_checkpoint(out_dir / "checkpoints" / "last.ckpt")

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    result: dict[str, Any] = {"metrics": metrics, "global_step": trainer.global_step}
    if cfg.probe.enabled and trainer.is_global_zero:
        table = run_probes(cfg, model, initial, datamodule)
        if table:
            result["probe_table"] = table
            (out_dir / "probe.md").write_text(table + "\n")
            print("\nLinear probes on frozen features (held-out split, accuracy):\n" + table)
    if trainer.is_global_zero:
        (out_dir / "result.json").write_text(json.dumps(result, indent=2))
    return result


def _multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point: returns ``cfg.optimized_metric`` (NaN for a failed sweep point)."""
    try:
        result = train(cfg)
    except UserError as exc:
        if _multirun():
            _record_failure(cfg, exc)
            return math.nan
        print(f"cpc_lightning: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Exception as exc:
        if _multirun():
            _record_failure(cfg, exc)
            return math.nan
        raise
    metric = result["metrics"].get(cfg.optimized_metric) if cfg.get("optimized_metric") else None
    return metric


def _record_failure(cfg: DictConfig, exc: BaseException) -> None:
    """In a sweep, keep going: write the failure into this point's dir."""
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "failed.txt").write_text("".join(traceback.format_exception(exc)))
    log.error("sweep point failed (%s): %s", out_dir, exc)


if __name__ == "__main__":
    main()
