"""The speech yardsticks beside the linear probes: ABX phone discrimination and CTC phone
recognition, run for every feature source (trained model, random init, MFCC) on the same items.

ABX tokens come from the held-out split: time-aligned segments (``record.segments``, e.g. TIMIT)
or runs of frame labels (CPC label files, the synthetic corpus), or from a given item file.
Phone recognition trains a CTC head on the training split's phone sequences and scores the
held-out speakers. Reports go to ``<out_dir>/<task>.json`` like the probes'.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cpc_lightning.eval.abx import (
    ItemSet,
    abx,
    items_from_frame_labels,
    items_from_segments,
    read_items,
)
from cpc_lightning.eval.compare import (
    bootstrap_difference,
    comparison_lines,
    paired_bootstrap,
    paired_keys,
)
from cpc_lightning.eval.ctc import phone_recognition, phone_sequence
from cpc_lightning.eval.features import Source, frame_rate, split_records, utterance_features
from cpc_lightning.eval.report import ABXReport, PERReport, markdown_table
from cpc_lightning.eval.settings import ABXSettings, CTCSettings, EvalSettings
from cpc_lightning.eval.tasks import Task, TaskInputs

log = logging.getLogger(__name__)


def items_for(records: Sequence[Any], phone_names: Sequence[str], s: ABXSettings) -> ItemSet:
    """ABX items of ``records`` (their ``segments``, else their frame labels, at 100 Hz):
    triphone tokens whose central phone is not in ``s.exclude_central`` (those stay contexts)."""
    speakers = {r.uid: r.speaker for r in records}
    segmented = {r.uid: r.segments for r in records if r.segments}
    if segmented:
        items = items_from_segments(segmented, speakers)
    else:
        labels = {r.uid: r.phones for r in records if r.phones is not None}
        names = list(phone_names) or None
        items = items_from_frame_labels(labels, speakers, 100.0, names)
    excluded = set(s.exclude_central)
    return items.select(i for i, p in enumerate(items.phone) if p not in excluded)


def _features_by_uid(
    source: Source, datamodule: Any, records: Sequence[Any], settings: EvalSettings
) -> dict[str, Any]:
    feats = utterance_features(source, datamodule, records, settings)
    return {r.uid: f for r, f in zip(records, feats, strict=True)}


def run_abx(
    sources: Sequence[Source],
    datamodule: Any,
    settings: EvalSettings,
    s: ABXSettings,
    items_file: str | Path | None,
    meta: Mapping[str, Any],
) -> ABXReport:
    """ABX within/across (%) of every source on the held-out split's tokens."""
    records = split_records(datamodule, "test", settings, s.seed)
    items = read_items(items_file) if items_file else items_for(records, datamodule.phone_names, s)
    if not len(items):
        raise ValueError("task=abx: no phone tokens in triphone context in the held-out split")
    wanted = set(items.file)
    records = [r for r in records if r.uid in wanted]
    report = ABXReport(task="abx", meta=dict(meta), abx=asdict(s), sources={})
    report.items = {"file": str(items_file) if items_file else None, "tokens": len(items)}
    rows = {}
    for src in sources:
        t0 = time.perf_counter()
        feats = _features_by_uid(src, datamodule, records, settings)
        rate = frame_rate(src, int(datamodule.sample_rate))
        result = abx(
            feats, items, rate, s.modes, s.max_size_group, s.max_x_across, s.seed, mapping=s.mapping
        )
        entry = {"label": src.label, "frame_rate_hz": rate, **result.to_dict()}
        entry["seconds"] = time.perf_counter() - t0
        report.sources[src.name] = entry
        rows[src.label] = {"within": result.within, "across": result.across}
    note = "ABX error (lower is better; chance 50 %), held-out speakers"
    report.comparison = compare_abx(report.sources, s.modes, s.seed)
    report.table = markdown_table(rows, ["within", "across"], note) + comparison_lines(
        report.comparison, report.sources, "error points"
    )
    return report


