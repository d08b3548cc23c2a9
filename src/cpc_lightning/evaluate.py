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
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from cpc_lightning.build import build_model
from cpc_lightning.cli import entry_point
from cpc_lightning.errors import UserError, user_errors
from cpc_lightning.eval.probes import baseline_names, comparison_sources
from cpc_lightning.eval.registry import check_task, get_task, headline, run_task
from cpc_lightning.eval.report import Report, write_report
from cpc_lightning.eval.settings import EvalSettings
from cpc_lightning.eval.speech_tasks import score_feature_dir
from cpc_lightning.eval.tasks import TaskInputs
from cpc_lightning.run_dir import RunDir
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


def settings_of(cfg: DictConfig, modality: str | None = None) -> EvalSettings:
    """Probe settings: ``probe.*`` plus the feature and device keys of the entry config (null
    ones set to ``modality``'s defaults when given)."""
    keys = ("feature", "layer", "pool", "device", "precision", "normalise")
    with user_errors("probe settings"):
        s = EvalSettings.from_node(cfg.probe, **{k: cfg.get(k) for k in keys})
        return s if modality is None else s.for_modality(modality)


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


def check_checkpoint_of_run_dir(cfg: DictConfig) -> None:
    """``run_dir=A checkpoint=<a file outside A>`` would file that checkpoint's scores under
    ``A/eval`` as A's: refused unless ``out_dir`` says where they go."""
    run_dir, checkpoint = cfg.get("run_dir"), cfg.get("checkpoint")
    if not run_dir or not checkpoint or cfg.get("out_dir"):
        return
    root = Path(str(run_dir)).expanduser().resolve()
    ckpt = Path(str(checkpoint)).expanduser().resolve()
    if root not in ckpt.parents:
        raise UserError(
            f"checkpoint={ckpt} is not in run_dir={root}: its scores would be written to "
            f"{RunDir(root).eval} as that run's; give checkpoint= alone (scores go to "
            f"{RunDir.of_checkpoint(ckpt).eval}) or out_dir=<folder> for them"
        )


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate the run's frozen features (and baselines) on ``cfg.task``; return the report's
    JSON."""
    task = get_task(str(cfg.task))
    if cfg.get("features"):
        with user_errors("evaluation"):
            report = score_feature_dir(cfg)
        return _finish(cfg, report, None)
    check_checkpoint_of_run_dir(cfg)
    run = open_run(cfg.get("run_dir"), cfg.get("checkpoint"))
    datamodule = open_data(cfg, run.config)
    check_task(task, datamodule)
    settings = settings_of(cfg, datamodule.modality)
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
    out = Path(cfg.out_dir).expanduser().resolve() if cfg.out_dir else RunDir(run.run_dir).eval
    data_cfg = OmegaConf.to_container(data_config(cfg, run.config), resolve=True)
    log.info(
        "evaluating %s (global step %s) on task=%s", run.checkpoint, run.global_step, task.name
    )
    start = time.perf_counter()
    with user_errors("evaluation"):
        meta = _meta(run, datamodule, data_cfg, seed)
        inputs = TaskInputs(sources, datamodule, settings, data_cfg, out, meta)
        inputs.options, inputs.items_file = cfg.get(task.name), cfg.get("items")
        report = run_task(task, inputs)
    report.wall_seconds = time.perf_counter() - start
    report.feature, report.layer = settings.feature, settings.layer
    report.normalise = settings.normalise
    return _finish(cfg, report, run, out)


def _finish(
    cfg: DictConfig, report: Report, run: Run | None, out: Path | None = None
) -> dict[str, Any]:
    """Write ``<out>/<task>.json``, print the table, log to W&B when the run used it; return
    the report's JSON."""
    data = report.to_json()
    task = data["task"]
    if out is None:
        out = Path(cfg.out_dir).expanduser().resolve() if cfg.out_dir else Path(data["out_dir"])
    path = write_report(out, task, report)
    step = f", step {run.global_step}" if run is not None and run.global_step is not None else ""
    print(f"\ntask={task}, feature={data.get('feature')}{step} (held-out split):\n")
    print(data["table"])
    print(f"\nreport: {path}")
    if run is not None:
        wandb_setup.log_report(run.config, run.run_dir, report, out, str(cfg.wandb))
    return data


@entry_point("cpc_lightning.evaluate", "evaluate")
def main(cfg: DictConfig) -> float:
    """Hydra entry point: returns the trained model's held-out accuracy."""
    return headline(evaluate(cfg))


if __name__ == "__main__":
    main()
