"""Weights & Biases, offline-safe: one rule for "have credentials" in ``train``, ``evaluate`` and
the sweep summary, and what each of them puts into W&B.

Without an API key (``WANDB_API_KEY`` or a netrc entry for the W&B host) runs log offline, never
prompt, and print the ``wandb sync`` command. ``wandb`` is imported only when used.

Runs, groups and job types:

- ``train``: one W&B run (``job_type=train``; a sweep point ``sweep_point``) in a group: the
  sweep's (``<task_name>-<sweep dir name>``), else the run's own (``<task_name>-<run dir name>``).
  Its id, group and project go to the run dir (``RunDir.wandb_run``). At the end it gets the
  end-of-run probe table (``probe/table``, a ``wandb.Table``; the scores
  ``probe/<task>/<source>`` are in its summary) and the per-k figure (``plots/per_k``).
- ``evaluate``: a new run in the training run's group (``job_type=evaluate``, named
  ``<training run>-<task>``): the report's table (``eval/<task>/table``) and figures
  (``eval/<task>/<source>/<figure>``, also in its summary). Not the training run itself: wandb
  cannot append to an offline run, and one rule online and offline keeps them alike.
- a multirun: a run ``<group>-summary`` in the sweep's group (``job_type=sweep_summary``): the
  summary table (``sweep/table``) and plot (``sweep/plot``).

Every table is read from the Markdown table that the run's result file, the reports and the model
card (``export to=safetensors``) hold (:func:`markdown_rows`), so W&B shows their numbers.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import netrc
import os
import secrets
import string
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from cpc_lightning.errors import UserError
from cpc_lightning.eval.registry import report_from_json
from cpc_lightning.eval.report import Report
from cpc_lightning.run_dir import RunDir, write_json
from cpc_lightning.training.per_k_plot import per_k_figure

log = logging.getLogger(__name__)

OFFLINE_MODES = ("offline", "dryrun")
TRAIN, SWEEP_POINT, EVALUATE, SWEEP_SUMMARY = "train", "sweep_point", "evaluate", "sweep_summary"
#: Where an older release kept the W&B run id of a run dir (read when resuming).
LEGACY_ID_FILE = "wandb_run_id.txt"


def require_wandb() -> None:
    """A :class:`UserError` with the install command when wandb is missing."""
    if importlib.util.find_spec("wandb") is None:
        raise UserError("logger=wandb needs the wandb package: pip install 'cpc_lightning[wandb]'")


def have_credentials() -> bool:
    """``WANDB_API_KEY`` is set, or ``~/.netrc`` (``$NETRC``) has an entry for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1]
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host.split("/")[0]) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def choose_mode(requested: str | None = None) -> str:
    """``online`` or ``offline``: ``requested`` (or ``WANDB_MODE``) if given, else online only
    with credentials."""
    mode = requested if requested not in (None, "auto") else os.environ.get("WANDB_MODE")
    if mode:
        return "offline" if mode in OFFLINE_MODES else str(mode)
    return "online" if have_credentials() else "offline"


def _quiet_offline() -> None:
    """Offline for this process and its children: no prompt, no console capture."""
    os.environ["WANDB_MODE"] = "offline"
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_CONSOLE", "off")


def run_group(task_name: str, folder: str | Path) -> str:
    """The W&B group of a sweep dir or a run dir: ``<task_name>-<folder name>``."""
    return f"{task_name}-{Path(str(folder)).name}"


