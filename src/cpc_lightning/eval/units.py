"""Discrete units: k-means over frame features, and how well the units follow the phones.

k-means is scikit-learn's ``MiniBatchKMeans`` (seeded): a k-means++ start on a seeded sample of
the training frames, then ``epochs`` passes of shuffled mini-batches (``partial_fit``, so the
fit shows progress). Each frame's unit is its nearest centroid (``predict``). ``quantize`` and
``evaluate task=units`` share these functions.

Unit quality follows Hsu et al. 2021 (HuBERT, sec. IV): from the joint distribution ``p(y, z)``
of phone ``y`` and unit ``z`` over the held-out frames (feature frame ``t`` paired with label
frame ``t``, as the frame probes pair them; unlabelled frames dropped),

- phone purity   ``sum_z max_y p(y, z)``  (the mean, over frames, of the most likely phone of
  the frame's unit given that unit),
- cluster purity ``sum_y max_z p(y, z)``  (the same with phones and units swapped),
- PNMI           ``I(y; z) / H(y)``        (the phone uncertainty a unit removes).

Each source (trained model, random init, MFCC) gets its own k-means on its own training frames.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch

from cpc_lightning.data.audio.frames import LABEL_HOP
from cpc_lightning.eval.features import Source, split_records, utterance_features
from cpc_lightning.eval.report import UnitsReport, markdown_table
from cpc_lightning.eval.settings import EvalSettings, node_values
from cpc_lightning.eval.tasks import Task, TaskInputs
from cpc_lightning.progress import Progress

log = logging.getLogger(__name__)

#: Utterances whose features are held in memory at once.
CHUNK = 64
COLUMNS = {"pnmi": "PNMI", "phone_purity": "phone purity", "cluster_purity": "cluster purity"}


@dataclass(frozen=True)
class UnitSettings:
    """k-means of the units (``evaluate``'s ``units.*``, ``quantize``'s top-level keys)."""

    k: int = 50  # clusters
    seed: int = 0  # of the frame sample, the start and the batch order
    batch_size: int = 10000  # frames per mini-batch
    epochs: int = 20  # passes over the kept training frames
    max_frames: int | None = 1000000  # training frames kept (a seeded uniform sample; None: all)

    @classmethod
    def from_node(cls, node: Any) -> UnitSettings:
        """The defaults with the node's known non-null keys on top; ``ValueError`` (one line)
        for a value out of range."""
        known = {f.name for f in fields(cls)}
        given = {k: v for k, v in node_values(node).items() if k in known and v is not None}
        out = cls(**{k: int(v) for k, v in given.items()})
        for key in ("k", "batch_size", "epochs", "max_frames"):
            value = getattr(out, key)
            if value is not None and value < 1:
                raise ValueError(f"{key}={value} must be at least 1")
        if out.k < 2:
            raise ValueError(f"k={out.k}: units need at least 2 clusters, e.g. k=50")
        return out


def chunked_features(
    source: Source, datamodule: Any, records: Sequence[Any], settings: EvalSettings, desc: str
) -> Iterator[tuple[Any, torch.Tensor]]:
    """``(record, features (T, D))`` in record order, ``CHUNK`` utterances in memory at a time,
    with progress (utterances) under ``desc``."""
    with Progress(desc, len(records), "utt") as progress:
        for start in range(0, len(records), CHUNK):
            chunk = records[start : start + CHUNK]
            feats = utterance_features(source, datamodule, chunk, settings)
            yield from zip(chunk, feats, strict=True)
            progress.update(len(chunk))


def training_frames(
    source: Source,
    datamodule: Any,
    records: Sequence[Any],
    settings: EvalSettings,
    s: UnitSettings,
    hop: int,
) -> np.ndarray:
    """The frames k-means is fitted on ``(N, D)`` float32: every frame of ``records``, or a
    seeded uniform sample of about ``s.max_frames`` of them (each frame kept with one
    probability, drawn from the frame count the lengths give, so memory stays bounded)."""
    expected = sum(max(int(r.num_samples) // hop, 1) for r in records)
    keep = 1.0 if s.max_frames is None else min(1.0, s.max_frames / max(expected, 1))
    rng = np.random.default_rng(s.seed)
    kept = []
    for _, feats in chunked_features(source, datamodule, records, settings, f"{source.name} train"):
        x = feats.numpy().astype(np.float32, copy=False)
        kept.append(x if keep >= 1.0 else x[rng.random(len(x)) < keep])
    if not kept or sum(len(x) for x in kept) == 0:
        raise ValueError("the training split gave no feature frames to fit k-means on")
    return np.concatenate(kept)


def require_sklearn() -> None:
    """A one-line ``ValueError`` naming the extra to install when scikit-learn is missing."""
    try:
        import sklearn  # noqa: F401
    except ImportError as err:
        raise ValueError(
            "units need scikit-learn (k-means), which is not installed: pip install "
            "'cpc_lightning[units]'"
        ) from err


def fit_kmeans(frames: np.ndarray, s: UnitSettings, desc: str = "k-means") -> Any:
    """A fitted ``sklearn.cluster.MiniBatchKMeans`` of ``frames (N, D)`` (see the module doc)."""
    require_sklearn()
    from sklearn.cluster import MiniBatchKMeans

    n = len(frames)
    if n < s.k:
        raise ValueError(f"k={s.k} is more than the {n} training frames: lower k")
    rng = np.random.default_rng(s.seed)
    batch = min(s.batch_size, n)
    init_size = min(n, max(3 * batch, 3 * s.k))
    km = MiniBatchKMeans(
        n_clusters=s.k,
        init="k-means++",
        batch_size=batch,
        init_size=init_size,
        random_state=s.seed,
        compute_labels=False,
    )
    per_epoch = math.ceil(n / batch)
    with Progress(desc, 1 + s.epochs * per_epoch, "batch") as progress:
        km.partial_fit(frames[np.sort(rng.permutation(n)[:init_size])])  # the start
        progress.update()
        for _ in range(s.epochs):
            order = rng.permutation(n)
            for b in range(per_epoch):
                km.partial_fit(frames[order[b * batch : (b + 1) * batch]])
                progress.update()
    return km


def assign(km: Any, feats: torch.Tensor | np.ndarray) -> np.ndarray:
    """Each frame's unit (its nearest centroid) ``(T,)`` int64."""
    x = feats.numpy() if isinstance(feats, torch.Tensor) else np.asarray(feats)
    if len(x) == 0:
        return np.zeros(0, dtype=np.int64)
    return km.predict(x.astype(km.cluster_centers_.dtype, copy=False)).astype(np.int64)


