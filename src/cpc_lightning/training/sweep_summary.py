"""Hydra callback: one table and one plot at the end of a multirun.

``hydra/default.yaml`` registers :class:`SweepSummary`. When every point of a sweep has run, it
reads each job dir's overrides, result file and failure file (through
:class:`~cpc_lightning.run_dir.RunDir`) and writes into the sweep dir:

- ``summary.csv``: one row per point: the swept keys, status (``ok``, ``reused``: its result is
  from an earlier launch of the same sweep, ``failed``, ``missing``), error, global step, the
  step a resumed point continued from, every metric;
- ``summary.md``: the same, compact (swept keys, status, step, the optimized metric);
- ``summary.png``: the optimized metric vs. ``model.prediction_steps`` (k), one line per
  ``negatives.num_negatives`` (N); for sweeps over other keys a heatmap (two keys), a line (one
  key) or one bar per point.

With ``logger=wandb`` the table and the plot also go to a W&B run in the sweep's group
(``training/wandb.log_sweep_summary``). A sweep with a failed or missing point then exits with
code 1, its log line giving the same count as ``summary.md``'s title.
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from cpc_lightning.run_dir import RESULT, RunDir, run_dirs_under
from cpc_lightning.training.wandb import log_sweep_summary

log = logging.getLogger("cpc_lightning.sweep")

OK = ("ok", "reused")
K_KEY = "model.prediction_steps"
N_KEY = "negatives.num_negatives"
PLOT = "summary.png"


@dataclass
class Point:
    """One sweep point: its job dir, overrides, outcome."""

    job: str
    overrides: dict[str, Any]
    status: str  # ok | reused | failed | missing
    error: str = ""
    global_step: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    resumed_from: int | None = None


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _job_sort_key(path: Path) -> tuple[int, str]:
    name = path.name
    return (int(name), name) if name.isdigit() else (1 << 30, str(path))


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "failed"


def collect_points(sweep_dir: Path) -> list[Point]:
    """Every job dir under ``sweep_dir`` (one with Hydra's overrides file), in job order."""
    job_dirs = sorted(run_dirs_under(sweep_dir), key=_job_sort_key)
    points = []
    for job_dir in job_dirs:
        run = RunDir(job_dir)
        raw = yaml.safe_load(run.hydra_overrides.read_text()) or []
        overrides = {}
        for item in raw:
            key, _, value = str(item).partition("=")
            overrides[key.lstrip("+~")] = _parse_value(value)
        name = str(job_dir.relative_to(sweep_dir))
        if run.failed.is_file():
            points.append(Point(name, overrides, "failed", _last_line(run.failed.read_text())))
        elif (data := run.read_result()) is not None:
            metrics = {k: float(v) for k, v in data.get("metrics", {}).items()}
            status = "reused" if run.reused.is_file() else "ok"
            step, resumed = data.get("global_step"), data.get("resumed_from_step")
            points.append(Point(name, overrides, status, "", step, metrics, resumed))
        else:
            points.append(Point(name, overrides, "missing", f"no {RESULT} (killed?)"))
    return points


def swept_keys(points: list[Point]) -> list[str]:
    """Override keys whose value differs between points (all keys for a single point)."""
    keys: list[str] = []
    for p in points:
        keys += [k for k in p.overrides if k not in keys]
    if len(points) < 2:
        return keys
    return [k for k in keys if len({repr(p.overrides.get(k)) for p in points}) > 1]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return "" if value is None else str(value)


def write_csv(path: Path, points: list[Point], keys: list[str], metric: str) -> None:
    """``summary.csv``: swept keys, status, error, step, the optimized metric first, then all."""
    names = sorted({m for p in points for m in p.metrics} - {metric})
    header = ["job", *keys, "status", "error", "global_step", "resumed_from_step", metric, *names]
    header.append("overrides")
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for p in points:
            writer.writerow(
                [
                    p.job,
                    *(p.overrides.get(k, "") for k in keys),
                    p.status,
                    p.error,
                    "" if p.global_step is None else p.global_step,
                    "" if p.resumed_from is None else p.resumed_from,
                    p.metrics.get(metric, ""),
                    *(p.metrics.get(m, "") for m in names),
                    " ".join(f"{k}={v}" for k, v in p.overrides.items()),
                ]
            )


def write_markdown(path: Path, points: list[Point], keys: list[str], metric: str) -> None:
    """``summary.md``: a table with swept keys, status, step, metric (and the error if failed)."""
    extra = [m for m in ("val/acc",) if m != metric and any(m in p.metrics for p in points)]
    header = ["job", *keys, "status", "step", metric, *extra, "error"]
    lines = [
        f"# Sweep summary ({len(points)} points, "
        f"{sum(p.status not in OK for p in points)} failed or missing)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for p in points:
        cells = [
            p.job,
            *(_fmt(p.overrides.get(k)) for k in keys),
            "**FAILED**" if p.status == "failed" else _status(p),
            _fmt(p.global_step),
            _fmt(p.metrics.get(metric)),
            *(_fmt(p.metrics.get(m)) for m in extra),
            p.error.replace("|", "\\|")[:200],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")


def _status(p: Point) -> str:
    return (
        p.status if p.resumed_from is None else f"{p.status} (resumed from step {p.resumed_from})"
    )


def _value(p: Point, metric: str) -> float:
    return p.metrics.get(metric, math.nan) if p.status in OK else math.nan


def _sortable(values: list[Any]) -> list[Any]:
    try:
        return sorted(set(values))
    except TypeError:
        return sorted(set(values), key=str)


def plot(path: Path, points: list[Point], keys: list[str], metric: str) -> None:
    """``summary.png``: metric vs k per N, else a heatmap / line / bars (failed points: gaps)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.8), dpi=100)
    ax = fig.add_subplot()
    failed = sum(p.status not in OK for p in points)
    title = f"{metric} ({len(points)} points" + (f", {failed} failed)" if failed else ")")
    if K_KEY in keys and set(keys) <= {K_KEY, N_KEY}:
        for n in _sortable([p.overrides.get(N_KEY) for p in points]):
            sub = sorted(
                (p for p in points if p.overrides.get(N_KEY) == n),
                key=lambda p: p.overrides.get(K_KEY),
            )
            xs = [p.overrides.get(K_KEY) for p in sub]
            label = f"N = {n}" if n is not None else "N (default)"
            ax.plot(xs, [_value(p, metric) for p in sub], marker="o", label=label)
        ax.set_xlabel("k (model.prediction_steps)")
        ax.legend()
    elif len(keys) == 2:
        rows = _sortable([p.overrides.get(keys[0]) for p in points])
        cols = _sortable([p.overrides.get(keys[1]) for p in points])
        grid = [[math.nan] * len(cols) for _ in rows]
        for p in points:
            i, j = rows.index(p.overrides.get(keys[0])), cols.index(p.overrides.get(keys[1]))
            grid[i][j] = _value(p, metric)
        image = ax.imshow(grid, aspect="auto", cmap="viridis")
        fig.colorbar(image, ax=ax, label=metric)
        ax.set_yticks(range(len(rows)), [str(r) for r in rows])
        ax.set_xticks(range(len(cols)), [str(c) for c in cols])
        ax.set_ylabel(keys[0])
        ax.set_xlabel(keys[1])
        for i in range(len(rows)):
            for j in range(len(cols)):
                text = "failed" if math.isnan(grid[i][j]) else f"{grid[i][j]:.3g}"
                ax.text(j, i, text, ha="center", va="center", color="w")
    elif len(keys) == 1 and all(isinstance(p.overrides.get(keys[0]), (int, float)) for p in points):
        sub = sorted(points, key=lambda p: p.overrides[keys[0]])
        ax.plot([p.overrides[keys[0]] for p in sub], [_value(p, metric) for p in sub], marker="o")
        ax.set_xlabel(keys[0])
    else:
        labels = [_bar_label(p, keys) for p in points]
        ax.bar(range(len(points)), [_value(p, metric) for p in points])
        ax.set_xticks(range(len(points)), labels, fontsize=7)
    ax.set_ylabel(metric)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)


def _bar_label(point: Point, keys: list[str]) -> str:
    """The job, then one line per swept key: its last name part (two when that is as short as
    ``p``) and the value, floats to 3 digits."""
    lines = [f"job {point.job}"]
    for k in keys:
        parts = k.split(".")
        name = ".".join(parts[-2:]) if len(parts[-1]) <= 2 else parts[-1]
        lines.append(f"{name}={_fmt(point.overrides.get(k))}")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    try:
        return f"{float(value):.3g}"
    except (TypeError, ValueError):
        return str(value)


def summarize(sweep_dir: str | Path, metric: str = "val/loss") -> list[Point]:
    """Write ``summary.csv``, ``summary.md`` and ``summary.png`` into ``sweep_dir``."""
    sweep_dir = Path(sweep_dir)
    points = collect_points(sweep_dir)
    if not points:
        log.warning("sweep summary: no job dirs under %s", sweep_dir)
        return points
    keys = swept_keys(points)
    write_csv(sweep_dir / "summary.csv", points, keys, metric)
    write_markdown(sweep_dir / "summary.md", points, keys, metric)
    plot(sweep_dir / PLOT, points, keys, metric)
    return points


class SweepSummary(Callback):
    """Hydra callback writing the sweep summary (:func:`summarize`) at the end of a multirun."""

    def __init__(self, metric: str | None = None) -> None:
        self.metric = metric

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Write the summary; then, if a point failed or is missing, exit with code 1 (every
        point has run and the summary is written: nothing is lost by stopping here)."""
        sweep_dir = Path(str(config.hydra.sweep.dir))
        metric = self.metric or OmegaConf.select(config, "optimized_metric") or "val/loss"
        try:
            points = summarize(sweep_dir, metric)
        except Exception:  # a summary must never turn a finished sweep into a failure
            log.exception("sweep summary failed for %s", sweep_dir)
            return
        if points:  # logger=wandb: the table and the plot go to the sweep's W&B group
            log_sweep_summary(config, sweep_dir, sweep_dir / "summary.csv", sweep_dir / PLOT)
        bad = [p.job for p in points if p.status not in OK]
        reused = [p.job for p in points if p.status == "reused"]
        counts = f"{len(points)} points, {len(bad)} failed or missing"
        log.info(
            "sweep summary: %s (%s%s%s)",
            sweep_dir / "summary.md",
            counts,
            f" ({'job' if len(bad) == 1 else 'jobs'} {', '.join(bad)})" if bad else "",
            f"; reused from an earlier launch: {', '.join(reused)}" if reused else "",
        )
        if bad:
            log.error("sweep finished with %s: exit code 1 (see %s)", counts, sweep_dir)
            raise SystemExit(1)
