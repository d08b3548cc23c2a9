"""Which feature sources a probe run compares, and the probes that end a training run.

Beside the trained model every comparison shows, under the same probe and split, the same
architecture at its initial weights (``random_init``) and, for audio, MFCC features (``mfcc``),
for images the raw pixels of the same preprocessed images (``pixels``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from cpc_lightning.build import build_datamodule
from cpc_lightning.errors import UserError
from cpc_lightning.eval.features import Source
from cpc_lightning.eval.probe_tasks import accuracy_summary, combined_table, evaluate_sources
from cpc_lightning.eval.registry import get_task, tasks_of
from cpc_lightning.eval.settings import RunProbeSettings
from cpc_lightning.run_dir import RunDir

log = logging.getLogger(__name__)

BASELINES = ("random_init", "mfcc", "pixels")
#: The baselines of one modality only.
ONLY = {"mfcc": "audio", "pixels": "image"}


def baseline_names(value: Any, modality: str) -> list[str]:
    """``all`` | ``none`` | a name | a list -> baseline names (MFCC only for audio, pixels only
    for images)."""
    if isinstance(value, str):
        names = {"all": list(BASELINES), "none": []}.get(value, [value])
    else:
        names = [str(v) for v in value or []]
    bad = [n for n in names if n not in BASELINES]
    if bad:
        raise UserError(f"baseline={bad} is not one of all, none, {', '.join(BASELINES)}")
    for name, only in ONLY.items():
        if name in names and modality != only:
            log.info("baseline %s skipped: %s data", name, modality)
            names.remove(name)
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
        else:  # mfcc, pixels: no weights
            sources.append(Source(name, None, name))
    return sources


def end_of_training_probes(
    settings: RunProbeSettings,
    model: Any,
    initial: Any,
    datamodule: Any,
    data_config: Mapping[str, Any],
    run_dir: Path,
    tag: str | None,
    loggers: list[Any] | None = None,
) -> tuple[str, dict[str, float]]:
    """Linear probes on frozen features (as ``evaluate`` runs them): the trained model vs. the
    same nets at their initial weights (``initial``), MFCC for audio and the raw pixels for
    images (``settings.baselines``),
    on ``datamodule`` (the training data, or :func:`probe_datamodule` of ``probe.data``; built
    from ``data_config``). Reports go to ``<run_dir>/eval/<task>.json``, accuracies
    (``probe/<task>/<source>``) to ``loggers``; returns the table and those accuracies."""
    have = tasks_of(datamodule)
    tasks = [t for t in settings.tasks if t in have] or (["classes"] if "classes" in have else [])
    if not tasks:
        log.info("probe skipped: %s has no labels for %s", type(datamodule).__name__, tasks)
        return "", {}
    baselines = baseline_names(settings.baselines, datamodule.modality)
    sources = comparison_sources(model, tag, baselines, lambda: initial, f"init:{tag}")
    start = time.perf_counter()
    reports = evaluate_sources(
        sources,
        datamodule,
        [get_task(t) for t in tasks],
        settings.probe,
        data_key=data_config,
        out_dir=RunDir(run_dir).eval,
        meta={
            "run_dir": str(run_dir),
            "checkpoint": "in-memory model at the end of training",
            "data": {"target": data_config.get("_target_"), "root": str(datamodule.root)},
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
