"""The evaluation tasks, in one registry: ``name -> Task`` (the labels it needs, its runner, its
report type and so its headline). ``evaluate``, the end-of-run probes and the reports' readers
look tasks up here; a DataModule only says which labels it has (``labels``).

Adding a task: :func:`register` a :class:`~cpc_lightning.eval.tasks.Task` (a linear-probe task:
``run=run_probe_task`` with a ``rows`` and a ``class_names`` function) and give the DataModules
that have its labels that label kind in ``labels``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cpc_lightning.errors import UserError
from cpc_lightning.eval.probe_tasks import run_probe_task
from cpc_lightning.eval.report import ABXReport, PERReport, ProbeReport, Report, UnitsReport
from cpc_lightning.eval.speech_tasks import run_abx_task, run_phone_recognition_task
from cpc_lightning.eval.tasks import (
    Task,
    TaskInputs,
    class_names,
    class_rows,
    phone_names,
    phone_rows,
    speaker_names,
    speaker_rows,
)
from cpc_lightning.eval.units import run_units_task

#: Every task ``evaluate task=<name>`` knows, in the order errors and tables list them.
TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Add (or replace) ``task``; return it."""
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    """The task called ``name``; a one-line ``UserError`` naming the known ones if none."""
    if name not in TASKS:
        raise UserError(f"task={name} is not one of {', '.join(TASKS)}")
    return TASKS[name]


def tasks_of(datamodule: Any) -> list[str]:
    """The tasks ``datamodule`` has every needed label for (``datamodule.labels``)."""
    have = set(datamodule.labels)
    return [name for name, task in TASKS.items() if task.needs <= have]


def check_task(task: Task, datamodule: Any) -> None:
    """A ``UserError`` when ``datamodule`` lacks the labels ``task`` needs."""
    have = tasks_of(datamodule)
    if task.name in have:
        return
    why = "".join(f"; {p}" for p in getattr(datamodule, "label_problems", []))
    raise UserError(
        f"task={task.name}: {type(datamodule).__name__} has no labels for it (available: "
        f"{', '.join(have) or 'none'}){why}; classes need data.pattern with a "
        "(?P<label>...) group, speakers a (?P<speaker>...) group, phones, abx and "
        "phone_recognition frame labels or phone sequences (e.g. data=timit)"
    )


def run_task(task: Task, inputs: TaskInputs) -> Report:
    """Run ``task`` on ``inputs``; its typed report."""
    return task.run(task, inputs)


def report_type(name: str | None) -> type[Report]:
    """The report type of task ``name`` (:class:`Report` for an unknown one)."""
    task = TASKS.get(name or "")
    return task.report if task is not None else Report


def report_from_json(data: Mapping[str, Any], task: str | None = None) -> Report:
    """A typed report of its JSON (``task``: when the JSON does not name it)."""
    return report_type(data.get("task", task)).from_json(data)


def read_report(path: Path) -> Report:
    """The typed report of ``<dir>/<task>.json`` (any version; the task from the file name
    when the JSON does not name it)."""
    return report_from_json(json.loads(Path(path).read_text()), Path(path).stem)


def headline(report: Mapping[str, Any] | Report) -> float:
    """The trained model's main figure (accuracy, ABX within error or PER; NaN if none)."""
    typed = report if isinstance(report, Report) else report_from_json(report)
    return typed.headline


for _task in (
    Task("phones", frozenset({"phones"}), run_probe_task, ProbeReport, phone_rows, phone_names),
    Task(
        "speakers",
        frozenset({"speakers"}),
        run_probe_task,
        ProbeReport,
        speaker_rows,
        speaker_names,
    ),
    Task(
        "classes",
        frozenset({"classes"}),
        run_probe_task,
        ProbeReport,
        class_rows,
        class_names,
        image_labels="label",
    ),
    Task("abx", frozenset({"phones"}), run_abx_task, ABXReport),
    Task(
        "phone_recognition", frozenset({"phone_sequences"}), run_phone_recognition_task, PERReport
    ),
    Task("units", frozenset({"phones"}), run_units_task, UnitsReport),
):
    register(_task)
