"""``python -m cpc_lightning.evaluate run_dir=<dir> task=phones|speakers|classes``.

Rebuilds a trained model from its run dir (saved config + checkpoint), freezes it, extracts
features and trains a linear probe on them, beside baselines under the same probe and split:
the same architecture at random init and, for audio, MFCCs. Writes ``<run_dir>/eval/<task>.json``
and prints a Markdown table. Returns the trained model's test accuracy (for sweepers).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cpc_lightning.builder import UserError, build_model, user_errors
from cpc_lightning.probe import (
    BASELINES,
    TASKS,
    EvalSettings,
    Source,
    available_tasks,
    data_config,
    evaluate_sources,
    is_image_data,
    load_run,
    weights_tag,
)

log = logging.getLogger("cpc_lightning.evaluate")


def baselines_of(value: Any, image: bool) -> list[str]:
    """``all`` | ``none`` | a name | a list -> baseline names (MFCC only for audio)."""
    if isinstance(value, str):
        names = {"all": list(BASELINES), "none": []}.get(value, [value])
    else:
        names = [str(v) for v in value or []]
    bad = [n for n in names if n not in BASELINES]
    if bad:
        raise UserError(f"baseline={bad} is not one of all, none, {', '.join(BASELINES)}")
    if image and "mfcc" in names:
        log.info("baseline mfcc skipped: image run")
        names.remove("mfcc")
    return names


def random_init_model(run_cfg: DictConfig, seed: int) -> Any:
    """The run's architecture, untrained: ``build_model`` after ``torch.manual_seed(seed)``."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return build_model(run_cfg).eval()
    finally:
        torch.random.set_rng_state(state)


def _log_wandb(cfg: DictConfig, run_cfg: DictConfig, report: dict[str, Any], out: Path) -> None:
    """Log accuracies and the table to W&B when the run used it (optional; never fatal)."""
    if cfg.wandb == "disabled" or "wandb" not in (run_cfg.get("logger") or {}):
        return
    try:
        import wandb
    except ImportError:
        log.info("the run used W&B but wandb is not installed: not logged there")
        return
    mode = str(cfg.wandb)
    if mode == "auto":
        mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
    wcfg = run_cfg.logger.wandb
    try:
        run = wandb.init(
            project=wcfg.get("project"),
            entity=wcfg.get("entity"),
            group=wcfg.get("group"),
            job_type="evaluate",
            dir=str(out),
            mode=mode,
            config={"task": report["task"], "run_dir": report["run_dir"]},
        )
        try:
            run.log(
                {
                    f"eval/{report['task']}/{name}_acc": src["accuracy"]
                    for name, src in report["sources"].items()
                }
            )
            run.summary["eval_table"] = report["table"]
        finally:
            wandb.finish()
    except Exception as exc:  # noqa: BLE001 - logging must not fail the evaluation
        log.warning("W&B logging failed (%s); the report is in %s", exc, out)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Probe the run's frozen features (and baselines) on ``cfg.task``; return the report."""
    task = str(cfg.task)
    if task not in TASKS:
        raise UserError(f"task={task} is not one of {', '.join(TASKS)}")
    run_dir, ckpt_path, run_cfg, model = load_run(cfg)
    with user_errors("data"):
        datamodule = instantiate(data_config(cfg, run_cfg))
        if hasattr(datamodule, "prepare_data"):
            datamodule.prepare_data()
        datamodule.setup("fit")
    image = is_image_data(datamodule)
    have = available_tasks(datamodule)
    if task not in have:
        raise UserError(
            f"task={task}: {type(datamodule).__name__} has no labels for it (available: "
            f"{', '.join(have) or 'none'}); classes need data.pattern with a (?P<label>...) group, "
            "speakers a (?P<speaker>...) group, phones a converted_aligned_phones.txt"
        )
    with user_errors("probe settings"):
        settings = EvalSettings.from_mapping(
            {
                **OmegaConf.to_container(cfg.probe, resolve=True),
                "feature": cfg.feature,
                "layer": cfg.layer,
                "pool": cfg.pool,
                "device": cfg.device,
                "precision": cfg.precision,
            }
        )
    seed = cfg.random_init_seed if cfg.random_init_seed is not None else run_cfg.get("seed", 0)
    tag = weights_tag(ckpt_path)
    sources = [Source("cpc", (model.encoder, model.context), tag)]
    for name in baselines_of(cfg.baseline, image):
        if name == "random_init":
            rand = random_init_model(run_cfg, int(seed))
            sources.append(Source(name, (rand.encoder, rand.context), f"seed{seed}:{tag}"))
        else:
            sources.append(Source(name, None, "mfcc"))
    out = Path(cfg.out_dir).expanduser().resolve() if cfg.out_dir else run_dir / "eval"
    data_cfg = OmegaConf.to_container(data_config(cfg, run_cfg), resolve=True)
    start = time.perf_counter()
    with user_errors("evaluation"):
        reports = evaluate_sources(
            sources,
            datamodule,
            [task],
            settings,
            data_key=data_cfg,
            out_dir=out,
            meta={
                "run_dir": str(run_dir),
                "checkpoint": str(ckpt_path) if ckpt_path else None,
                "data": {
                    "target": data_cfg.get("_target_"),
                    "root": str(getattr(datamodule, "root", data_cfg.get("root"))),
                    "window": data_cfg.get("window"),
                    "utterances": getattr(datamodule, "stats", {}) or None,
                },
                "random_init_seed": int(seed),
            },
        )
    if task not in reports:
        raise UserError(f"task={task}: no labelled rows in both the training and held-out splits")
    report = reports[task]
    report["wall_seconds"] = time.perf_counter() - start
    (out / f"{task}.json").write_text(_json(report))
    print(f"\nLinear probe, task={task}, feature={settings.feature} (held-out accuracy):\n")
    print(report["table"])
    print(f"\nreport: {out / (task + '.json')}")
    _log_wandb(cfg, run_cfg, report, out)
    return report


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, indent=2)


@hydra.main(config_path="conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Hydra entry point: returns the trained model's held-out accuracy."""
    try:
        report = evaluate(cfg)
    except UserError as exc:
        print(f"cpc_lightning.evaluate: error: {exc}", file=sys.stderr)
        sys.exit(2)
    return float(report["sources"]["cpc"]["accuracy"])


if __name__ == "__main__":
    main()
