"""``python -m cpc_lightning.train``: compose the config, build the parts, fit, probe.

Returns the metric named by ``optimized_metric`` (for sweepers). The Hydra run dir gets the
files :class:`~cpc_lightning.run_dir.RunDir` names: the configs, the checkpoints (the last one
included), ``metrics.csv`` and, at the end, the result file with the run's end state
(``training/end_state.py``: ``ok``, else exit code 2).

Everything is checked before the first file is written (config, data, model, the run dir's
state, the checkpoint against the model: ``training/rerun.py``); a refused run changes nothing
in its dir, Hydra's ``.hydra/`` and log file included (``training/job_files.py``).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import traceback
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cpc_lightning.build import build_datamodule, build_model, check_data_fits_model
from cpc_lightning.cli import entry_point
from cpc_lightning.errors import user_error_from_worker, user_errors
from cpc_lightning.eval.probes import end_of_training_probes, probe_datamodule
from cpc_lightning.eval.settings import RunProbeSettings
from cpc_lightning.run_dir import RunDir, write_text
from cpc_lightning.runs import (
    check_run_dir_overrides,
    resolve_ckpt_path,
    resume_config,
    weights_tag,
)
from cpc_lightning.training import wandb as wandb_setup
from cpc_lightning.training.checkpointing import save_final_checkpoint
from cpc_lightning.training.checks import check_training
from cpc_lightning.training.configured_lr import ConfiguredLR
from cpc_lightning.training.end_state import end_state
from cpc_lightning.training.environment import choose_precision, run_environment
from cpc_lightning.training.final_step import FinalStep
from cpc_lightning.training.guard import TrainingDiverged
from cpc_lightning.training.job_files import job_log, record_job
from cpc_lightning.training.loggers import build_callbacks, build_loggers, in_multirun
from cpc_lightning.training.rerun import (
    AlreadyFinished,
    RunDirRefused,
    check_start,
    prepare_point,
    refuse_to_overwrite,
)
from cpc_lightning.training.step_seed import StepSeed

log = logging.getLogger("cpc_lightning.train")


def run_setup(cfg: DictConfig) -> dict[str, Any]:
    """The experiment's key choices in one flat dict (log line, the result file, loggers)."""

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
    """Fit CPC as configured; return the result (final metrics, probe table if run, status).

    Checks everything first; the run dir is written only once every check passed."""
    check_training(cfg)
    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg.data)
    with user_errors("data"):
        datamodule.prepare_data()
        datamodule.setup("fit")
    model = build_model(cfg)
    check_data_fits_model(model, datamodule)
    probe_data = datamodule
    if cfg.probe.enabled and cfg.probe.get("data"):  # checked before training, not after
        with user_errors("probe.data"):
            probe_data = probe_datamodule(cfg.probe.data, datamodule)

    out_dir = Path(cfg.paths.output_dir)
    ckpt_path = resolve_ckpt_path(cfg, out_dir)
    if ckpt_path is None and not in_multirun():  # a sweep point: prepare_point decided
        refuse_to_overwrite(out_dir)
    try:
        start_step = check_start(cfg, model, ckpt_path, _start_key(cfg))
    except AlreadyFinished as done:
        log.warning("%s", done)
        return RunDir(out_dir).read_result() or {"metrics": {}}
    # every check passed: from here on the run writes its dir
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(RunDir(out_dir).config_resolved, OmegaConf.to_yaml(cfg, resolve=True))
    record_job(cfg, out_dir)
    with job_log(out_dir):
        return _train(cfg, model, datamodule, probe_data, ckpt_path, start_step)


def _start_key(cfg: DictConfig) -> str:
    """The override that chose the checkpoint this run starts from (for messages)."""
    if cfg.get("ckpt_path"):
        return f"ckpt_path={cfg.ckpt_path}"
    return f"resume={cfg.resume}" if cfg.get("resume") else "auto_resume=true"