def contingency(
    phones: Sequence[np.ndarray], units: Sequence[np.ndarray], num_phones: int, k: int
) -> np.ndarray:
    """Frame counts ``(num_phones, k)`` of (phone, unit) over utterances: unit frame ``t`` with
    label frame ``t``, truncated to the shorter sequence; negative labels (unlabelled) dropped."""
    counts = np.zeros((num_phones, k), dtype=np.int64)
    for y, z in zip(phones, units, strict=True):
        n = min(len(y), len(z))
        y, z = np.asarray(y[:n], dtype=np.int64), np.asarray(z[:n], dtype=np.int64)
        keep = y >= 0
        np.add.at(counts, (y[keep], z[keep]), 1)
    return counts


def unit_quality(counts: np.ndarray) -> dict[str, float]:
    """Phone purity, cluster purity and PNMI of a ``(phones, units)`` count table (NaN when it
    holds no frame; PNMI NaN when only one phone occurs)."""
    total = counts.sum()
    if total == 0:
        return {"pnmi": math.nan, "phone_purity": math.nan, "cluster_purity": math.nan}
    p = counts / total
    py, pz = p.sum(1), p.sum(0)
    nz = p > 0
    mi = float((p[nz] * np.log(p[nz] / np.outer(py, pz)[nz])).sum())
    hy = float(-(py[py > 0] * np.log(py[py > 0])).sum())
    return {
        "pnmi": mi / hy if hy > 0 else math.nan,
        "phone_purity": float(p.max(0).sum()),
        "cluster_purity": float(p.max(1).sum()),
    }


def _score_source(
    src: Source, datamodule: Any, train: list, test: list, settings: EvalSettings, s: UnitSettings
) -> dict[str, Any]:
    """Fit k-means on ``train``'s frames of one source, score ``test``'s units."""
    t0 = time.perf_counter()
    hop = LABEL_HOP if src.model is None else int(getattr(src.model.encoder, "downsampling", 160))
    frames = training_frames(src, datamodule, train, settings, s, hop)
    km = fit_kmeans(frames, s, f"k-means {src.name}")
    phones, units = [], []
    for rec, feats in chunked_features(src, datamodule, test, settings, f"{src.name} test"):
        phones.append(np.asarray(rec.phones))
        units.append(assign(km, feats))
    top = max(int(np.max(y, initial=-1)) for y in phones)
    num_phones = max(int(datamodule.num_phones), top + 1)
    counts = contingency(phones, units, num_phones, s.k)
    return {
        "label": src.label,
        **unit_quality(counts),
        "units_used": int((counts.sum(0) > 0).sum()),
        "train_frames": len(frames),
        "test_frames": int(counts.sum()),
        "seconds": time.perf_counter() - t0,
    }


def run_units(
    sources: Sequence[Source],
    datamodule: Any,
    settings: EvalSettings,
    s: UnitSettings,
    meta: Mapping[str, Any],
) -> UnitsReport:
    """Phone purity, cluster purity and PNMI (%) of each source's k-means units: fitted on the
    training split, scored on the held-out split's frame phones."""
    train = split_records(datamodule, "train", settings, s.seed)
    test = [r for r in split_records(datamodule, "test", settings, s.seed) if r.phones is not None]
    if not train or not test:
        raise ValueError(
            "task=units: needs training utterances and held-out utterances with frame phones "
            "(e.g. data=timit)"
        )
    report = UnitsReport(task="units", meta=dict(meta), units=asdict(s), sources={})
    rows = {}
    for src in sources:
        entry = _score_source(src, datamodule, train, test, settings, s)
        report.sources[src.name] = entry
        rows[src.label] = {COLUMNS[f]: 100 * entry[f] for f in COLUMNS}
        log.info("units %s: %s", src.name, {f: round(entry[f], 4) for f in COLUMNS})
    note = (
        f"k-means units (k={s.k}) fitted per source on training frames, scored on held-out "
        "frames against their phones (HuBERT, Hsu et al. 2021, sec. IV); higher is better"
    )
    report.table = markdown_table(rows, list(COLUMNS.values()), note)
    return report


def run_units_task(task: Task, inputs: TaskInputs) -> UnitsReport:
    """The runner of ``units`` (options: ``units.*``)."""
    s = UnitSettings.from_node(inputs.options)
    return run_units(inputs.sources, inputs.datamodule, inputs.settings, s, inputs.meta)