def compare_abx(
    entries: Mapping[str, Mapping[str, Any]], modes: Sequence[str], seed: int = 0
) -> dict[str, dict[str, Any]]:
    """The first source (the trained model) against each other one, per mode: the paired
    bootstrap over phone pairs of :func:`paired_bootstrap` (``{other: {mode: ...}}``)."""
    names = list(entries)
    out: dict[str, dict[str, Any]] = {}
    for other in names[1:]:
        for mode in modes:
            first = entries[names[0]]["per_pair"].get(mode)
            second = entries[other]["per_pair"].get(mode)
            if first and second and paired_keys(first) & paired_keys(second):
                out.setdefault(other, {})[mode] = paired_bootstrap(first, second, seed=seed)
    return out


def compare_per(entries: Mapping[str, Mapping[str, Any]], seed: int = 0) -> dict[str, Any]:
    """The first source's PER minus each other one's, with the paired bootstrap over the test
    utterances of :func:`bootstrap_difference` (``{other: {"PER": ...}}``)."""
    names = list(entries)
    first = entries[names[0]]
    phones = first["utterance_phones"]
    out = {}
    for other in names[1:]:
        c = bootstrap_difference(
            [100.0 * e for e in first["utterance_edits"]],
            [100.0 * e for e in entries[other]["utterance_edits"]],
            weights=phones,
            seed=seed,
            unit="utterance",
        )
        out[other] = {"PER": c}
    return out


def sequences_of(records: Sequence[Any]) -> tuple[list[Any], list[list[int]]]:
    """Records that have a phone sequence, and those sequences."""
    kept = [(r, phone_sequence(r)) for r in records]
    kept = [(r, q) for r, q in kept if q]
    return [r for r, _ in kept], [q for _, q in kept]


def run_phone_recognition(
    sources: Sequence[Source],
    datamodule: Any,
    settings: EvalSettings,
    s: CTCSettings,
    meta: Mapping[str, Any],
) -> PERReport:
    """PER (%) of a CTC head per source: trained on ``train``, scored on ``test``."""
    train, train_seqs = sequences_of(split_records(datamodule, "train", settings, s.seeds[0]))
    test, test_seqs = sequences_of(split_records(datamodule, "test", settings, s.seeds[0]))
    if not train or not test:
        raise ValueError("task=phone_recognition: both splits need utterances with phone sequences")
    num_phones = max(len(datamodule.phone_names), datamodule.num_phones)
    num_phones = max(num_phones, 1 + max(max(q) for q in train_seqs + test_seqs))
    kind = "linear CTC head" if s.linear else f"{s.head} CTC head ({s.hidden} units, NOT linear)"
    report = PERReport(task="phone_recognition", meta=dict(meta), ctc=asdict(s))
    report.head, report.linear, report.sources = kind, s.linear, {}
    rows = {}
    for src in sources:
        t0 = time.perf_counter()
        xtr = utterance_features(src, datamodule, train, settings)
        xte = utterance_features(src, datamodule, test, settings)
        speakers = [r.speaker for r in train]
        result = phone_recognition((xtr, train_seqs), (xte, test_seqs), num_phones, s, speakers)
        entry = {"label": src.label, **result, "seconds": time.perf_counter() - t0}
        report.sources[src.name] = entry
        rows[src.label] = {"PER": result["per"]}
    note = f"phone error rate (lower is better), {kind}, held-out speakers"
    if len(s.weight_decays) > 1:
        chosen = ", ".join(f"{e['label']} {e['weight_decay']:g}" for e in report.sources.values())
        note += f"; weight decay chosen on {s.dev_speakers} training speakers: {chosen}"
    report.comparison = compare_per(report.sources, s.seeds[0])
    report.table = markdown_table(rows, ["PER"], note) + comparison_lines(
        report.comparison, report.sources, "error points"
    )
    log.info("phone recognition: %s", {k: round(v["per"], 2) for k, v in report.sources.items()})
    return report


def run_abx_task(task: Task, inputs: TaskInputs) -> ABXReport:
    """The runner of ``abx`` (options: ``abx.*``)."""
    i = inputs
    s = ABXSettings.from_node(i.options)
    return run_abx(i.sources, i.datamodule, i.settings, s, i.items_file, i.meta)


