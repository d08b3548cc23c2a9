"""Mean +- std over pre-training seeds of the recipe's evaluations (what ``make probes`` prints).

    python benchmarks/recipe_table.py <run dir of seed 1> <run dir of seed 2> ... [--out table.md]

Each run dir holds the ``evaluate`` reports that ``benchmarks/real_data_probes.sh`` writes under
``eval_<set>/<task>.json``; a report missing from a run is left out of that row (and said so).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from cpc_lightning.eval.compare import paired_keys
from cpc_lightning.eval.registry import read_report
from cpc_lightning.eval.report import ABXReport, PERReport, Report
from cpc_lightning.eval.speech_tasks import compare_abx, compare_per

SOURCES = ("cpc", "random_init", "mfcc")
#: (row label, report path in a run dir, the report's figure, scale, higher is better)
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
    got = read_report(path).figure(source, key)
    return None if got is None else got * scale


def _feature(runs: list[Path], rel: str) -> str:
    """The CPC feature the reports used (``c``, ``z``, or ``c layer i``; ``+ CMVN`` when
    normalised per utterance), as one label."""
    return "/".join(sorted({rep.feature_label for rep in _reports(runs, rel)}))


def _cell(values: list[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def _reports(runs: list[Path], rel: str) -> list[Report]:
    return [read_report(p) for r in runs if (p := r / rel).is_file()]


def _line(what: str, c: dict) -> str:
    return (
        f"{what}, CPC minus MFCC ({c['unit']} errors averaged over the seeds): "
        f"{c['difference']:+.1f} points, 95 % paired-bootstrap interval over the {c['units']} "
        f"{c['unit']}s [{c['interval'][0]:+.1f}, {c['interval'][1]:+.1f}]."
    )


def _intervals(runs: list[Path]) -> list[str]:
    """CPC minus MFCC for ABX (per mode) and PER: each held-out unit's CPC error (a phone pair's
    ABX error, an utterance's edits) averaged over the seeds, then ``evaluate``'s own paired
    bootstrap over the units (how far the held-out items can rank the two)."""
    out = []
    abx = [rep for rep in _reports(runs, "eval_timit/abx.json") if isinstance(rep, ABXReport)]
    if abx and "mfcc" in abx[0].sources:
        mean: dict[str, dict[str, dict[str, float]]] = {}
        for mode in ("within", "across"):
            cpc = [rep.per_pair("cpc", mode) for rep in abx]
            for a, b in set.intersection(*(paired_keys(pp) for pp in cpc)):
                mean.setdefault(mode, {}).setdefault(a, {})[b] = statistics.mean(
                    pp[a][b] for pp in cpc
                )
        entries = {"cpc": {"per_pair": mean}, "mfcc": abx[0].sources["mfcc"]}
        for mode, c in compare_abx(entries, ("within", "across")).get("mfcc", {}).items():
            out.append(_line(f"ABX {mode}", c))
    rel = "eval_timit/phone_recognition.json"
    per = [rep for rep in _reports(runs, rel) if isinstance(rep, PERReport)]
    # every seed's report needs the per-utterance edits (reports of older versions lack them)
    if per and all(rep.utterance_edits(k) is not None for rep in per for k in ("cpc", "mfcc")):
        seeds = (rep.utterance_edits("cpc") for rep in per)
        edits = [statistics.mean(e) for e in zip(*seeds, strict=True)]  # type: ignore[arg-type]
        cpc = {"utterance_edits": edits, "utterance_phones": per[0].utterance_phones("cpc")}
        mfcc = per[0].sources["mfcc"]
        out.append(_line("PER", compare_per({"cpc": cpc, "mfcc": mfcc})["mfcc"]["PER"]))
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
    lines += _intervals(runs)
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
