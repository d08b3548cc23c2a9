"""One panel per searched key: the optimized metric of every trial of a sweep against that key's
value (what ``docs/image_recipe_search.md`` shows), plus the trials as a Markdown table.

    python benchmarks/search_report.py <sweep dir> --metric probe/classes/cpc --out docs/x.png

Reads the sweep the way its own summary does (``training/sweep_summary.collect_points``);
trials still running or killed are listed as missing and left out of the panels.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cpc_lightning.training.sweep_summary import OK, collect_points, swept_keys  # noqa: E402


def table(points: list, keys: list[str], metric: str, extra: list[str]) -> str:
    """Trials as rows: swept keys, the metric (x100, %), the extra metrics."""
    head = ["trial", *keys, f"{metric} %", *extra]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    best = max((p.metrics.get(metric, float("-inf")) for p in points if p.status in OK),
               default=None)  # fmt: skip
    for p in points:
        cells = [p.job, *(_fmt(p.overrides.get(k)) for k in keys)]
        value = p.metrics.get(metric)
        mark = "**" if value is not None and value == best else ""
        cells.append(f"{mark}{100 * value:.1f}{mark}" if value is not None else p.status)
        cells += [_fmt(p.metrics.get(k)) for k in extra]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "—" if value is None else str(value)


def plot(points: list, keys: list[str], metric: str, out: Path) -> None:
    """One scatter per key: metric (%) against the key's value, log x for positive floats."""
    done = [p for p in points if p.status in OK and metric in p.metrics]
    fig, axes = plt.subplots(1, len(keys), figsize=(2.6 * len(keys), 2.6), sharey=True)
    axes = [axes] if len(keys) == 1 else list(axes)
    for ax, key in zip(axes, keys, strict=True):
        values = [p.overrides.get(key) for p in done]
        ys = [100 * p.metrics[metric] for p in done]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        if numeric:
            ax.scatter(values, ys)
            if all(isinstance(v, float) for v in values) and min(values) > 0:
                ax.set_xscale("log")
        else:
            labels = sorted({str(v) for v in values})
            ax.scatter([labels.index(str(v)) for v in values], ys)
            ax.set_xticks(range(len(labels)), labels)
        ax.set_xlabel(key.split(".")[-1])
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{metric} (%)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--metric", default="val/loss")
    parser.add_argument("--extra", nargs="*", default=["val/loss"])
    parser.add_argument("--out", type=Path, required=True, help="the plot (.png)")
    args = parser.parse_args()
    points = collect_points(args.sweep_dir)
    keys = swept_keys(points)
    print(table(points, keys, args.metric, args.extra))
    plot(points, keys, args.metric, args.out)


if __name__ == "__main__":
    main()