def run_phone_recognition_task(task: Task, inputs: TaskInputs) -> PERReport:
    """The runner of ``phone_recognition`` (options: ``phone_recognition.*``; the probe seeds
    are the head seeds)."""
    s = CTCSettings.from_node(inputs.options, seeds=inputs.settings.seeds)
    return run_phone_recognition(inputs.sources, inputs.datamodule, inputs.settings, s, inputs.meta)


def _load_feature_file(path: Path) -> torch.Tensor:
    if path.suffix == ".npy":
        return torch.from_numpy(np.load(path)).float()
    return torch.load(path, map_location="cpu", weights_only=True).float()


def _feature_folder(meta: Mapping[str, Any], cfg: Any) -> str:
    """The sub-folder to score when ``extract`` wrote one per layer (``feature=all`` or
    ``layers=...``): the one ``feature``/``layer`` name (``c``: the top context layer); ``""``
    when the files lie in the folder itself."""
    layers = meta.get("layers") or []
    if not layers:
        return ""
    want, layer = str(cfg.get("feature") or "c"), cfg.get("layer")
    match = [e for e in layers if e.get("feature") == want]
    if want != "z" and layer is not None:
        match = [e for e in match if e.get("layer") == int(layer)]
    if not match:
        have = ", ".join(f"{e.get('feature')} layer {e.get('layer')}" for e in layers)
        raise ValueError(
            f"feature={want} layer={layer} is not among the folders extract wrote ({have}); "
            "choose one of them with feature=... layer=..."
        )
    return str(match[-1]["dir"])


def score_feature_dir(cfg: Any) -> ABXReport:
    """``task=abx features=<dir> items=<file>``: ABX of the files an ``extract`` run wrote
    (frame rate from its ``features.json``; file ids = paths without suffix)."""
    if str(cfg.task) != "abx":
        raise ValueError(f"features=<dir> scores task=abx only, not task={cfg.task}")
    root = Path(str(cfg.features)).expanduser().resolve()
    meta_file = root / "features.json"
    if not meta_file.is_file():
        raise FileNotFoundError(
            f"features={root}: no features.json there (write it with python -m "
            "cpc_lightning.extract run_dir=<run> out=<dir>)"
        )
    if not cfg.get("items"):
        raise ValueError("features=<dir> needs items=<item file> (#file onset offset ...)")
    meta = json.loads(meta_file.read_text())
    folder = _feature_folder(meta, cfg)
    if folder:
        meta["feature"] = folder
    feats = {str(Path(f).with_suffix("")): root / folder / f for f in meta["files"]}
    items = read_items(cfg["items"])
    missing = sorted(set(items.file) - set(feats))
    if len(missing) == len(set(items.file)):
        raise ValueError(
            f"items={cfg['items']}: none of its files ({missing[:3]} ...) is in {root}; "
            "item file ids must be the feature paths without suffix"
        )
    s = ABXSettings.from_node(cfg.get("abx"))
    loaded = {f: _load_feature_file(feats[f]) for f in set(items.file) if f in feats}
    result = abx(
        loaded,
        items,
        float(meta["frame_rate_hz"]),
        s.modes,
        s.max_size_group,
        s.max_x_across,
        s.seed,
        mapping=s.mapping,
    )
    label = f"{meta.get('feature', '?')} features of {meta['model'].get('run_dir', root)}"
    report = {
        "task": "abx",
        "features": str(root),
        "feature": meta.get("feature"),
        "out_dir": str(root / "eval"),
        "abx": asdict(s),
        "items": {"file": str(cfg["items"]), "tokens": len(items), "files_missing": missing},
        "sources": {"cpc": {"label": label, **result.to_dict()}},
        "table": markdown_table(
            {label: {"within": result.within, "across": result.across}},
            ["within", "across"],
            "ABX error (lower is better; chance 50 %)",
        ),
    }
    return ABXReport.from_json(report)  # its own key order (the features, then the settings)
