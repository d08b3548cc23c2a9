"""Plot a training run's curves from its ``metrics.csv``: what README's "Reading your run" shows.

    python benchmarks/plot_run.py <run dir> [--compare <run dir>] --out docs/reading_your_run.png

Panels: ``acc_k`` and ``mi_k`` for a few k (train, and val where logged), and the data-loader
wait fraction with the audio-seconds per second (``--compare``: a second run's, e.g. a
loader-bound one, dashed, beside the first).
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    """Rows of ``<run_dir>/metrics.csv`` with numeric cells only."""
    rows = []
    with open(run_dir / "metrics.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            rows.append({k: float(v) for k, v in row.items() if v not in ("", None)})
    return rows


def series(rows: list[dict[str, float]], key: str) -> tuple[list[float], list[float]]:
    pts = [(r["step"], r[key]) for r in rows if key in r and "step" in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def steps_k(rows: list[dict[str, float]]) -> list[int]:
    """The k shown: 1, 4, 8, 12 where logged, else the first four."""
    ks = sorted({int(k.split("acc_k")[1]) for r in rows for k in r if k.startswith("train/acc_k")})
    return [k for k in (1, 4, 8, 12) if k in ks] or ks[:4]


def plot(run: Path, compare: Path | None, out: Path) -> None:
    rows = read_metrics(run)
    ks = steps_k(rows)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, metric, title in ((axes[0], "acc", "accuracy acc_k"), (axes[1], "mi", "mi_k (nats)")):
        for i, k in enumerate(ks):
            color = plt.cm.viridis(i / max(len(ks) - 1, 1))
            ax.plot(*series(rows, f"train/{metric}_k{k}"), color=color, lw=1, label=f"k={k}")
            vx, vy = series(rows, f"val/{metric}_k{k}")
            ax.plot(vx, vy, "o--", color=color, ms=3, lw=0.8)
        ax.set_title(f"{title}: train (line), val (dots)")
        ax.set_xlabel("step")
    n = _num_negatives(run)
    if n:
        axes[1].axhline(math.log(n + 1), color="grey", ls=":", lw=1)
        axes[1].text(0, math.log(n + 1), f" log(N+1), N={n}", va="bottom", fontsize=8)
    axes[0].legend(fontsize=7, loc="upper left")
    twin = axes[2].twinx()
    _plot_loader(axes[2], twin, rows, run.name)
    if compare is not None:
        _plot_loader(axes[2], twin, read_metrics(compare), compare.name, ls="--")
    handles = [h for a in (axes[2], twin) for h in a.get_legend_handles_labels()[0]]
    axes[2].legend(handles=handles, fontsize=7, loc="center right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)


def _plot_loader(ax, twin, rows: list[dict[str, float]], name: str, ls: str = "-") -> None:
    """Data-wait fraction (left axis) and audio-seconds per second (right axis) of one run."""
    wx, wy = series(rows, "perf/data_wait_frac")
    ax.plot(wx, wy, ls, color="tab:orange", lw=1.2, label=f"data wait fraction, {name}")
    ax.set_ylim(0, 1)
    ax.set_xlabel("step")
    ax.set_ylabel("data wait fraction", color="tab:orange")
    ax.set_title("data-loader wait vs. throughput")
    tx, ty = series(rows, "perf/audio_s_per_s_total")
    twin.plot(tx, ty, ls, color="tab:blue", lw=1, label=f"audio-s/s, {name}")
    twin.set_ylim(0, None)
    twin.set_ylabel("audio-seconds / s", color="tab:blue")


def _num_negatives(run: Path) -> int | None:
    cfg = run / "config_resolved.yaml"
    if not cfg.is_file():
        return None
    import yaml

    return (yaml.safe_load(cfg.read_text()).get("negatives") or {}).get("num_negatives")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--compare", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path("docs/reading_your_run.png"))
    args = ap.parse_args()
    plot(args.run, args.compare, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