def new_run_id() -> str:
    """A W&B run id as wandb makes them: 8 random lowercase letters and digits."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


def read_run_record(run_dir: Path) -> dict[str, Any]:
    """The W&B run a run dir logged to (``id``, ``project``, ``group``, ...); empty if none."""
    run = RunDir(run_dir)
    try:
        return json.loads(run.wandb_run.read_text())
    except (OSError, ValueError):
        legacy = run.root / LEGACY_ID_FILE
        return {"id": legacy.read_text().strip()} if legacy.is_file() else {}


def logger_kwargs(
    cfg: DictConfig, node: DictConfig, out_dir: Path, resuming: bool, group: str, sweep: bool
) -> dict[str, Any]:
    """``WandbLogger`` keyword arguments: offline without credentials, the ``group`` and job type
    (``sweep_point`` in a multirun, else ``train``), the same run id when resuming online; the
    run's W&B identity is written to ``RunDir.wandb_run``."""
    require_wandb()
    mode = "offline" if node.get("offline") else choose_mode()
    if mode == "offline":
        if not node.get("offline") and not os.environ.get("WANDB_MODE"):
            log.info("W&B: no API key or netrc entry found, logging offline")
        _quiet_offline()
    kwargs: dict[str, Any] = {"config": OmegaConf.to_container(cfg, resolve=True)}
    if node.get("group") is None:
        kwargs["group"] = group
    if node.get("job_type") is None:
        kwargs["job_type"] = SWEEP_POINT if sweep else TRAIN
    if node.get("id") is None:
        # Online, a resumed run continues the same W&B run. (Offline, wandb 0.31 records
        # nothing for a run given both an id and resume: each process gets its own run.)
        old = read_run_record(out_dir).get("id") if resuming and mode != "offline" else None
        kwargs["id"] = old or new_run_id()
        if mode != "offline":
            kwargs["resume"] = "allow"
    if rank_zero_only.rank == 0:
        keys = ("id", "project", "entity", "name", "group", "job_type")
        record = {k: kwargs.get(k, node.get(k)) for k in keys}
        write_json(RunDir(out_dir).wandb_run, {**record, "mode": mode})
    return kwargs


def finish() -> None:
    """Close the W&B run if this process started one; say how to sync an offline run."""
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb is not None else None
    if run is None:
        return
    offline = bool(getattr(run.settings, "_offline", False)) or (
        os.environ.get("WANDB_MODE") in OFFLINE_MODES
    )
    run_dir = Path(run.dir).parent
    wandb.finish()
    if offline:
        print(f"W&B run logged offline in {run_dir}; upload it later with: wandb sync {run_dir}")


def _number(text: str) -> float | str | None:
    """A cell of :func:`~cpc_lightning.eval.report.markdown_table`: ``-`` -> None, ``12.5 %``
    -> 12.5; anything else as it is."""
    if text == "-":
        return None
    try:
        return float(text.removesuffix("%").strip())
    except ValueError:
        return text


def markdown_rows(text: str) -> tuple[list[str], list[list[Any]]]:
    """The header and rows of the first Markdown table in ``text`` (the notes below it are left
    out); value cells as numbers, as the table prints them (``51.2 %`` -> 51.2)."""
    lines: list[str] = []
    for line in (ln.strip() for ln in text.splitlines()):
        if line.startswith("|"):
            lines.append(line)
        elif lines:
            break
    if len(lines) < 2:
        return [], []

    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split("|")]

    rows = [cells(line) for line in lines[2:]]
    return cells(lines[0]), [[row[0], *(_number(c) for c in row[1:])] for row in rows]


def wandb_table(markdown: str) -> Any:
    """A ``wandb.Table`` of a Markdown table (:func:`markdown_rows`)."""
    import wandb

    columns, rows = markdown_rows(markdown)
    return wandb.Table(columns=columns, data=rows)


def report_figures(report: Report) -> dict[str, float]:
    """``eval/<task>/<source>/<figure>`` for each figure of the report's type (``FIGURES``:
    accuracy; ABX within, across; PER; PNMI, purities) of each source."""
    return {
        f"eval/{report.task}/{source}/{name}": value
        for source in report.sources or {}
        for name in report.FIGURES
        if (value := report.figure(source, name)) is not None
    }


def log_training_results(loggers: Sequence[Any], run_dir: Path, probe_table: str | None) -> None:
    """Into the W&B run of ``loggers`` (if one is W&B): the end-of-run probe table
    (``probe/table``) and the per-k figure of ``metrics.csv`` (``plots/per_k``). Never fatal."""
    runs = [lg for lg in loggers if isinstance(lg, WandbLogger)]
    if not runs:
        return
    try:
        import wandb

        logged: dict[str, Any] = {}
        if probe_table:
            logged["probe/table"] = wandb_table(probe_table)
        figure = per_k_figure(RunDir(run_dir).metrics)
        if figure is not None:
            logged["plots/per_k"] = wandb.Image(figure)
        for lg in runs:
            if logged:
                lg.experiment.log(logged)
    except Exception as exc:  # noqa: BLE001 - logging must not fail the run
        log.warning("W&B: the probe table and plots were not logged (%s)", exc)


