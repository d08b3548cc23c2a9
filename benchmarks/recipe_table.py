"""Mean +- std over pre-training seeds of the recipe's evaluations (what ``make probes`` prints).

    python benchmarks/recipe_table.py <run dir of seed 1> <run dir of seed 2> ... [--out table.md]

Each run dir holds the ``evaluate`` reports that ``benchmarks/real_data_probes.sh`` writes under
``eval_<set>/<task>.json``; a report missing from a run is left out of that row (and said so).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from cpc_lightning.eval.abx.compare import paired_bootstrap, paired_keys

SOURCES = ("cpc", "random_init", "mfcc")
#: (row label, report path in a run dir, value key, scale, higher is better)
ROWS = (
    ("TIMIT frame phones, accuracy %", "eval_timit/phones.json", "accuracy", 100.0, True),
    ("TIMIT ABX within-speaker, error %", "eval_timit/abx.json", "within", 1.0, False),
    ("TIMIT ABX across-speaker, error %", "eval_timit/abx.json", "across", 1.0, False),
    ("TIMIT phone error rate (CTC), %", "eval_timit/phone_recognition.json", "per", 1.0, False),
    (
        "speechocean762 speakers, accuracy %",
        "eval_speechocean/speakers.json",
        "accuracy",
        100,
        True,
    ),
    ("FSDD digits, accuracy %", "eval_fsdd/classes.json", "accuracy", 100.0, True),
    ("FSDD speakers, accuracy %", "eval_fsdd/speakers.json", "accuracy", 100.0, True),
    (
        "Speech Commands words, accuracy %",
        "eval_speech_commands/classes.json",
        "accuracy",
        100,
        True,
    ),
)


def _value(run: Path, rel: str, key: str, scale: float, source: str) -> float | None:
    path = run / rel
    if not path.is_file():
        return None
    got = json.loads(path.read_text())["sources"].get(source, {}).get(key)
    return None if got is None else float(got) * scale


def _feature(runs: list[Path], rel: str) -> str:
    """The CPC feature the reports used (``c``, ``z``, or ``c layer i``; ``+ CMVN`` when
    normalised per utterance), as one label."""
    names = set()
    for run in runs:
        path = run / rel
        if path.is_file():
            got = json.loads(path.read_text())
            layer = got.get("layer")
            name = f"{got.get('feature', 'c')}" + ("" if layer is None else f" layer {layer}")
            names.add(name + (" + CMVN" if got.get("normalise") == "utterance" else ""))
    return "/".join(sorted(names))


def _cell(values: list[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def _abx_intervals(runs: list[Path]) -> list[str]:
    """CPC minus MFCC per ABX mode: each phone pair's CPC error averaged over the seeds, then
    the paired bootstrap over the phone pairs (how far the held-out items can rank the two)."""
    reports = [
        json.loads(p.read_text()) for r in runs if (p := r / "eval_timit/abx.json").is_file()
    ]
    out = []
    for mode in ("within", "across"):
        cpc = [rep["sources"]["cpc"]["per_pair"].get(mode) or {} for rep in reports]
        mfcc = [rep["sources"].get("mfcc", {}).get("per_pair", {}).get(mode) for rep in reports]
        if not cpc or not mfcc[0]:
            continue
        keys = set.intersection(*(paired_keys(pp) for pp in cpc)) & paired_keys(mfcc[0])
        if not keys:
            continue
        mean: dict[str, dict[str, float]] = {}
        for a, b in keys:
            mean.setdefault(a, {})[b] = statistics.mean(pp[a][b] for pp in cpc)
        c = paired_bootstrap(mean, mfcc[0])
        out.append(
            f"ABX {mode}, CPC minus MFCC (each phone pair's error averaged over the seeds): "
            f"{c['difference']:+.1f} points, 95 % paired-bootstrap interval over the "
            f"{c['phone_pairs']} phone pairs [{c['interval'][0]:+.1f}, {c['interval'][1]:+.1f}]."
        )
    return [""] + out if out else []


def table(runs: list[Path]) -> str:
    """The markdown table: one row per task, CPC / random init / MFCC, and whether CPC wins."""
    seeds = f"{len(runs)} seed" + ("s" if len(runs) > 1 else "")
    lines = [
        f"| task (TIMIT: 4 held-out speakers) | CPC feature | CPC ({seeds}) | random init | MFCC "
        "| CPC vs MFCC |",
        "|---|---|---|---|---|---|",
    ]
    for label, rel, key, scale, higher in ROWS:
        per = {s: [v for r in runs if (v := _value(r, rel, key, scale, s)) is not None]
               for s in SOURCES}  # fmt: skip
        verdict = "—"
        if per["cpc"] and per["mfcc"]:
            diff = statistics.mean(per["cpc"]) - statistics.mean(per["mfcc"])
            better = diff > 0 if higher else diff < 0
            verdict = f"{'better' if better else 'worse'} by {abs(diff):.1f}"
        cells = " | ".join(_cell(per[s]) for s in SOURCES)
        lines.append(f"| {label} | {_feature(runs, rel) or '—'} | {cells} | {verdict} |")
    lines += _abx_intervals(runs)
    walls = []
    for r in runs:
        wall = r / "pretrain_wall_s.txt"
        if wall.is_file():
            walls.append(float(wall.read_text()))
    if walls:
        lines.append("")
        lines.append(
            f"Pre-training wall time per seed: {', '.join(f'{w / 60:.1f}' for w in walls)} min."
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    text = table(args.runs)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
