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
import os
import sys
import time
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
from pytorch_lightning.strategies.launchers import _MultiProcessingLauncher

from cpc_lightning.builder import (
    RESOLVED_CONFIG,
    UserError,
    build_model,
    check_data_fits_model,
    user_errors,
)
from cpc_lightning.callbacks import FinalStep, atomic_save_checkpoint
from cpc_lightning.online_probe import OnlineProbe
from cpc_lightning.probe import (
    EvalSettings,
    Source,
    accuracy_summary,
    available_tasks,
    combined_table,
    evaluate_sources,
    is_image_data,
    weights_tag,
)

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


def run_probes(
    cfg: DictConfig,
    model: Any,
    initial: dict[str, Any],
    datamodule: Any,
    loggers: list[Any] | None = None,
) -> str:
    """Linear probes on frozen features (``probe.evaluate_sources``, as ``evaluate`` runs them):
    trained CPC vs. the same nets at their initial weights (and MFCC for audio).

    Capped for speed (``probe.max_train_utterances``, ``max_test_utterances``,
    ``max_train_rows``); reports go to ``<run dir>/eval/<task>.json``, accuracies to the
    run's loggers.
    """
    have = available_tasks(datamodule)
    tasks = [t for t in cfg.probe.tasks if t in have] or (["classes"] if "classes" in have else [])
    if not tasks:
        log.info("probe skipped: %s has no labels for %s", type(datamodule).__name__, tasks)
        return ""
    out_dir = Path(cfg.paths.output_dir)
    p = OmegaConf.to_container(cfg.probe, resolve=True)
    settings = EvalSettings.from_mapping({**p, "seeds": [int(cfg.seed)]})
    ckpt = weights_tag(out_dir / "checkpoints" / "last.ckpt")
    sources = [
        Source("cpc", (model.encoder, model.context), ckpt),
        Source("random_init", (initial["encoder"], initial["context"]), f"init:{ckpt}"),
    ]
    if not is_image_data(datamodule):
        sources.append(Source("mfcc", None, "mfcc"))
    start = time.perf_counter()
    reports = evaluate_sources(
        sources,
        datamodule,
        tasks,
        settings,
        data_key=OmegaConf.to_container(cfg.data, resolve=True),
        out_dir=out_dir / "eval",
        meta={"run_dir": str(out_dir), "checkpoint": "in-memory model at the end of training"},
    )
    seconds = time.perf_counter() - start
    log.info("end-of-run probes took %.1f s", seconds)
    metrics = {**accuracy_summary(reports), "probe/wall_seconds": seconds}
    for lg in loggers or []:
        lg.log_metrics(metrics)
        lg.save()
    return combined_table(reports) + f"\n(probe wall time {seconds:.1f} s)" if reports else ""


