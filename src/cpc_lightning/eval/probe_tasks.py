"""The linear-probe tasks' runner: probe every feature source on every task, write the reports.

Every source sees the same items, split and probe settings. A :class:`ProbeReport` holds, per
source, the accuracy (mean and std over ``settings.seeds``), per-class accuracy and confusion
matrix (first seed), data counts, extraction times and the Markdown table.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from cpc_lightning.errors import UserError
from cpc_lightning.eval.cache import TaskFeatures, extract_features
from cpc_lightning.eval.features import Source
from cpc_lightning.eval.linear_probe import ProbeResult, fit_probe, restrict_to_seen
from cpc_lightning.eval.report import ProbeReport, markdown_table, write_report
from cpc_lightning.eval.settings import EvalSettings
from cpc_lightning.eval.tasks import Split, Task, TaskInputs

log = logging.getLogger(__name__)


def accuracy_table(
    results: Mapping[str, Mapping[str, ProbeResult]], tasks: Sequence[str], probe: str = ""
) -> str:
    """Rows = feature sources (e.g. CPC, random init) and the majority class, columns = tasks;
    test accuracy in %."""
    rows: dict[str, dict[str, float | None]] = {
        name: {t: 100 * per_task[t].accuracy for t in tasks if t in per_task}
        for name, per_task in results.items()
    }
    chance = {}
    for t in tasks:
        row = next((r[t] for r in results.values() if t in r), None)
        if row is not None:
            chance[t] = 100 * row.chance
    rows["majority class"] = chance
    return markdown_table(rows, tasks, f"probe: {probe}" if probe else "")


def _probe_runs(task: str, train: Split, test: Split, k: int, s: EvalSettings) -> list[ProbeResult]:
    return [
        fit_probe(
            task,
            train,
            test,
            num_classes=k,
            epochs=s.epochs,
            lr=s.lr,
            weight_decay=s.weight_decay,
            batch_size=s.batch_size,
            hidden=s.hidden,
            seed=seed,
            max_train=s.max_train_rows,
            min_steps=s.min_steps,
        )
        for seed in s.seeds
    ]


def _source_entry(
    src: Source, runs: list[ProbeResult], train: Split, test: Split, dropped: int, extract: dict
) -> dict[str, Any]:
    accs = [r.accuracy for r in runs]
    first = runs[0]
    return {
        "label": src.label,
        "accuracy": float(np.mean(accs)),
        "accuracy_std": float(np.std(accs)),
        "accuracies": accs,
        "seeds": [r.settings["seed"] for r in runs],
        "train_accuracy": first.train_accuracy,
        "chance_majority": first.chance,
        "num_classes": first.num_classes,
        "dim": int(train[0].shape[1]),
        "counts": {
            "train_rows": int(len(train[1])),
            "train_rows_used": first.num_train,
            "test_rows": int(len(test[1])),
            "test_rows_dropped_unseen_class": dropped,
        },
        "per_class_accuracy": first.per_class,
        "confusion": first.confusion,
        "extract": extract,
    }


def _task_report(
    task: str,
    sources: Sequence[Source],
    feats: Mapping[str, tuple[TaskFeatures, dict[str, Any]]],
    names: list[str],
    settings: EvalSettings,
    meta: Mapping[str, Any],
    table_rows: dict[str, dict[str, ProbeResult]],
) -> ProbeReport:
    """The report of one task (``sources`` empty when no source has rows for it)."""
    report = ProbeReport(
        task=task,
        meta=dict(meta),
        feature=settings.feature,
        layer=settings.layer,
        pool=settings.pool,
        class_names=names,
        probe={"kind": settings.probe_kind, "linear": settings.linear, **asdict(settings)},
        sources={},
    )
    for src in sources:
        task_feats, info = feats[src.name]
        if task not in task_feats:
            continue
        train, test = task_feats[task]["train"], task_feats[task]["test"]
        test, dropped = restrict_to_seen(train, test)
        if len(test[1]) == 0:
            log.warning("%s/%s: no test rows with a class seen in training", task, src.name)
            continue
        k = max(len(names), int(max(train[1].max(), test[1].max())) + 1)
        runs = _probe_runs(task, train, test, k, settings)
        mean = ProbeResult(
            **{**asdict(runs[0]), "accuracy": float(np.mean([r.accuracy for r in runs]))}
        )
        table_rows.setdefault(src.label, {})[task] = mean
        report.sources[src.name] = _source_entry(
            src, runs, train, test, dropped, info.get(task, {})
        )
    return report


def evaluate_sources(
    sources: Sequence[Source],
    datamodule: Any,
    tasks: Sequence[Task],
    settings: EvalSettings,
    data_key: Mapping[str, Any],
    out_dir: Path | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, ProbeReport]:
    """Probe every source on every (linear-probe) task; write ``<out_dir>/<task>.json``; return
    the reports of the tasks some source had rows for."""
    cache_dir = Path(out_dir) / "cache" if out_dir is not None else None
    feats = {
        src.name: extract_features(
            src, datamodule, tasks, settings, data_key, cache_dir, settings.seeds[0]
        )
        for src in sources
    }
    reports: dict[str, ProbeReport] = {}
    table_rows: dict[str, dict[str, ProbeResult]] = {}
    for task in tasks:
        names = task.class_names(datamodule) if task.class_names else []
        report = _task_report(task.name, sources, feats, names, settings, meta or {}, table_rows)
        if not report.sources:
            continue
        report.table = accuracy_table(
            {lab: {task.name: r[task.name]} for lab, r in table_rows.items() if task.name in r},
            [task.name],
            settings.probe_kind,
        )
        reports[task.name] = report
    if reports:
        done = [t.name for t in tasks if t.name in reports]
        combined = accuracy_table(table_rows, done, settings.probe_kind)
        for name, r in reports.items():
            r.combined_table = combined
            if out_dir is not None:
                write_report(Path(out_dir), name, r)
    return reports


def run_probe_task(task: Task, inputs: TaskInputs) -> ProbeReport:
    """The runner of a linear-probe task (``evaluate task=<task>``)."""
    i = inputs
    reports = evaluate_sources(
        i.sources, i.datamodule, [task], i.settings, i.data_key, i.out_dir, i.meta
    )
    if task.name not in reports:
        raise UserError(
            f"task={task.name}: no labelled rows in both the training and held-out splits"
        )
    return reports[task.name]


def combined_table(reports: Mapping[str, ProbeReport]) -> str:
    """The Markdown table of every task in ``reports`` (sources as rows)."""
    return next(iter(reports.values())).combined_table if reports else ""


def accuracy_summary(reports: Mapping[str, ProbeReport]) -> dict[str, float]:
    """Flat ``probe/<task>/<source>`` -> accuracy (for loggers)."""
    return {
        f"probe/{task}/{name}": acc
        for task, rep in reports.items()
        for name in rep.sources
        if (acc := rep.figure(name, "accuracy")) is not None and not math.isnan(acc)
    }
