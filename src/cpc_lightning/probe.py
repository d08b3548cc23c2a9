"""Frozen-feature extraction and linear probes, shared by ``train`` (end of run) and ``evaluate``.

Feature sources: a model's ``(encoder, context)`` pair (trained, or the same architecture at
random init) and, for audio, an MFCC baseline. Tasks:

``phones``    one row per 10 ms frame. Encoder frame ``t`` covers samples ``[160 t, 160 t + 160)``
              (``T = L // 160`` for ``L`` a multiple of 160); CPC label frame ``i`` covers
              ``[160 i, 160 i + 400)``. Row ``t`` pairs feature frame ``t`` with label frame ``t``;
              the longer of the two sequences is truncated (the encoder's last, partial frames
              have no label). MFCC frames (25 ms window, 10 ms hop, no centring) are label frames.
``speakers``  features pooled over non-overlapping windows of ``data.window`` samples.
``classes``   features pooled over the utterance (audio) or over the patch grid (images).

The probe is a softmax regression on standardised features (``hidden > 0``: a one-hidden-layer
MLP, labelled as NOT linear). Features are extracted once per (task, source, settings) and
cached as ``<cache_dir>/<task>_<source>_<hash>.pt``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cpc_lightning.builder import UserError, find_checkpoint, load_run_config, load_trained
from cpc_lightning.module import grid_to_columns

log = logging.getLogger("cpc_lightning.probe")

TASKS = ("phones", "speakers", "classes")
BASELINES = ("random_init", "mfcc")
LABELS = {
    "cpc": "CPC (trained)",
    "random_init": "random init (same nets)",
    "mfcc": "MFCC (39-d)",
}
HOP_SECONDS = 0.010
WINDOW_SECONDS = 0.025

Split = tuple[torch.Tensor, torch.Tensor]


@dataclass
class ProbeResult:
    """Accuracy of one probe on the held-out split, with its per-class detail."""

    task: str
    accuracy: float
    train_accuracy: float
    num_classes: int
    num_train: int
    num_test: int
    chance: float
    per_class: list[float] = field(default_factory=list)
    confusion: list[list[int]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalSettings:
    """What to extract and how to train the probe (defaults: the ``evaluate`` CLI's)."""

    feature: str = "c"  # c (context) | z (encoder)
    layer: int | None = None  # GRU/LSTM context layer (0-based, negative from the top); null: last
    pool: str = "mean"  # pooled tasks, learned features: mean | meanstd (MFCC: always meanstd)
    epochs: int = 20
    min_steps: int = 1000  # more epochs when the data is small: at least this many updates
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 1024
    hidden: int = 0  # > 0: one-hidden-layer MLP probe (NOT linear)
    seeds: list[int] = field(default_factory=lambda: [0])
    max_train_rows: int | None = None  # subsample training rows (frames/windows) for the probe
    max_train_utterances: int | None = None  # audio: seeded cap per split on utterances/images
    max_test_utterances: int | None = None
    extract_batch: int = 16
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "32"  # 32 | bf16 (autocast on CUDA only)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> EvalSettings:
        """Keep only known keys (config sections may carry others)."""
        known = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in dict(values).items() if k in known and v is not None}
        if "seeds" in kw:
            seeds = kw["seeds"]
            kw["seeds"] = [int(seeds)] if isinstance(seeds, int) else [int(s) for s in seeds]
        if "precision" in kw:
            kw["precision"] = str(kw["precision"])
        out = cls(**kw)
        if out.feature not in ("c", "z"):
            raise ValueError(f"feature={out.feature!r} must be 'c' or 'z'")
        if out.pool not in ("mean", "meanstd"):
            raise ValueError(f"pool={out.pool!r} must be 'mean' or 'meanstd'")
        if out.precision not in ("32", "bf16"):
            raise ValueError(f"precision={out.precision!r} must be 32 or bf16")
        return out