def run_setup(cfg: DictConfig) -> dict[str, Any]:
    """The experiment's key choices in one flat dict (log line, ``result.json``, loggers)."""

    def name(node: Any) -> str | None:
        target = node.get("_target_") if isinstance(node, DictConfig) else None
        return str(target).rsplit(".", 1)[-1] if target else None

    neg = cfg.get("negatives") or {}
    return {
        "data": name(cfg.get("data")),
        "encoder": name(cfg.get("encoder")),
        "context": name(cfg.get("context")),
        "prediction_steps": int(cfg.model.prediction_steps),
        "negatives": neg.get("mode"),
        "num_negatives": neg.get("num_negatives"),
        "seed": int(cfg.seed),
    }


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
        model.encoder.compile()  # in place: state-dict keys stay the same
        model.context.compile()

    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / RESOLVED_CONFIG).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    setup = run_setup(cfg)
    log.info("run: %s", " ".join(f"{k}={v}" for k, v in setup.items()))

    callbacks = _instantiate_group(cfg.get("callbacks"), "callbacks") + [FinalStep()]
    if cfg.model.get("online_probe", False):
        callbacks.append(OnlineProbe())
    ckpt_path = _resolve_ckpt_path(cfg, out_dir)
    loggers = _build_loggers(cfg, out_dir, resuming=ckpt_path is not None)
    with user_errors("trainer"):
        trainer: pl.Trainer = instantiate(
            cfg.trainer,
            callbacks=callbacks,
            logger=loggers or False,
            use_distributed_sampler=not getattr(datamodule, "handles_distributed", False),
        )
    for lg in loggers:
        lg.log_hyperparams({"setup": setup})  # nested: must not shadow W&B's resolved config
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    last = out_dir / "checkpoints" / "last.ckpt"
    # After ddp_spawn this process's loops never ran: the workers saved the checkpoints.
    spawned = isinstance(trainer.strategy.launcher, _MultiProcessingLauncher)
    ckpt_cb = trainer.checkpoint_callback
    if (
        ckpt_cb is not None
        and not spawned
        and getattr(ckpt_cb, "saved_step", -1) != trainer.global_step
    ):
        # A final checkpoint at the last step when the callback has none (stopped by max_epochs,
        # max_time, ...); every rank calls it; temp file + rename like every other checkpoint.
        atomic_save_checkpoint(trainer, last)
    global_step = trainer.global_step
    if spawned and last.is_file():
        global_step = int(torch.load(last, "cpu", mmap=True, weights_only=False)["global_step"])

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    result: dict[str, Any] = {"setup": setup, "metrics": metrics, "global_step": global_step}
    if cfg.probe.enabled and trainer.is_global_zero:
        table = run_probes(cfg, model, initial, datamodule, trainer.loggers)
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
        if cfg.get("resume"):
            cfg = _resume_config(cfg)
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
    finally:
        _finish_wandb()
    metric = result["metrics"].get(cfg.optimized_metric) if cfg.get("optimized_metric") else None
    return metric


def _record_failure(cfg: DictConfig, exc: BaseException) -> None:
    """In a sweep, keep going: write the failure into this point's dir."""
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "failed.txt").write_text("".join(traceback.format_exception(exc)))
    log.error("sweep point failed (%s): %s", out_dir, exc)


# ---------------------------------------------------------------- resume, loggers, W&B
def _resolve_ckpt_path(cfg: DictConfig, out_dir: Path) -> str | None:
    """The checkpoint ``fit`` starts from: ``ckpt_path`` (a file or ``last``); with ``resume``
    or ``auto_resume`` and no ``ckpt_path``, ``last.ckpt`` of the run dir when it exists."""
    last = out_dir / "checkpoints" / "last.ckpt"
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path is None and cfg.get("resume"):
        if not last.is_file():
            raise UserError(f"resume={cfg.resume}: nothing to resume, {last} does not exist")
        ckpt_path = "last"
    if ckpt_path is None and cfg.get("auto_resume") and last.is_file():
        ckpt_path = "last"
    if ckpt_path == "last":
        if last.is_file():
            return str(last)
        log.warning("ckpt_path=last but %s does not exist: starting from scratch", last)
        return None
    if ckpt_path and not Path(ckpt_path).is_file():
        raise UserError(f"ckpt_path={ckpt_path} does not exist")
    return str(ckpt_path) if ckpt_path else None


_NOT_A_KEY = object()


def _resume_config(cfg: DictConfig) -> DictConfig:
    """``resume=<run dir>``: that run's saved config, with this command line's overrides on top.

    Hydra has already made ``<run dir>`` this job's output dir (``hydra.run.dir``). Each override
    ``key=value`` (a group choice like ``logger=wandb`` included) copies the freshly composed,
    resolved node at ``key``; overrides of global groups (``experiment=...``) are not applied.
    """
    run_dir = Path(str(cfg.resume))
    saved = run_dir / RESOLVED_CONFIG
    if not saved.is_file():
        raise UserError(f"resume={run_dir}: no {RESOLVED_CONFIG} there (not a training run dir)")
    here = Path(HydraConfig.get().runtime.output_dir).resolve()
    base = OmegaConf.load(saved)
    if Path(str(base.paths.output_dir)).resolve() != here:
        raise UserError(
            f"resume={run_dir}: the run was written in {base.paths.output_dir} (moved?); resume "
            "it with hydra.run.dir=<dir> ckpt_path=last and the original overrides"
        )
    for override in HydraConfig.get().overrides.task:
        key = override.split("=", 1)[0].lstrip("+~")
        if key in ("resume", "ckpt_path") or key.startswith("hydra"):
            continue
        node = OmegaConf.select(cfg, key, default=_NOT_A_KEY)
        if node is _NOT_A_KEY:
            log.warning("resume: override %r does not name a config key; not applied", override)
            continue
        value = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
        OmegaConf.update(base, key, value, merge=False, force_add=True)
    base.resume = str(run_dir)
    base.ckpt_path = cfg.get("ckpt_path")
    # Keep the run dir self-describing: Hydra rewrote .hydra/config.yaml with this command's
    # composition; put the config the run actually continues with there.
    hydra_dir = here / ".hydra"
    if hydra_dir.is_dir():
        (hydra_dir / "config.yaml").write_text(OmegaConf.to_yaml(base, resolve=True))
    log.info("resuming run dir %s with its saved config", run_dir)
    return base


