"""How a training run ended: ``ok`` or ``diverged``, decided here and only here.

A run is *diverged* when, at its end,

- the divergence guard was skipping steps (its last step had a non-finite loss or gradient,
  whether or not ``callbacks.guard.max_consecutive`` stopped it), or
- its training loss was still exploded: above ``callbacks.guard.max_loss_ratio`` x the running
  median of the losses before the excursion (the guard's own warning rule, so a run whose loss
  came back down is ok), or
- a final ``*loss`` metric (``train/loss``, ``val/loss``) is NaN or inf.

Otherwise it is *ok*. ``train`` writes the status into the result file (``status``, with
``diverged`` saying why) and, for a diverged run, writes no final checkpoint and exits with code 2
and one line naming the newest checkpoint from before the first bad step (whose weights gave
finite losses) and the fixes. A run that raised anything else has no result file (a sweep
point's ``failed.txt`` says why).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from cpc_lightning.training.guard import DivergenceGuard, TrainingDiverged, diverged_message

OK = "ok"
DIVERGED = "diverged"


@dataclass(frozen=True)
class EndState:
    """A run's end: ``status`` (``ok`` / ``diverged``), why, and the first bad step if known."""

    status: str
    why: str = ""
    since: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == OK

    def error(self, checkpoints: Path | None) -> TrainingDiverged:
        """The one-line error of a diverged run (``checkpoints``: where to look for a good one)."""
        return TrainingDiverged(diverged_message(self.why, checkpoints, self.since))


def guard_of(trainer: pl.Trainer) -> DivergenceGuard | None:
    """The trainer's divergence guard (None when ``callbacks.guard`` is off)."""
    return next((cb for cb in trainer.callbacks if isinstance(cb, DivergenceGuard)), None)


def end_state(trainer: pl.Trainer, metrics: dict[str, Any]) -> EndState:
    """Decide how the run ended from its guard and its final metrics (see the module doc)."""
    guard = guard_of(trainer)
    verdict = guard.verdict() if guard is not None else None
    if verdict is not None:
        return EndState(DIVERGED, *verdict)
    for key in sorted(metrics):
        value = float(metrics[key])
        if key.rsplit("/", 1)[-1].endswith("loss") and not math.isfinite(value):
            return EndState(DIVERGED, f"its final {key} is {value}")
    return EndState(OK)
