"""The linear-probe tasks' runner: probe every feature source on every task, write the reports.

Every source sees the same items, split and probe settings. A :class:`ProbeReport` holds, per
source, the accuracy (mean and std over ``settings.seeds``), per-class accuracy and confusion
matrix (first seed), data counts, extraction times and the Markdown table.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from cpc_lightning.errors import UserError
from cpc_lightning.eval.cache import TaskFeatures, extract_features
from cpc_lightning.eval.compare import compare_accuracy, comparison_lines
from cpc_lightning.eval.features import Source, pixel_label
from cpc_lightning.eval.linear_probe import (
    ProbeResult,
    choose_weight_decay,
    fit_probe,
    restrict_to_seen,
)
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


def _probe_runs(
    task: str, train: Split, test: Split, k: int, s: EvalSettings
) -> tuple[list[ProbeResult], dict[str, Any]]:
    """One probe per seed, with the weight decay chosen on held-out training rows when
    ``s.weight_decay`` lists several (the choice, per candidate, in the second value)."""
    fit = dict(
        epochs=s.epochs,
        lr=s.lr,
        batch_size=s.batch_size,
        hidden=s.hidden,
        max_train=s.max_train_rows,
        min_steps=s.min_steps,
    )
    wd, choice = s.weight_decays[0], {}
    if len(s.weight_decays) > 1:
        wd, dev_acc, n_dev = choose_weight_decay(
            task, train, k, s.weight_decays, s.dev_fraction, seed=s.seeds[0], **fit
        )
        choice = {"dev_accuracies": dev_acc, "dev_rows": n_dev, "dev_fraction": s.dev_fraction}
    runs = [
        fit_probe(task, train, test, num_classes=k, weight_decay=wd, seed=seed, **fit)
        for seed in s.seeds
    ]
    return runs, {"weight_decay": wd, **choice}


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


def _probe_source(
    task: str, names: list[str], feats: TaskFeatures, settings: EvalSettings, unit: str | None
) -> tuple[list[ProbeResult], dict[str, Any], Split, Split, int] | None:
    """The probes of one source on ``task`` (None: no rows for it); ``unit``: one test row per
    item, so the entry keeps each item's correctness (mean over the seeds)."""
    if task not in feats:
        return None
    train, test = feats[task]["train"], feats[task]["test"]
    test, dropped = restrict_to_seen(train, test)
    if len(test[1]) == 0:
        log.warning("%s: no test rows with a class seen in training", task)
        return None
    k = max(len(names), int(max(train[1].max(), test[1].max())) + 1)
    runs, extra = _probe_runs(task, train, test, k, settings)
    if unit is not None:
        extra["item_correct"] = np.mean([r.correct for r in runs], axis=0).tolist()
    return runs, extra, train, test, dropped


def _task_report(
    task: str,
    sources: Sequence[Source],
    feats: Mapping[str, tuple[TaskFeatures, dict[str, Any]]],
    names: list[str],
    settings: EvalSettings,
    meta: Mapping[str, Any],
    table_rows: dict[str, dict[str, ProbeResult]],
    unit: str | None = None,
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
        got = _probe_source(task, names, task_feats, settings, unit)
        if got is None:
            continue
        runs, extra, train, test, dropped = got
        mean = ProbeResult(
            **{**asdict(runs[0]), "accuracy": float(np.mean([r.accuracy for r in runs]))}
        )
        table_rows.setdefault(src.label, {})[task] = mean
        entry = _source_entry(src, runs, train, test, dropped, info.get(task, {}))
        report.sources[src.name] = {**entry, **extra}
    if unit is not None and report.sources:
        report.comparison = compare_accuracy(report.sources, unit, settings.seeds[0])
    return report


def _table_notes(report: ProbeReport, settings: EvalSettings, unit: str | None) -> str:
    """What goes under a task's table: the learned features, the weight decays chosen, the
    paired intervals."""
    layer = "" if settings.layer is None else f" layer {settings.layer}"
    out = f"\n\nlearned features: {settings.feature}{layer}, pooled {settings.pool}"
    if len(settings.weight_decays) > 1:
        chosen = ", ".join(f"{e['label']} {e['weight_decay']:g}" for e in report.sources.values())
        share = f"{100 * settings.dev_fraction:g} %"
        out += (
            f"\n\nweight decay chosen among {settings.weight_decays} on {share} of the "
            f"training {(unit or 'row').removeprefix('test ')}s (never the test split): {chosen}"
        )
    if report.comparison:
        out += comparison_lines(report.comparison, report.sources)
    return out


def item_unit(task: Task, datamodule: Any) -> str | None:
    """What one test row of ``task`` is when it is one item (an image, an utterance of
    ``classes``): the unit of the paired bootstrap; None for frame / window rows."""
    if getattr(datamodule, "modality", "audio") == "image":
        return "test image"
    return "test utterance" if task.name == "classes" else None


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
    modality = getattr(datamodule, "modality", "audio")
    settings = settings.for_modality(modality)
    if modality == "image":
        sources = [
            replace(s, title=pixel_label(datamodule, settings)) if s.name == "pixels" else s
            for s in sources
        ]
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
        unit = item_unit(task, datamodule)
        report = _task_report(
            task.name, sources, feats, names, settings, meta or {}, table_rows, unit
        )
        if not report.sources:
            continue
        report.table = accuracy_table(
            {lab: {task.name: r[task.name]} for lab, r in table_rows.items() if task.name in r},
            [task.name],
            settings.probe_kind,
        ) + _table_notes(report, settings, unit)
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
