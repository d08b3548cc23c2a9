"""Frozen-feature extraction and linear probes (phone per frame, speaker per window).

Features come from a frozen encoder/context; the probe is a softmax regression (or, clearly
labelled, a one-hidden-layer MLP) trained with Adam on standardised features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn


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


@torch.no_grad()
def utterance_features(
    encoder: nn.Module, context: nn.Module, wav: torch.Tensor, feature: str = "c"
) -> torch.Tensor:
    """Frame features ``(T, D)`` of one waveform ``(L,)``: ``c`` (context) or ``z`` (encoder)."""
    x = wav.reshape(1, 1, -1).to(next(encoder.parameters()).device)
    z = encoder(x)
    out = context(z) if feature == "c" else z
    return out[0].float().cpu()


def window_slices(num_frames: int, window_frames: int) -> list[slice]:
    """Non-overlapping windows of ``window_frames`` covering an utterance (>= 1 window)."""
    if num_frames <= window_frames:
        return [slice(0, num_frames)]
    return [
        slice(s, s + window_frames) for s in range(0, num_frames - window_frames + 1, window_frames)
    ]


@torch.no_grad()
def audio_probe_data(
    encoder: nn.Module,
    context: nn.Module,
    datamodule: Any,
    split: str,
    tasks: Sequence[str],
    feature: str = "c",
    window_frames: int = 128,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Features and labels per task for one split of an audio DataModule.

    ``phones``: one row per 10 ms frame (frame t <-> label t, truncated to the shorter);
    ``speakers``: ``c`` averaged over windows of ``window_frames``; ``classes``: averaged over
    the utterance.
    """
    was_training = encoder.training, context.training
    encoder.eval()
    context.eval()
    rows: dict[str, list[torch.Tensor]] = {t: [] for t in tasks}
    labels: dict[str, list[torch.Tensor]] = {t: [] for t in tasks}
    for rec in datamodule.items(split):
        feats = utterance_features(encoder, context, datamodule.load(rec), feature)
        if "phones" in rows and rec.phones is not None:
            n = min(len(feats), len(rec.phones))
            rows["phones"].append(feats[:n])
            labels["phones"].append(torch.as_tensor(np.asarray(rec.phones[:n]), dtype=torch.long))
        if "speakers" in rows and rec.speaker_index is not None and rec.speaker_index >= 0:
            for sl in window_slices(len(feats), window_frames):
                rows["speakers"].append(feats[sl].mean(0, keepdim=True))
                labels["speakers"].append(torch.tensor([rec.speaker_index]))
        if "classes" in rows and rec.label_index is not None and rec.label_index >= 0:
            rows["classes"].append(feats.mean(0, keepdim=True))
            labels["classes"].append(torch.tensor([rec.label_index]))
    encoder.train(was_training[0])
    context.train(was_training[1])
    return {t: (torch.cat(rows[t]), torch.cat(labels[t])) for t in tasks if rows[t] and labels[t]}


def fit_probe(
    task: str,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    num_classes: int | None = None,
    epochs: int = 20,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    batch_size: int = 1024,
    hidden: int = 0,
    seed: int = 0,
    max_train: int | None = None,
) -> ProbeResult:
    """Train a linear softmax probe (``hidden > 0``: an MLP, not linear) and score the test set."""
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
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
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
            lr=lr,
            weight_decay=weight_decay,
            batch_size=batch_size,
            seed=seed,
            standardised=True,
        ),
    )


def markdown_table(results: dict[str, dict[str, ProbeResult]], tasks: Sequence[str]) -> str:
    """Rows = feature sources (e.g. CPC, random init), columns = tasks; test accuracy in %."""
    header = "| features | " + " | ".join(tasks) + " |"
    lines = [header, "|" + "---|" * (len(tasks) + 1)]
    for name, per_task in results.items():
        cells = [f"{100 * per_task[t].accuracy:.1f} %" if t in per_task else "-" for t in tasks]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    any_row = next(iter(results.values()), {})
    cells = [f"{100 * any_row[t].chance:.1f} %" if t in any_row else "-" for t in tasks]
    lines.append("| majority class | " + " | ".join(cells) + " |")
    return "\n".join(lines)
