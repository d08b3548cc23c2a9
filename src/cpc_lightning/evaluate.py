"""``python -m cpc_lightning.evaluate run_dir=<dir> task=phones|speakers|classes|abx|...``.

Rebuilds a trained model from its run dir (saved config + checkpoint), freezes it, extracts
features and trains a linear probe on them (``phones``, ``speakers``, ``classes``), or scores ABX
phone discrimination (``abx``) or CTC phone recognition (``phone_recognition``), beside baselines
under the same protocol: the same architecture at random init and, for audio, MFCCs. Writes
``<run_dir>/eval/<task>.json`` and prints a Markdown table. ``features=<extract dir>
items=<file>`` scores the ABX of features written by ``extract`` (no run needed). Returns the
trained model's headline figure (for sweepers).
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from cpc_lightning.build import build_model
from cpc_lightning.data import TASKS
from cpc_lightning.errors import UserError, check_overrides, exit_with, user_errors
from cpc_lightning.eval.probes import baseline_names, comparison_sources
from cpc_lightning.eval.report import evaluate_sources, write_report
from cpc_lightning.eval.settings import EvalSettings
from cpc_lightning.eval.speech_tasks import (
    abx_settings,
    ctc_settings,
    run_abx,
    run_phone_recognition,
    score_feature_dir,
)
from cpc_lightning.runs import Run, data_config, open_data, open_run, weights_tag
from cpc_lightning.training import wandb as wandb_setup

log = logging.getLogger("cpc_lightning.evaluate")


def random_init_model(run_cfg: DictConfig, seed: int) -> Any:
    """The run's architecture, untrained: ``build_model`` after ``torch.manual_seed(seed)``."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return build_model(run_cfg).eval()
    finally:
        torch.random.set_rng_state(state)


def settings_of(cfg: DictConfig) -> EvalSettings:
    """Probe settings: ``probe.*`` plus the feature and device keys of the entry config."""
    keys = ("feature", "layer", "pool", "device", "precision", "normalise")
    with user_errors("probe settings"):
        return EvalSettings.from_mapping(
            {**OmegaConf.to_container(cfg.probe, resolve=True), **{k: cfg.get(k) for k in keys}}
        )


def _meta(run: Run, datamodule: Any, data_cfg: dict, seed: int) -> dict[str, Any]:
    return {
        "run_dir": str(run.run_dir),
        "checkpoint": str(run.checkpoint),
        "global_step": run.global_step,
        "data": {
            "target": data_cfg.get("_target_"),
            "root": str(datamodule.root),
            "window": data_cfg.get("window"),
            "utterances": datamodule.stats or None,
        },
        "random_init_seed": seed,
    }


def _check_task(task: str, datamodule: Any) -> None:
    if task not in datamodule.tasks:
        why = "".join(f"; {p}" for p in getattr(datamodule, "label_problems", []))
        raise UserError(
            f"task={task}: {type(datamodule).__name__} has no labels for it (available: "
            f"{', '.join(datamodule.tasks) or 'none'}){why}; classes need data.pattern with a "
            "(?P<label>...) group, speakers a (?P<speaker>...) group, phones, abx and "
            "phone_recognition frame labels or phone sequences (e.g. data=timit)"
        )


def _run_task(
    cfg: DictConfig,
    sources: list[Any],
    datamodule: Any,
    settings: EvalSettings,
    data_cfg: dict,
    out: Path,
    meta: dict[str, Any],
) -> dict[str, Any]:
    task = str(cfg.task)
    if task == "abx":
        return run_abx(sources, datamodule, settings, abx_settings(cfg), cfg.get("items"), meta)
    if task == "phone_recognition":
        return run_phone_recognition(sources, datamodule, settings, ctc_settings(cfg), meta)
    reports = evaluate_sources(sources, datamodule, [task], settings, data_cfg, out, meta)
    if task not in reports:
        raise UserError(f"task={task}: no labelled rows in both the training and held-out splits")
    return reports[task]


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate the run's frozen features (and baselines) on ``cfg.task``; return the report."""
    task = str(cfg.task)
    if task not in TASKS:
        raise UserError(f"task={task} is not one of {', '.join(TASKS)}")
    if cfg.get("features"):
        with user_errors("evaluation"):
            report = score_feature_dir(cfg)
        return _finish(cfg, report, None)
    run = open_run(cfg.get("run_dir"), cfg.get("checkpoint"))
    datamodule = open_data(cfg, run.config)
    _check_task(task, datamodule)
    settings = settings_of(cfg)
    seed = int(
        cfg.random_init_seed if cfg.random_init_seed is not None else run.config.get("seed", 0)
    )
    tag = weights_tag(run.checkpoint)
    sources = comparison_sources(
        run.model,
        tag,
        baseline_names(cfg.baseline, datamodule.modality),
        lambda: random_init_model(run.config, seed),
        f"seed{seed}:{tag}",
    )
    out = Path(cfg.out_dir).expanduser().resolve() if cfg.out_dir else run.run_dir / "eval"
    data_cfg = OmegaConf.to_container(data_config(cfg, run.config), resolve=True)
    log.info("evaluating %s (global step %s) on task=%s", run.checkpoint, run.global_step, task)
    start = time.perf_counter()
    with user_errors("evaluation"):
        meta = _meta(run, datamodule, data_cfg, seed)
        report = _run_task(cfg, sources, datamodule, settings, data_cfg, out, meta)
    report["wall_seconds"] = time.perf_counter() - start
    report["feature"], report["layer"] = settings.feature, settings.layer
    report["normalise"] = settings.normalise
    return _finish(cfg, report, run, out)


def _finish(cfg: DictConfig, report: dict[str, Any], run: Run | None, out: Path | None = None):
    """Write ``<out>/<task>.json``, print the table, log to W&B when the run used it."""
    task = report["task"]
    if out is None:
        out = Path(cfg.out_dir).expanduser().resolve() if cfg.out_dir else Path(report["out_dir"])
    path = write_report(out, task, report)
    step = f", step {run.global_step}" if run is not None and run.global_step is not None else ""
    print(f"\ntask={task}, feature={report.get('feature')}{step} (held-out split):\n")
    print(report["table"])
    print(f"\nreport: {path}")
    if run is not None:
        wandb_setup.log_report(run.config, report, out, str(cfg.wandb))
    return report


def headline(report: dict[str, Any]) -> float:
    """The trained model's main figure (for sweepers): accuracy, ABX within error, or PER."""
    cpc = report["sources"]["cpc"]
    for key in ("accuracy", "within", "per"):
        if cpc.get(key) is not None:
            return float(cpc[key])
    return float("nan")


@hydra.main(config_path="conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Hydra entry point: returns the trained model's held-out accuracy."""
    try:
        report = evaluate(cfg)
    except UserError as exc:
        exit_with("cpc_lightning.evaluate", exc)
    return headline(report)


if __name__ == "__main__":
    check_overrides("cpc_lightning.evaluate", sys.argv[1:])
    main()
