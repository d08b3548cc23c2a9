"""Which feature sources a probe run compares, and the probes that end a training run.

Beside the trained model every comparison shows, under the same probe and split, the same
architecture at its initial weights (``random_init``) and, for audio, MFCC features (``mfcc``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cpc_lightning.errors import UserError
from cpc_lightning.eval.features import Source
from cpc_lightning.eval.report import accuracy_summary, combined_table, evaluate_sources
from cpc_lightning.eval.settings import EvalSettings

log = logging.getLogger(__name__)

BASELINES = ("random_init", "mfcc")


def baseline_names(value: Any, modality: str) -> list[str]:
    """``all`` | ``none`` | a name | a list -> baseline names (MFCC only for audio)."""
    if isinstance(value, str):
        names = {"all": list(BASELINES), "none": []}.get(value, [value])
    else:
        names = [str(v) for v in value or []]
    bad = [n for n in names if n not in BASELINES]
    if bad:
        raise UserError(f"baseline={bad} is not one of all, none, {', '.join(BASELINES)}")
    if modality == "image" and "mfcc" in names:
        log.info("baseline mfcc skipped: image data")
        names.remove("mfcc")
    return names


def comparison_sources(
    model: Any, tag: str | None, baselines: list[str], random_init: Any, init_tag: str | None
) -> list[Source]:
    """``cpc`` (the trained ``model``) and the chosen baselines; ``random_init`` is the model at
    its initial weights (built only when asked for: a callable returning it)."""
    sources = [Source("cpc", model, tag)]
    for name in baselines:
        if name == "random_init":
            sources.append(Source(name, random_init(), init_tag))
        else:
            sources.append(Source(name, None, "mfcc"))
    return sources


def end_of_training_probes(
    cfg: DictConfig,
    model: Any,
    initial: Any,
    datamodule: Any,
    tag: str | None,
    loggers: list[Any] | None = None,
) -> tuple[str, dict[str, float]]:
    """Linear probes on frozen features (as ``evaluate`` runs them): the trained model vs. the
    same nets at their initial weights and MFCC for audio (``probe.baselines``), on
    ``datamodule`` (the training data, or :func:`probe_datamodule` of ``probe.data``). Reports go
    to ``<run dir>/eval/<task>.json``, accuracies (``probe/<task>/<source>``) to the run's
    loggers; returns the table and those accuracies."""
    data_cfg = cfg.probe.get("data") or cfg.data  # ``datamodule`` is built from it
    have = datamodule.tasks
    tasks = [t for t in cfg.probe.tasks if t in have] or (["classes"] if "classes" in have else [])
    if not tasks:
        log.info("probe skipped: %s has no labels for %s", type(datamodule).__name__, tasks)
        return "", {}
    out_dir = Path(cfg.paths.output_dir)
    settings = EvalSettings.from_mapping(
        {**OmegaConf.to_container(cfg.probe, resolve=True), "seeds": [int(cfg.seed)]}
    )
    baselines = baseline_names(cfg.probe.get("baselines", "all"), datamodule.modality)
    sources = comparison_sources(model, tag, baselines, lambda: initial, f"init:{tag}")
    start = time.perf_counter()
    reports = evaluate_sources(
        sources,
        datamodule,
        tasks,
        settings,
        data_key=OmegaConf.to_container(data_cfg, resolve=True),
        out_dir=out_dir / "eval",
        meta={
            "run_dir": str(out_dir),
            "checkpoint": "in-memory model at the end of training",
            "data": {"target": data_cfg.get("_target_"), "root": str(datamodule.root)},
        },
    )
    seconds = time.perf_counter() - start
    log.info("end-of-run probes took %.1f s", seconds)
    accuracies = accuracy_summary(reports)
    for lg in loggers or []:
        lg.log_metrics({**accuracies, "probe/wall_seconds": seconds})
        lg.save()
    if not reports:
        return "", accuracies
    return combined_table(reports) + f"\n(probe wall time {seconds:.1f} s)", accuracies


def probe_datamodule(data: DictConfig, trained_on: Any) -> Any:
    """The DataModule of ``probe.data``, set up, at the training data's sample rate."""
    from cpc_lightning.build import build_datamodule

    probe = build_datamodule(data)
    rate, want = getattr(probe, "sample_rate", None), getattr(trained_on, "sample_rate", None)
    if rate != want:
        raise UserError(
            f"probe.data.sample_rate={rate} differs from the training data's {want}: set "
            f"probe.data.sample_rate={want}"
        )
    probe.prepare_data()
    probe.setup()
    return probe