def _wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc

    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1]
    try:
        return netrc.netrc().authenticators(host.split("/")[0]) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _wandb_kwargs(cfg: DictConfig, node: DictConfig, out_dir: Path, resuming: bool) -> dict:
    """Offline without credentials, one group per multirun, the same run id when resuming."""
    import importlib.util

    if importlib.util.find_spec("wandb") is None:
        raise UserError("logger=wandb needs the wandb package: pip install 'cpc_lightning[wandb]'")
    if not node.get("offline") and not os.environ.get("WANDB_MODE") and not _wandb_credentials():
        os.environ["WANDB_MODE"] = "offline"
        log.info("W&B: no API key or netrc entry found, logging offline")
    offline = node.get("offline") or os.environ.get("WANDB_MODE") in ("offline", "dryrun")
    if offline:
        os.environ.setdefault("WANDB_SILENT", "true")
        os.environ.setdefault("WANDB_CONSOLE", "off")
    kwargs: dict[str, Any] = {"config": OmegaConf.to_container(cfg, resolve=True)}
    if node.get("group") is None and _multirun():
        kwargs["group"] = f"{cfg.task_name}-{Path(str(HydraConfig.get().sweep.dir)).name}"
    # Online, a resumed run continues the same W&B run. (Offline, wandb 0.31 records nothing
    # for a run given both an id and resume: each process gets its own offline run.)
    if node.get("id") is None and not offline:
        import wandb

        id_file = out_dir / "wandb_run_id.txt"
        if resuming and id_file.is_file():
            kwargs["id"] = id_file.read_text().strip()
        else:
            kwargs["id"] = wandb.util.generate_id()
            if pl.utilities.rank_zero_only.rank == 0:
                id_file.write_text(kwargs["id"] + "\n")
        kwargs["resume"] = "allow"
    return kwargs


def _build_loggers(cfg: DictConfig, out_dir: Path, resuming: bool) -> list[Any]:
    """Instantiate ``cfg.logger``; the W&B logger gets :func:`_wandb_kwargs`."""
    node = cfg.get("logger")
    if not node:
        return []
    out = []
    with user_errors("logger"):
        for _, sub in node.items():
            if not (isinstance(sub, DictConfig) and "_target_" in sub):
                continue
            if str(sub._target_).rsplit(".", 1)[-1] == "WandbLogger":
                # partial: `config` (wandb.init's) would clash with instantiate's own argument
                kwargs = _wandb_kwargs(cfg, sub, out_dir, resuming)
                out.append(instantiate(sub, _partial_=True)(**kwargs))
            else:
                out.append(instantiate(sub))
    return out


def _finish_wandb() -> None:
    """Close the W&B run if this process started one; say how to sync an offline run."""
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb is not None else None
    if run is None:
        return
    offline = bool(getattr(run.settings, "_offline", False)) or os.environ.get("WANDB_MODE") in (
        "offline",
        "dryrun",
    )
    run_dir = Path(run.dir).parent
    wandb.finish()
    if offline:
        print(f"W&B run logged offline in {run_dir}; upload it later with: wandb sync {run_dir}")


if __name__ == "__main__":
    main()
