"""Cost of the health and throughput signals (``training/health.py``) on the paper's audio step.

Trains the paper configuration (batch 8 x 20480, 512 channels, GRU 256, K = 12, N = 128) with
Lightning on 2 CPU threads, logging every step (the worst case; the default logs every 10), and
reports, in one run:

- the time spent inside the callback's hooks (its logging included) as a fraction of the step;
- the median step time with and without the callback, passes interleaved (noisier: it also
  counts Lightning's handling of the extra metrics).

Usage: ``python benchmarks/overhead.py [--threads 2] [--steps 8] [--passes 3]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import CSVLogger
from step import paper_model
from torch.utils.data import DataLoader, Dataset

from cpc_lightning.training.health import TrainingHealth

HOOKS = (
    "on_train_epoch_start",
    "on_train_batch_start",
    "on_before_optimizer_step",
    "on_train_batch_end",
    "on_validation_end",
    "on_save_checkpoint",
)


class TimedHealth(TrainingHealth):
    """:class:`TrainingHealth` with the wall time of every hook call added up."""

    def __init__(self) -> None:
        super().__init__()
        self.spent = 0.0
        for name in HOOKS:
            hook = getattr(self, name)

            def timed(*args: Any, _hook=hook, **kwargs: Any) -> Any:
                t = time.perf_counter()
                try:
                    return _hook(*args, **kwargs)
                finally:
                    self.spent += time.perf_counter() - t

            setattr(self, name, timed)


class StepClock(Callback):
    """Wall time from one ``on_train_batch_end`` to the next (the full step period), from the
    third step on (the first steps create the optimiser state and warm the allocator)."""

    def __init__(self, skip: int = 2) -> None:
        self.times: list[float] = []
        self.skip = skip
        self._last: float | None = None

    def on_train_batch_end(self, *args: Any) -> None:
        now = time.perf_counter()
        if self._last is not None and self.skip <= 0:
            self.times.append(now - self._last)
        self.skip -= 1
        self._last = now


class SameBatch(Dataset):
    """The same random waveform batch item again and again (no data-loading cost)."""

    def __init__(self, n: int, window: int) -> None:
        self.x = torch.randn(n, 1, window)
        self.mask = torch.ones(n, window, dtype=torch.bool)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "mask": self.mask[i]}


def one_pass(model: Any, loader: DataLoader, steps: int, health: bool) -> tuple[list, float]:
    """Step periods of one fit (first step dropped) and the seconds spent in the health hooks."""
    clock = StepClock()
    callbacks: list[Callback] = [clock]
    timed = TimedHealth() if health else None
    if timed is not None:
        callbacks.insert(0, timed)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = pl.Trainer(
            accelerator="cpu",
            max_steps=steps,
            log_every_n_steps=1,
            logger=CSVLogger(tmp, name="", version=""),
            callbacks=callbacks,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
        )
        trainer.fit(model, loader)
    return clock.times, (timed.spent / steps if timed is not None else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--channels", type=int, default=512)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    warnings.filterwarnings("ignore")
    model = paper_model(args.channels)
    loader = DataLoader(SameBatch(64, 20480), batch_size=8, shuffle=False)
    periods: dict[bool, list[float]] = {False: [], True: []}
    hook_time: list[float] = []
    one_pass(model, loader, 3, True)  # warm-up: first fit of the process
    for _ in range(args.passes):
        for health in (False, True):
            times, spent = one_pass(model, loader, args.steps, health)
            periods[health] += times
            if health:
                hook_time.append(spent)
    base, with_health = statistics.median(periods[False]), statistics.median(periods[True])
    spent = statistics.median(hook_time)
    print(
        f"# health/throughput logging overhead: paper step, {args.threads} threads, logging "
        f"every step, {args.passes} interleaved passes x {args.steps} steps"
    )
    print(f"  step without the callback (median)  : {base:.3f} s")
    print(f"  step with it (median)                : {with_health:.3f} s")
    print(f"  time inside its hooks, per step      : {1000 * spent:.2f} ms")
    print(f"  hooks / step time                    : {100 * spent / base:.3f} %")
    print(f"  step time with / without             : {100 * (with_health / base - 1):+.2f} %")


if __name__ == "__main__":
    main()
