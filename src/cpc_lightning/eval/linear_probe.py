"""The linear probe: softmax regression on standardised frozen features (``hidden > 0``: an MLP,
labelled NOT linear), trained with Adam and a cosine schedule; scored on the held-out split."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from cpc_lightning.eval.head_trainer import train_head
from cpc_lightning.eval.tasks import Split


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
    correct: list[int] = field(default_factory=list)  # 1/0 per test row, in test order


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
    epochs = train_head(
        probe,
        len(xtr),
        lambda idx: nn.functional.cross_entropy(probe(xtr[idx]), ytr[idx]),
        epochs=epochs,
        min_steps=min_steps,
        lr=lr,
        weight_decay=weight_decay,
        batch_size=batch_size,
        generator=gen,
        desc=f"probe {task}",
    )
    result = _score(task, probe, (xtr, ytr), (xte, yte), k)
    result.settings = dict(
        probe="linear" if hidden <= 0 else f"mlp(hidden={hidden}) - NOT linear",
        epochs=epochs,
        min_steps=min_steps,
        lr=lr,
        weight_decay=weight_decay,
        batch_size=batch_size,
        seed=seed,
        max_train=max_train,
        standardised=True,
    )
    return result


@torch.no_grad()
def _score(task: str, probe: nn.Module, train: Split, test: Split, k: int) -> ProbeResult:
    """Accuracies, per-class accuracy, confusion matrix and the majority-class rate."""
    (xtr, ytr), (xte, yte) = train, test
    pred_tr = probe(xtr).argmax(1)
    pred_te = probe(xte).argmax(1)
    conf = torch.zeros(k, k, dtype=torch.long)
    conf.index_put_((yte, pred_te), torch.ones_like(yte), accumulate=True)
    per_class = (conf.diag().float() / conf.sum(1).clamp_min(1)).tolist()
    majority = int(torch.bincount(ytr, minlength=k).argmax())
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
        correct=(pred_te == yte).int().tolist(),
    )


def restrict_to_seen(train: Split, test: Split) -> tuple[Split, int]:
    """Drop test rows whose class never occurs in training (e.g. unseen speakers)."""
    seen = torch.zeros(int(max(train[1].max(), test[1].max())) + 1, dtype=torch.bool)
    seen[train[1]] = True
    keep = seen[test[1]]
    return (test[0][keep], test[1][keep]), int((~keep).sum())


def dev_rows(num_rows: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the training rows kept for fitting and of the ``fraction`` held out (seeded;
    at least one row on each side)."""
    if num_rows < 2:
        raise ValueError(f"choosing probe.weight_decay needs >= 2 training rows, got {num_rows}")
    order = torch.randperm(num_rows, generator=torch.Generator().manual_seed(seed))
    n_dev = min(num_rows - 1, max(1, round(fraction * num_rows)))
    return order[n_dev:].sort().values, order[:n_dev].sort().values


def choose_weight_decay(
    task: str, train: Split, num_classes: int, weight_decays: list[float], fraction: float, **fit
) -> tuple[float, dict[str, float], int]:
    """The weight decay with the best accuracy on ``fraction`` of the TRAINING rows held out
    (probes fitted on the rest; ``fit``: :func:`fit_probe`'s other arguments), every candidate's
    held-out accuracy (``{repr(wd): acc}``) and the held-out row count. Ties: the smaller
    value. Only ``train`` is read, never the test split."""
    fit_idx, dev_idx = dev_rows(len(train[1]), fraction, int(fit.get("seed", 0)))
    x, y = train
    dev_acc = {}
    for wd in weight_decays:
        got = fit_probe(
            task, (x[fit_idx], y[fit_idx]), (x[dev_idx], y[dev_idx]), num_classes,
            weight_decay=wd, **fit,
        )  # fmt: skip
        dev_acc[repr(wd)] = got.accuracy
    best = max(sorted(weight_decays), key=lambda wd: dev_acc[repr(wd)])
    return best, dev_acc, len(dev_idx)