def _start_run(wcfg: DictConfig, folder: Path, mode: str, **init: Any) -> Any:
    """``wandb.init`` with the logger's project, entity and tags, files under ``folder``."""
    import wandb

    if mode == "offline":
        _quiet_offline()
    folder.mkdir(parents=True, exist_ok=True)
    tags = list(wcfg.get("tags") or [])
    project, entity = wcfg.get("project"), wcfg.get("entity")
    return wandb.init(project=project, entity=entity, tags=tags, dir=str(folder), mode=mode, **init)


def _wandb_node(cfg: DictConfig | None) -> DictConfig | None:
    node = OmegaConf.select(cfg, "logger.wandb") if cfg is not None else None
    return node if isinstance(node, DictConfig) else None


def log_report(
    run_cfg: DictConfig, run_dir: Path, report: Report | dict, out: Path, requested: str
) -> None:
    """Log an evaluation report to W&B when the run used it (``requested``: the ``wandb``
    setting of ``evaluate``: auto | offline | online | disabled): a new run in the training
    run's group, ``job_type=evaluate``. Never fatal."""
    wcfg = _wandb_node(run_cfg)
    if requested == "disabled" or wcfg is None:
        return
    if importlib.util.find_spec("wandb") is None:
        log.info("the run used W&B but wandb is not installed: not logged there")
        return
    typed = report if isinstance(report, Report) else report_from_json(report)
    task, trained = typed.task, read_run_record(run_dir)
    mode = "offline" if wcfg.get("offline") else choose_mode(requested)
    meta = typed.meta
    config = {"task": task, "run_dir": str(run_dir), "train_run_id": trained.get("id")}
    config.update({k: meta.get(k) for k in ("checkpoint", "global_step") if k in meta})
    name = f"{trained.get('name') or trained.get('id') or Path(run_dir).name}-{task}"
    try:
        group = trained.get("group") or wcfg.get("group")
        run = _start_run(wcfg, out, mode, group=group, job_type=EVALUATE, name=name, config=config)
        try:
            run.log({f"eval/{task}/table": wandb_table(typed.table or ""), **report_figures(typed)})
        finally:
            finish()
    except Exception as exc:  # noqa: BLE001 - logging must not fail the evaluation
        log.warning("W&B logging failed (%s); the report is in %s", exc, out)


def _csv_table(path: Path) -> Any:
    """A ``wandb.Table`` of a CSV file (numbers as numbers, empty cells as None)."""
    import wandb

    with open(path, newline="") as fh:
        header, *rows = list(csv.reader(fh))
    cell = lambda text: None if text == "" else _number(text)  # noqa: E731
    return wandb.Table(columns=header, data=[[cell(c) for c in row] for row in rows])


def log_sweep_summary(config: DictConfig, sweep_dir: Path, table: Path, plot: Path) -> None:
    """When the sweep used ``logger=wandb``: a run ``<group>-summary`` in the sweep's group
    (``job_type=sweep_summary``) holding the summary ``table`` (``sweep/table``) and ``plot``
    (``sweep/plot``). Never fatal."""
    wcfg = _wandb_node(config)
    if wcfg is None or importlib.util.find_spec("wandb") is None:
        return
    try:
        import wandb

        group = wcfg.get("group") or run_group(str(config.task_name), sweep_dir)
        mode = "offline" if wcfg.get("offline") else choose_mode()
        init = {"group": group, "job_type": SWEEP_SUMMARY, "name": f"{group}-summary"}
        run = _start_run(wcfg, sweep_dir, mode, **init, config={"sweep_dir": str(sweep_dir)})
        try:
            logged = {"sweep/table": _csv_table(table)}
            if plot.is_file():
                logged["sweep/plot"] = wandb.Image(str(plot))
            run.log(logged)
        finally:
            finish()
    except Exception as exc:  # noqa: BLE001 - a summary must not fail a finished sweep
        log.warning("W&B: the sweep summary was not logged (%s)", exc)