@dataclass
class Source:
    """A feature source: ``nets = (encoder, context)`` for models, None for MFCC."""

    name: str
    nets: tuple[nn.Module, nn.Module] | None = None
    tag: str | None = None  # identifies the weights for the cache (None: do not cache)

    @property
    def label(self) -> str:
        return LABELS.get(self.name, self.name)


# ------------------------------------------------------------------------------------------------
# Frame features
# ------------------------------------------------------------------------------------------------
def device_of(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _rnn_prefix(context: nn.Module, layer: int) -> nn.Module:
    """The first ``layer + 1`` layers of a GRU/LSTM context as a stand-alone module."""
    rnn = getattr(context, "rnn", None)
    if not isinstance(rnn, (nn.GRU, nn.LSTM)):
        raise ValueError(
            f"layer={layer} needs a GRU/LSTM context (context=gru|lstm); "
            f"{type(context).__name__} has no per-layer outputs here"
        )
    n = rnn.num_layers
    keep = layer + n if layer < 0 else layer
    if not 0 <= keep < n:
        raise ValueError(f"layer={layer} is out of range for a {n}-layer context")
    sub = type(rnn)(rnn.input_size, rnn.hidden_size, num_layers=keep + 1, batch_first=True)
    state = {k: v for k, v in rnn.state_dict().items() if int(k.rsplit("_l", 1)[1]) <= keep}
    sub.load_state_dict(state)
    return sub.to(next(rnn.parameters()).device)


def frame_features(
    encoder: nn.Module,
    context: nn.Module,
    wav: torch.Tensor,
    feature: str = "c",
    layer: int | None = None,
) -> torch.Tensor:
    """Audio ``(B, L)`` -> ``(B, T, D)``: context ``c`` (or a GRU/LSTM layer) or encoder ``z``."""
    z = encoder(wav.unsqueeze(1))
    if feature == "z":
        return z
    if layer is None:
        return context(z)
    return _rnn_prefix(context, layer)(z)[0]


def grid_features(
    encoder: nn.Module, context: nn.Module, x: torch.Tensor, feature: str = "c"
) -> torch.Tensor:
    """Patch grids ``(B, G, G, C, P, P)`` -> features pooled over the grid ``(B, D)``."""
    z = encoder(x)  # (B, H, W, D)
    if feature == "z":
        return z.mean((1, 2))
    if getattr(context, "grid", False):
        return context(z).mean((1, 2))
    b = z.shape[0]
    c = context(grid_to_columns(z))  # (B * W, H, C), batch-major
    return c.reshape(b, -1, c.shape[-1]).mean(1)


def mfcc_transform(sample_rate: int = 16000) -> nn.Module:
    """13 MFCCs, 25 ms window, 10 ms hop, no centring (frame i covers [hop i, hop i + win))."""
    import torchaudio

    hop = round(sample_rate * HOP_SECONDS)
    win = round(sample_rate * WINDOW_SECONDS)
    return torchaudio.transforms.MFCC(
        sample_rate=sample_rate,
        n_mfcc=13,
        melkwargs={
            "n_fft": win,
            "win_length": win,
            "hop_length": hop,
            "n_mels": 40,
            "center": False,
        },
    )


def mfcc_frames(transform: nn.Module, wav: torch.Tensor) -> torch.Tensor:
    """Waveforms ``(B, L)`` -> ``(B, T, 39)``: MFCC + deltas + delta-deltas, ``T`` label frames."""
    import torchaudio.functional as AF

    win = transform.MelSpectrogram.spectrogram.win_length
    if wav.shape[-1] < win:
        wav = nn.functional.pad(wav, (0, win - wav.shape[-1]))
    m = transform(wav)  # (B, 13, T)
    d1 = AF.compute_deltas(m)
    d2 = AF.compute_deltas(d1)
    return torch.cat([m, d1, d2], 1).transpose(1, 2)


def window_slices(num_frames: int, window_frames: int) -> list[slice]:
    """Non-overlapping windows of ``window_frames`` covering an utterance (>= 1 window)."""
    if num_frames <= window_frames:
        return [slice(0, num_frames)]
    return [
        slice(s, s + window_frames) for s in range(0, num_frames - window_frames + 1, window_frames)
    ]


def _pool(frames: torch.Tensor, pool: str) -> torch.Tensor:
    mean = frames.mean(0)
    if pool == "mean":
        return mean
    std = frames.std(0, unbiased=False) if len(frames) > 1 else torch.zeros_like(mean)
    return torch.cat([mean, std])


def align_phones(feats: torch.Tensor, phones: np.ndarray | torch.Tensor) -> Split:
    """Pair feature frame t with label frame t; truncate to the shorter; drop negative labels."""
    labels = torch.as_tensor(np.asarray(phones), dtype=torch.long)
    n = min(len(feats), len(labels))
    x, y = feats[:n], labels[:n]
    keep = y >= 0
    return x[keep], y[keep]


def task_rows(
    task: str, feats: torch.Tensor, record: Any, window_frames: int, pool: str
) -> Split | None:
    """Rows ``(N, D)`` and labels ``(N,)`` of one utterance for ``task`` (None: no label)."""
    if task == "phones":
        if getattr(record, "phones", None) is None:
            return None
        return align_phones(feats, record.phones)
    if len(feats) == 0:
        return None
    if task == "speakers":
        if getattr(record, "speaker_index", -1) < 0:
            return None
        rows = [_pool(feats[sl], pool) for sl in window_slices(len(feats), window_frames)]
        x = torch.stack(rows)
        return x, torch.full((len(x),), int(record.speaker_index), dtype=torch.long)
    if task == "classes":
        if getattr(record, "label_index", -1) < 0:
            return None
        return _pool(feats, pool)[None], torch.tensor([int(record.label_index)])
    raise ValueError(f"task={task!r} is not one of {TASKS}")


def length_batches(
    records: Sequence[Any], load: Callable[[Any], torch.Tensor], batch_size: int
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """``(indices, (B, L) waveforms)`` grouping utterances of equal length (no padding, exact)."""
    groups: dict[int, list[tuple[int, torch.Tensor]]] = {}
    for i, rec in enumerate(records):
        wav = load(rec).float().reshape(-1)
        g = groups.setdefault(len(wav), [])
        g.append((i, wav))
        if len(g) >= batch_size:
            yield [j for j, _ in g], torch.stack([w for _, w in g])
            groups[len(wav)] = []
    for g in groups.values():
        if g:
            yield [j for j, _ in g], torch.stack([w for _, w in g])


def select(items: Sequence[Any], cap: int | None, seed: int) -> list[Any]:
    """A seeded subset of at most ``cap`` items, in their original order (all if no cap)."""
    if cap is None or len(items) <= cap:
        return list(items)
    keep = sorted(np.random.default_rng(seed).permutation(len(items))[:cap].tolist())
    return [items[i] for i in keep]


@torch.no_grad()
def audio_task_features(
    source: Source,
    datamodule: Any,
    split: str,
    tasks: Sequence[str],
    settings: EvalSettings,
    window_frames: int,
    seed: int = 0,
) -> dict[str, Split]:
    """Rows and labels per task for one split of an audio DataModule, from one source."""
    records = datamodule.items(split)
    cap = settings.max_train_utterances if split == "train" else settings.max_test_utterances
    records = select(records, cap, seed)
    device = device_of(settings.device)
    if source.nets is None:
        transform = mfcc_transform(int(datamodule.sample_rate)).to(device)
        featurize = lambda w: mfcc_frames(transform, w)  # noqa: E731
        pool = "meanstd"
    else:
        enc, ctx = source.nets
        states = enc.training, ctx.training
        enc.eval().to(device)
        ctx.eval().to(device)
        featurize = lambda w: frame_features(enc, ctx, w, settings.feature, settings.layer)  # noqa: E731
        pool = settings.pool
    autocast = settings.precision == "bf16" and device.type == "cuda"
    per_record: dict[int, torch.Tensor] = {}
    for idx, wav in length_batches(records, datamodule.load, settings.extract_batch):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            feats = featurize(wav.to(device)).float().cpu()
        for j, i in enumerate(idx):
            per_record[i] = feats[j]
    if source.nets is not None:
        source.nets[0].train(states[0])
        source.nets[1].train(states[1])
    out: dict[str, Split] = {}
    for task in tasks:
        xs, ys = [], []
        for i, rec in enumerate(records):
            got = task_rows(task, per_record[i], rec, window_frames, pool)
            if got is not None and len(got[1]):
                xs.append(got[0])
                ys.append(got[1])
        if xs:
            out[task] = (torch.cat(xs), torch.cat(ys))
    return out


@torch.no_grad()
def image_class_features(
    source: Source, datamodule: Any, split: str, settings: EvalSettings
) -> Split:
    """Grid-pooled features and class labels of one split of an image DataModule."""
    if source.nets is None:
        raise ValueError("image runs have no MFCC baseline")
    device = device_of(settings.device)
    enc, ctx = source.nets
    states = enc.training, ctx.training
    enc.eval().to(device)
    ctx.eval().to(device)
    cap = settings.max_train_utterances if split == "train" else settings.max_test_utterances
    autocast = settings.precision == "bf16" and device.type == "cuda"
    xs, ys, seen = [], [], 0
    for batch in datamodule.feature_loader(split, batch_size=max(settings.extract_batch, 1)):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            f = grid_features(enc, ctx, batch["x"].to(device), settings.feature)
        xs.append(f.float().cpu())
        ys.append(batch["label"].long())
        seen += len(f)
        if cap is not None and seen >= cap:
            break
    enc.train(states[0])
    ctx.train(states[1])
    x, y = torch.cat(xs), torch.cat(ys)
    return (x[:cap], y[:cap]) if cap is not None else (x, y)


def is_image_data(datamodule: Any) -> bool:
    """Image DataModules expose ``feature_loader``; audio ones ``items``/``load``."""
    return hasattr(datamodule, "feature_loader") and not hasattr(datamodule, "items")


def class_names(task: str, datamodule: Any) -> list[str]:
    """Names of the label indices of ``task`` for this DataModule."""
    if task == "phones":
        return [str(i) for i in range(int(getattr(datamodule, "num_phones", 0) or 0))]
    if task == "speakers":
        return list(getattr(datamodule, "speakers", []))
    return list(getattr(datamodule, "classes", []))


def available_tasks(datamodule: Any) -> list[str]:
    """Tasks this DataModule has labels for."""
    if is_image_data(datamodule):
        return ["classes"]
    out = []
    if int(getattr(datamodule, "num_phones", 0) or 0) > 0:
        out.append("phones")
    if len(getattr(datamodule, "speakers", [])) > 1:
        out.append("speakers")
    if len(getattr(datamodule, "classes", [])) > 1:
        out.append("classes")
    return out


def _hash(payload: Mapping[str, Any]) -> str:
    blob = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def extract_features(
    source: Source,
    datamodule: Any,
    tasks: Sequence[str],
    settings: EvalSettings,
    data_key: Mapping[str, Any],
    cache_dir: Path | None = None,
    seed: int = 0,
) -> tuple[dict[str, dict[str, Split]], dict[str, Any]]:
    """``{task: {"train": (X, y), "test": (X, y)}}`` for one source, via the on-disk cache.

    ``data_key`` identifies the data (its config); with ``source.tag`` and the extraction settings
    it names the cache file. Returns the features and ``{"seconds", "cached"}`` per task.
    """
    window_frames = max(1, int(getattr(datamodule, "window", 20480)) // 160)
    key_settings = {
        k: getattr(settings, k)
        for k in ("feature", "layer", "pool", "max_train_utterances", "max_test_utterances")
    }
    paths: dict[str, Path | None] = {}
    out: dict[str, dict[str, Split]] = {}
    info: dict[str, Any] = {}
    for task in tasks:
        path = None
        if cache_dir is not None and source.tag is not None:
            h = _hash(
                {
                    "task": task,
                    "source": source.name,
                    "tag": source.tag,
                    "data": data_key,
                    "window_frames": window_frames,
                    "seed": seed,
                    **key_settings,
                }
            )
            path = Path(cache_dir) / f"{task}_{source.name}_{h}.pt"
            if path.is_file():
                out[task] = torch.load(path, map_location="cpu", weights_only=True)
                info[task] = {"seconds": 0.0, "cached": True, "cache_file": str(path)}
                continue
        paths[task] = path
    todo = [t for t in tasks if t not in out]
    if not todo:
        return out, info
    t0 = time.perf_counter()
    if is_image_data(datamodule):
        got = {
            "classes": {
                s: image_class_features(source, datamodule, s, settings) for s in ("train", "test")
            }
        }
    else:
        per_split = {
            s: audio_task_features(source, datamodule, s, todo, settings, window_frames, seed)
            for s in ("train", "test")
        }
        got = {t: {s: per_split[s][t] for s in per_split if t in per_split[s]} for t in todo}
    seconds = time.perf_counter() - t0
    for task in todo:
        feats = got.get(task, {})
        if "train" not in feats or "test" not in feats:
            continue
        out[task] = feats
        info[task] = {"seconds": seconds, "cached": False}
        path = paths.get(task)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save(feats, tmp)
            tmp.replace(path)
            info[task]["cache_file"] = str(path)
    return out, info


# ------------------------------------------------------------------------------------------------
# Probe
# ------------------------------------------------------------------------------------------------
def fit_probe(
    task: str,
    train: Split,
    test: Split,
    num_classes: int | None = None,
    epochs: int = 20,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    batch_size: int = 1024,
    hidden: int = 0,
    seed: int = 0,
    max_train: int | None = None,
    min_steps: int = 0,
) -> ProbeResult:
    """Train a linear softmax probe (``hidden > 0``: an MLP, not linear) and score the test set.

    Adam with a cosine schedule over ``epochs`` (raised so that there are at least
    ``min_steps`` updates) on features standardised with the training statistics.
    """
    gen = torch.Generator().manual_seed(seed)
    xtr, ytr = train
    xte, yte = test
    if max_train is not None and len(xtr) > max_train:
        keep = torch.randperm(len(xtr), generator=gen)[:max_train]
        xtr, ytr = xtr[keep], ytr[keep]
    k = int(num_classes or int(max(ytr.max(), yte.max())) + 1)
    mean, std = xtr.mean(0), xtr.std(0).clamp_min(1e-6)
    xtr, xte = (xtr - mean) / std, (xte - mean) / std
    torch.manual_seed(seed)
    d = xtr.shape[1]
    probe = (
        nn.Linear(d, k)
        if hidden <= 0
        else nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, k))
    )
    opt = torch.optim.Adam(probe.parameters(), lr=lr, weight_decay=weight_decay)
    n = len(xtr)
    steps_per_epoch = max(1, (n + batch_size - 1) // batch_size)
    epochs = max(epochs, math.ceil(min_steps / steps_per_epoch))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, epochs * steps_per_epoch))
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            loss = nn.functional.cross_entropy(probe(xtr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    with torch.no_grad():
        pred_tr = probe(xtr).argmax(1)
        pred_te = probe(xte).argmax(1)
    conf = torch.zeros(k, k, dtype=torch.long)
    conf.index_put_((yte, pred_te), torch.ones_like(yte), accumulate=True)
    support = conf.sum(1)
    per_class = (conf.diag().float() / support.clamp_min(1)).tolist()
    counts = torch.bincount(ytr, minlength=k).float()
    majority = int(counts.argmax())
    return ProbeResult(
        task=task,
        accuracy=float((pred_te == yte).float().mean()),
        train_accuracy=float((pred_tr == ytr).float().mean()),
        num_classes=k,
        num_train=len(xtr),
        num_test=len(xte),
        chance=float((yte == majority).float().mean()),
        per_class=per_class,
        confusion=conf.tolist(),
        settings=dict(
            probe="linear" if hidden <= 0 else f"mlp(hidden={hidden}) - NOT linear",
            epochs=epochs,
            min_steps=min_steps,
            lr=lr,
            weight_decay=weight_decay,
            batch_size=batch_size,
            seed=seed,
            max_train=max_train,
            standardised=True,
        ),
    )


def markdown_table(
    results: Mapping[str, Mapping[str, ProbeResult]], tasks: Sequence[str], probe: str = ""
) -> str:
    """Rows = feature sources (e.g. CPC, random init), columns = tasks; test accuracy in %."""
    header = "| features | " + " | ".join(tasks) + " |"
    lines = [header, "|" + "---|" * (len(tasks) + 1)]
    for name, per_task in results.items():
        cells = [f"{100 * per_task[t].accuracy:.1f} %" if t in per_task else "-" for t in tasks]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    cells = []
    for t in tasks:
        row = next((r[t] for r in results.values() if t in r), None)
        cells.append(f"{100 * row.chance:.1f} %" if row is not None else "-")
    lines.append("| majority class | " + " | ".join(cells) + " |")
    if probe:
        lines.append(f"\nprobe: {probe}")
    return "\n".join(lines)


def _restrict_to_seen(train: Split, test: Split) -> tuple[Split, int]:
    """Drop test rows whose class never occurs in training (e.g. unseen speakers)."""
    seen = torch.zeros(int(max(train[1].max(), test[1].max())) + 1, dtype=torch.bool)
    seen[train[1]] = True
    keep = seen[test[1]]
    return (test[0][keep], test[1][keep]), int((~keep).sum())


def evaluate_sources(
    sources: Sequence[Source],
    datamodule: Any,
    tasks: Sequence[str],
    settings: EvalSettings,
    data_key: Mapping[str, Any],
    out_dir: Path | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Probe every source on every task; write ``<out_dir>/<task>.json``; return the reports.

    Every source sees the same utterances, split and probe settings. A report holds, per source,
    the accuracy (mean over ``settings.seeds``), per-class accuracy and confusion matrix (first
    seed), data counts and the Markdown table.
    """
    cache_dir = Path(out_dir) / "cache" if out_dir is not None else None
    seed0 = settings.seeds[0]
    probe_kind = (
        "linear softmax"
        if settings.hidden <= 0
        else f"MLP, one hidden layer of {settings.hidden} (NOT linear)"
    )
    reports: dict[str, dict[str, Any]] = {}
    table_rows: dict[str, dict[str, ProbeResult]] = {}
    feats_by_source = {}
    for src in sources:
        t0 = time.perf_counter()
        feats, info = extract_features(src, datamodule, tasks, settings, data_key, cache_dir, seed0)
        feats_by_source[src.name] = (feats, info, time.perf_counter() - t0)
    for task in tasks:
        names = class_names(task, datamodule)
        report: dict[str, Any] = {
            "task": task,
            **dict(meta or {}),
            "feature": settings.feature,
            "layer": settings.layer,
            "pool": settings.pool,
            "class_names": names,
            "probe": {
                "kind": probe_kind,
                "linear": settings.hidden <= 0,
                **{k: v for k, v in asdict(settings).items() if k not in ("feature", "layer")},
            },
            "sources": {},
        }
        for src in sources:
            feats, info, seconds = feats_by_source[src.name]
            if task not in feats:
                continue
            train, test = feats[task]["train"], feats[task]["test"]
            test, dropped = _restrict_to_seen(train, test)
            if len(test[1]) == 0:
                log.warning("%s/%s: no test rows with a class seen in training", task, src.name)
                continue
            k = max(len(names), int(max(train[1].max(), test[1].max())) + 1)
            runs = [
                fit_probe(
                    task,
                    train,
                    test,
                    num_classes=k,
                    epochs=settings.epochs,
                    lr=settings.lr,
                    weight_decay=settings.weight_decay,
                    batch_size=settings.batch_size,
                    hidden=settings.hidden,
                    seed=s,
                    max_train=settings.max_train_rows,
                    min_steps=settings.min_steps,
                )
                for s in settings.seeds
            ]
            accs = [r.accuracy for r in runs]
            first = runs[0]
            table_rows.setdefault(src.label, {})[task] = ProbeResult(
                **{**asdict(first), "accuracy": float(np.mean(accs))}
            )
            report["sources"][src.name] = {
                "label": src.label,
                "accuracy": float(np.mean(accs)),
                "accuracy_std": float(np.std(accs)),
                "accuracies": accs,
                "seeds": list(settings.seeds),
                "train_accuracy": first.train_accuracy,
                "chance_majority": first.chance,
                "num_classes": first.num_classes,
                "dim": int(train[0].shape[1]),
                "counts": {
                    "train_rows": int(len(train[1])),
                    "train_rows_used": first.num_train,
                    "test_rows": int(len(test[1])),
                    "test_rows_dropped_unseen_class": dropped,
                },
                "per_class_accuracy": first.per_class,
                "confusion": first.confusion,
                "extract": {**info.get(task, {}), "source_seconds": seconds},
            }
        if not report["sources"]:
            continue
        report["table"] = markdown_table(
            {lab: {task: r[task]} for lab, r in table_rows.items() if task in r}, [task], probe_kind
        )
        reports[task] = report
        if out_dir is not None:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            (Path(out_dir) / f"{task}.json").write_text(json.dumps(report, indent=2))
    if reports:
        combined = markdown_table(table_rows, [t for t in tasks if t in reports], probe_kind)
        for r in reports.values():
            r["combined_table"] = combined
    return reports


def combined_table(reports: Mapping[str, Mapping[str, Any]]) -> str:
    """The Markdown table of every task in ``reports`` (sources as rows)."""
    return next(iter(reports.values()))["combined_table"] if reports else ""


def weights_tag(path: Path | None) -> str | None:
    """A cache tag for a checkpoint file (path, size, mtime), or None."""
    if path is None or not Path(path).is_file():
        return None
    st = Path(path).stat()
    return f"{Path(path).resolve()}:{st.st_size}:{st.st_mtime_ns}"


def accuracy_summary(reports: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Flat ``probe/<task>/<source>`` -> accuracy (for loggers)."""
    return {
        f"probe/{task}/{name}": float(src["accuracy"])
        for task, rep in reports.items()
        for name, src in rep["sources"].items()
        if not math.isnan(src["accuracy"])
    }


# ------------------------------------------------------------------------------------------------
# Shared by the evaluate and extract entry points
# ------------------------------------------------------------------------------------------------
def resolve_run(cfg: DictConfig) -> tuple[Path, Path | None]:
    """``(run_dir, checkpoint)`` from ``run_dir`` and/or ``checkpoint``."""
    ckpt = Path(cfg.checkpoint).expanduser().resolve() if cfg.get("checkpoint") else None
    if cfg.get("run_dir"):
        return Path(cfg.run_dir).expanduser().resolve(), ckpt
    if ckpt is None:
        raise UserError("give run_dir=<training run dir> or checkpoint=<file>")
    if not ckpt.is_file():
        raise UserError(f"checkpoint={ckpt} does not exist")
    return (ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent), ckpt


def data_config(cfg: DictConfig, run_cfg: DictConfig) -> DictConfig:
    """The run's data config, or the chosen ``data=<option>``; non-null ``data.*`` keys override."""
    given = cfg.get("data") or OmegaConf.create({})
    if "_target_" in given:
        return given
    data = OmegaConf.create(OmegaConf.to_container(run_cfg.data, resolve=True))
    for key, value in given.items():
        if value is not None:
            data[key] = value
    return data


def load_run(cfg: DictConfig) -> tuple[Path, Path, DictConfig, Any]:
    """``(run_dir, checkpoint, run config, frozen model)``; clear errors for a wrong dir."""
    run_dir, ckpt = resolve_run(cfg)
    if not run_dir.is_dir():
        raise UserError(f"run_dir={run_dir} does not exist")
    load_run_config(run_dir)  # fails with one message before anything is built
    ckpt = ckpt or find_checkpoint(run_dir)
    run_cfg, model = load_trained(run_dir, ckpt)
    for p in model.parameters():
        p.requires_grad_(False)
    return run_dir, ckpt, run_cfg, model
