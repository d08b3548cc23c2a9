"""``benchmarks/recipe_table.py`` (what ``make probes`` prints): mean +- std over seeds, the
verdict against MFCC, and the ABX interval over phone pairs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location(
        "recipe_table", ROOT / "benchmarks/recipe_table.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _abx_source(within: float, across: dict[tuple[str, str], float]) -> dict:
    per_pair: dict[str, dict[str, float]] = {}
    for (a, b), v in across.items():
        per_pair.setdefault(a, {})[b] = v
    mean = sum(across.values()) / len(across)
    return {"within": within, "across": mean, "per_pair": {"within": {}, "across": per_pair}}


def _run(
    root: Path, name: str, cpc_across: dict, mfcc_across: dict, phones: float, shift: float
) -> Path:
    run = root / name
    (run / "eval_timit").mkdir(parents=True)
    abx = {"sources": {"cpc": _abx_source(8.0, cpc_across), "mfcc": _abx_source(9.0, mfcc_across)}}
    (run / "eval_timit/abx.json").write_text(json.dumps(abx))
    phones_report = {"sources": {"cpc": {"accuracy": phones}, "mfcc": {"accuracy": 0.4}}}
    (run / "eval_timit/phones.json").write_text(json.dumps(phones_report))
    edits = [3.0 - shift, 1.0, 5.0]  # CPC: shift fewer edits on the first utterance than MFCC
    per = {
        "sources": {
            src: {"per": 100 * sum(e) / 20, "utterance_edits": e, "utterance_phones": [5, 5, 10]}
            for src, e in (("cpc", edits), ("mfcc", [3.0, 1.0, 5.0]))
        }
    }
    (run / "eval_timit/phone_recognition.json").write_text(json.dumps(per))
    (run / "pretrain_wall_s.txt").write_text("600")
    return run


def test_table_rows_verdicts_and_abx_interval(tmp_path):
    mfcc = {("a", "b"): 20.0, ("b", "a"): 10.0, ("a", "c"): 0.0, ("c", "a"): 30.0}
    runs = [
        _run(tmp_path, "s1", {k: v - 4.0 for k, v in mfcc.items()}, mfcc, 0.50, 1.0),
        _run(tmp_path, "s2", {k: v - 6.0 for k, v in mfcc.items()}, mfcc, 0.52, 3.0),
    ]
    text = _module().table(runs)
    assert (
        "| TIMIT frame phones, accuracy % | c | 51.0 ± 1.4 | — | 40.0 ± 0.0 | better by 11.0 |"
        in text
    )
    assert (
        "| TIMIT ABX across-speaker, error % | c | 10.0 ± 1.4 | — | 15.0 ± 0.0 | better by 5.0 |"
        in text
    )
    # every pair 5 points better on the seeds' mean: the interval is that gap alone
    assert "ABX across, CPC minus MFCC" in text and "-5.0 points" in text
    assert "over the 4 phone pairs [-5.0, -5.0]" in text
    # PER: 2 edits fewer on the seeds' mean, over 20 phones: 10 points
    assert (
        "| TIMIT phone error rate (CTC), % | c | 35.0 ± 7.1 | — | 45.0 ± 0.0 | better by 10.0 |"
        in text
    )
    assert "PER, CPC minus MFCC (utterance errors averaged over the seeds): -10.0 points" in text
    # a seed whose PER report lacks the per-utterance edits: no PER line rather than a subset
    report = runs[1] / "eval_timit/phone_recognition.json"
    old = json.loads(report.read_text())
    del old["sources"]["cpc"]["utterance_edits"]
    report.write_text(json.dumps(old))
    assert "PER, CPC minus MFCC" not in _module().table(runs)
    assert "ABX within, CPC minus" not in text  # no within pair scored: no interval line
    assert "Pre-training wall time per seed: 10.0, 10.0 min." in text


def _image_run(root: Path, name: str, cpc: list[int], random: list[int], pixels: list[int]) -> Path:
    run = root / name
    (run / "eval_cifar10").mkdir(parents=True)
    labels = {"cpc": "CPC (trained)", "random_init": "random init", "pixels": "raw pixels"}
    sources = {
        s: {"label": labels[s], "accuracy": sum(c) / len(c), "item_correct": [float(v) for v in c]}
        for s, c in (("cpc", cpc), ("random_init", random), ("pixels", pixels))
    }
    report = {"task": "classes", "feature": "z", "pool": "grid4", "sources": sources}
    (run / "eval_cifar10/classes.json").write_text(json.dumps(report))
    (run / "pretrain_wall_s.txt").write_text("900")
    return run


def test_image_table_means_differences_and_seed_averaged_interval(tmp_path):
    mod = _module()
    n = 200
    pixels = [1] * 80 + [0] * 120  # 40 %
    a = _image_run(tmp_path, "s1", [1] * 110 + [0] * 90, [1] * 70 + [0] * 130, pixels)
    b = _image_run(tmp_path, "s2", [1] * 120 + [0] * 80, [1] * 74 + [0] * 126, pixels)
    text = mod.image_table([a, b])
    row = next(line for line in text.splitlines() if line.startswith(f"| {n} test images"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "57.5 ± 3.5"  # 55 and 60 %
    assert cells[2] == "36.0 ± 1.4"
    assert cells[3] == "40.0 ± 0.0"
    assert cells[4:] == ["+21.5", "+17.5"]
    assert "CPC (2 seeds; z, pooled grid4)" in text
    # the interval is over the images, each image's correctness averaged over the seeds
    line = next(x for x in text.splitlines() if x.startswith("- vs raw pixels"))
    low, high = (float(v) for v in line.split("[")[1].split("]")[0].split(","))
    assert 0 < low < 17.5 < high
    assert "Pre-training wall time per seed: 15.0, 15.0 min." in text
