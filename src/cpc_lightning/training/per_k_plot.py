"""The per-k figure of a run: validation accuracy and MI bound of each prediction step k.

Read from the run's ``metrics.csv`` (``val/acc_k<k>``, ``val/mi_k<k>``): one line per validation,
the last one solid, the earlier ones faint, so the figure shows how far ahead the model learned
to predict and how that grew. ``logger=wandb`` logs it as an image at the end of training.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Any

#: The per-k validation columns: ``val/acc_k3`` -> ("acc", 3).
COLUMN = re.compile(r"^val/(acc|mi)_k(\d+)$")
PANELS = (("acc", "accuracy (held-out)"), ("mi", "MI lower bound (nats)"))


def per_k_rows(metrics_csv: Path) -> list[tuple[int | None, dict[str, dict[int, float]]]]:
    """``(step, {"acc": {k: value}, "mi": {k: value}})`` of each row holding per-k validation
    figures, in file order (empty when there are none or no file)."""
    if not metrics_csv.is_file():
        return []
    out = []
    with open(metrics_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            figures: dict[str, dict[int, float]] = {"acc": {}, "mi": {}}
            for key, text in row.items():
                match = COLUMN.match(key or "")
                if match and text not in (None, ""):
                    value = float(text)
                    if not math.isnan(value):
                        figures[match[1]][int(match[2])] = value
            if figures["acc"] or figures["mi"]:
                step = row.get("step")
                out.append((int(float(step)) if step else None, figures))
    return out


def per_k_figure(metrics_csv: Path) -> Any | None:
    """The figure (a matplotlib ``Figure``, two panels: accuracy and MI vs k) of
    ``metrics_csv``; None when it holds no per-k validation figures."""
    rows = per_k_rows(metrics_csv)
    if not rows:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.6, 4.0), dpi=100)
    for i, (name, label) in enumerate(PANELS):
        ax = fig.add_subplot(1, 2, i + 1)
        for j, (step, figures) in enumerate(rows):
            ks = sorted(figures[name])
            last = j == len(rows) - 1
            ax.plot(
                ks,
                [figures[name][k] for k in ks],
                marker="o" if last else None,
                alpha=1.0 if last else 0.15 + 0.5 * j / len(rows),
                color="C0" if last else "grey",
                label=f"step {step}" if last else None,
            )
        ax.set_xlabel("prediction step k")
        ax.set_ylabel(label)
        ax.legend()
    fig.suptitle("CPC per prediction step (validation; faint: earlier validations)")
    fig.tight_layout()
    return fig
