"""Mean +- std over pre-training seeds of a recipe's evaluations (what ``make probes`` prints).

    python benchmarks/recipe_table.py <run dir of seed 1> <run dir of seed 2> ... [--out table.md]
    python benchmarks/recipe_table.py --images <image run dirs> ...   (make probes PART=images)

Each run dir holds the ``evaluate`` reports that ``benchmarks/real_data_probes.sh`` writes under
``eval_<set>/<task>.json``; a report missing from a run is left out of that row (and said so).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from cpc_lightning.eval.compare import compare_accuracy, comparison_lines, paired_keys
from cpc_lightning.eval.registry import read_report
from cpc_lightning.eval.report import ABXReport, PERReport, ProbeReport, Report
from cpc_lightning.eval.speech_tasks import compare_abx, compare_per

SOURCES = ("cpc", "random_init", "mfcc")
IMAGE_SOURCES = ("cpc", "random_init", "pixels")
IMAGE_REPORT = "eval_cifar10/classes.json"
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


def _walls(runs: list[Path]) -> list[str]:
    walls = [float(w.read_text()) for r in runs if (w := r / "pretrain_wall_s.txt").is_file()]
    if not walls:
        return []
    minutes = ", ".join(f"{w / 60:.1f}" for w in walls)
    return ["", f"Pre-training wall time per seed: {minutes} min."]


def image_table(runs: list[Path]) -> str:
    """CIFAR-10 test accuracy of pooled features: CPC / random init / raw pixels (mean +- std
    over the seeds), CPC minus each baseline, and the paired bootstrap over the test images of
    each image's correctness averaged over the seeds (what the 5,000 images can resolve)."""
    reports = [r for r in _reports(runs, IMAGE_REPORT) if isinstance(r, ProbeReport)]
    if not reports:
        return f"no {IMAGE_REPORT} in {', '.join(map(str, runs))}"
    per = {s: [100 * r.sources[s]["accuracy"] for r in reports if s in r.sources]
           for s in IMAGE_SOURCES}  # fmt: skip
    seeds = f"{len(reports)} seed" + ("s" if len(reports) > 1 else "")
    feature = f"{reports[0].feature_label}, pooled {reports[0].pool}"
    lines = [
        f"| CIFAR-10 test, accuracy % | CPC ({seeds}; {feature}) | random init | raw pixels "
        "| CPC minus random init | CPC minus pixels |",
        "|---|---|---|---|---|---|",
    ]
    diffs = [
        f"{statistics.mean(per['cpc']) - statistics.mean(per[b]):+.1f}" if per[b] else "—"
        for b in ("random_init", "pixels")
    ]
    cells = " | ".join(_cell(per[s]) for s in IMAGE_SOURCES)
    lines.append(f"| {len(reports[0].sources['cpc']['item_correct'])} test images | {cells} | "
                 f"{' | '.join(diffs)} |")  # fmt: skip
    entries = {}
    for s in IMAGE_SOURCES:
        items = [r.sources[s]["item_correct"] for r in reports if s in r.sources]
        if items:
            label = reports[0].sources[s]["label"]
            entries[s] = {
                "label": label,
                "item_correct": [statistics.mean(v) for v in zip(*items, strict=True)],
            }
    comparison = compare_accuracy(entries, unit="test image")
    lines.append(comparison_lines(comparison, entries).replace("\n\n", "\n", 1))
    return "\n".join(lines + _walls(runs))


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
    return "\n".join(lines + _walls(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--images", action="store_true", help="CIFAR-10 image runs")
    args = parser.parse_args()
    text = image_table(args.runs) if args.images else table(args.runs)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