def _train(
    cfg: DictConfig,
    model: Any,
    datamodule: Any,
    probe_data: Any,
    ckpt_path: str | None,
    start_step: int | None,
) -> dict[str, Any]:
    """Fit, decide the end state, write the last checkpoint (if ok) and the result file."""
    initial = copy.deepcopy(model)  # the random-init baseline of the end-of-run probes
    run_dir = RunDir(cfg.paths.output_dir)
    setup = run_setup(cfg)
    log.info("run: %s", " ".join(f"{k}={v}" for k, v in setup.items()))
    loggers = build_loggers(cfg, run_dir.root, resuming=ckpt_path is not None)
    with user_errors("trainer"):
        trainer: pl.Trainer = instantiate(
            cfg.trainer,
            callbacks=[*build_callbacks(cfg), FinalStep(), StepSeed(cfg.seed), ConfiguredLR()],
            logger=loggers or False,
            use_distributed_sampler=not datamodule.handles_distributed,
            precision=choose_precision(cfg.trainer.precision, str(cfg.trainer.accelerator)),
        )
    environment = run_environment(trainer)
    for lg in loggers:  # nested: must not shadow W&B's resolved config
        lg.log_hyperparams({"setup": setup, "environment": environment})
    with contextlib.suppress(TrainingDiverged):  # a streak stop: the end state below says so
        _fit(trainer, model, datamodule, ckpt_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    state = end_state(trainer, metrics)
    last = run_dir.last_checkpoint
    global_step = save_final_checkpoint(trainer, last) if state.ok else trainer.global_step
    result: dict[str, Any] = {"status": state.status, "setup": setup, "metrics": metrics}
    result.update(global_step=global_step, environment=environment)
    if not state.ok:
        result["diverged"] = state.why
    if start_step is not None:
        result["resumed_from_step"] = start_step
    if run_dir.converted_from.is_file():  # a continued converted run still says where it began
        result["converted_from"] = json.loads(run_dir.converted_from.read_text())
    if trainer.is_global_zero:
        if cfg.probe.enabled and state.ok:
            _probe(cfg, model, initial, probe_data, last, trainer, result)
        wandb_setup.log_training_results(trainer.loggers, run_dir.root, result.get("probe_table"))
        run_dir.write_result(result)
    if not state.ok:
        raise state.error(run_dir.checkpoints)
    return result


def _fit(trainer: pl.Trainer, model: Any, datamodule: Any, ckpt_path: str | None) -> None:
    """``trainer.fit``, resuming from ``ckpt_path`` if given; a worker's one-line error (under
    ddp_spawn) is raised as that error."""
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    except Exception as exc:
        from_worker = user_error_from_worker(exc)
        if from_worker is None:
            raise
        raise from_worker from exc


def _probe(
    cfg: DictConfig,
    model: Any,
    initial: Any,
    probe_data: Any,
    last: Path,
    trainer: pl.Trainer,
    result: dict[str, Any],
) -> None:
    """The end-of-run probes: their scores join ``result``'s metrics, their table is printed."""
    table, accuracies = end_of_training_probes(
        RunProbeSettings.from_node(cfg.probe, seed=int(cfg.seed)),
        model,
        initial,
        probe_data,
        OmegaConf.to_container(cfg.probe.get("data") or cfg.data, resolve=True),
        Path(cfg.paths.output_dir),
        weights_tag(last),
        trainer.loggers,
    )
    result["metrics"].update(accuracies)
    if table:
        result["probe_table"] = table
        RunDir(cfg.paths.output_dir).probe_table.write_text(table + "\n")
        print("\nLinear probes on frozen features (held-out split, accuracy):\n" + table)


def _record_failure(exc: BaseException, cfg: DictConfig) -> float:
    """In a sweep, keep going: write the failure into this point's dir (not into a dir holding
    another run: nothing is changed there); the point scores NaN."""
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    log.error("sweep point failed (%s): %s", out_dir, exc)
    if isinstance(exc, RunDirRefused):
        return math.nan
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(RunDir(out_dir).failed, "".join(traceback.format_exception(exc)))
    record_job(cfg, out_dir)  # the sweep summary finds its points by .hydra/overrides.yaml
    return math.nan


@entry_point("cpc_lightning", "train", check_argv=check_run_dir_overrides)
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point: returns ``cfg.optimized_metric`` (NaN for a failed sweep point); a
    single run's :class:`~cpc_lightning.errors.UserError` is one line, exit code 2."""
    try:
        if cfg.get("resume"):
            cfg = resume_config(cfg)
        reused = prepare_point(cfg, Path(cfg.paths.output_dir)) if in_multirun() else None
        result = reused or train(cfg)
    except Exception as exc:
        if in_multirun():
            return _record_failure(exc, cfg)
        raise
    finally:
        wandb_setup.finish()
    return result["metrics"].get(cfg.optimized_metric) if cfg.get("optimized_metric") else None


if __name__ == "__main__":
    main()
