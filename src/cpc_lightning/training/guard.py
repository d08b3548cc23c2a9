"""The divergence guard (``callbacks.guard``, on by default): no NaN reaches the weights.

Each optimizer step, :class:`DivergenceGuard` looks at the loss of the step's backward pass(es)
and at the gradients. If either is non-finite on any DDP rank, every rank skips the step
together (gradients dropped, weights and optimizer state unchanged); the skip is counted
(``guard/skipped_steps`` in the logs) and warned about. ``max_consecutive`` skips in a row stop
the run: :class:`TrainingDiverged` names the steps, the newest checkpoint from before them (the
newest whose loss was finite: the weights a streak starts from are the ones that gave the first
non-finite loss, so they are not saved) and the usual fixes (the entry point prints it as one
line, exit code 2).
While steps are being skipped or the loss is exploded no checkpoint is written, and no checkpoint
is ever written from non-finite weights (``training/finite``, used by ``AtomicModelCheckpoint``).
How a run ends (ok or diverged) is decided from :meth:`DivergenceGuard.verdict` in
``training/end_state.py``.

Under ``16-mixed`` the GradScaler already skips steps whose gradients overflow and lowers its
scale: those are routine, not divergence, and are not counted; only a non-finite loss is. A loss
above ``max_loss_ratio`` x the running median of the last ``window`` finite losses warns (once
per excursion, from the second step on: a divergence often starts at step 1). The guard costs
one host sync per step (the finiteness decision).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from pathlib import Path
from statistics import median
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from cpc_lightning.errors import UserError
from cpc_lightning.run_dir import RunDir
from cpc_lightning.training.checkpoint_files import newest_intact_checkpoint
from cpc_lightning.training.finite import tensors_finite

log = logging.getLogger("cpc_lightning.guard")

FIXES = (
    "lower model.optimizer.lr, set trainer.gradient_clip_val=1.0, train in "
    "trainer.precision=32-true, and check the data for NaN/inf (data.on_bad_file=error)"
)


class TrainingDiverged(UserError):
    """The run diverged: a streak of non-finite steps, or an end in a skipped or exploded step."""


def diverged_message(what: str, folder: Path | None, since: int | None) -> str:
    """The one line of a diverged run: ``what`` happened, the newest checkpoint in ``folder``
    from before step ``since`` (its weights gave finite losses) and the fixes."""
    good = None
    if folder is not None and Path(folder).is_dir():
        good = newest_intact_checkpoint(Path(folder), before_step=since)
    before = "" if since is None else f" from before step {since}"
    if good is None:
        where = f"no checkpoint is{before}: start a new run in another hydra.run.dir"
    else:
        run = RunDir.of_checkpoint(good[0]).root
        where = (
            f"the newest checkpoint{before} is {good[0]} (step {good[1]}): continue from it "
            f"with resume={run} ckpt_path={good[0]}"
        )
    return f"training diverged: {what}; {where}. To fix: {FIXES}"


def _grad_scaler(trainer: pl.Trainer) -> Any:
    return getattr(trainer.precision_plugin, "scaler", None)


class DivergenceGuard(Callback):
    """Skip optimizer steps with a non-finite loss or gradient; stop after too many in a row.

    Args:
        max_consecutive: skipped steps in a row that stop the run (exit code 2).
        max_loss_ratio: warn when the loss exceeds this multiple of its running median.
        window: finite losses the running median is taken over (and the fewest steps between
            two warnings).
        min_history: finite losses needed before the explosion warning can fire.
    """

    def __init__(
        self,
        max_consecutive: int = 10,
        max_loss_ratio: float = 10.0,
        window: int = 100,
        min_history: int = 1,
    ) -> None:
        if int(max_consecutive) < 1:
            raise ValueError(f"callbacks.guard.max_consecutive={max_consecutive} must be >= 1")
        if not float(max_loss_ratio) > 1.0:
            raise ValueError(f"callbacks.guard.max_loss_ratio={max_loss_ratio} must be > 1")
        self.max_consecutive = int(max_consecutive)
        self.max_loss_ratio = float(max_loss_ratio)
        self.window = int(window)
        self.min_history = int(min_history)
        self.skipped = 0  # steps skipped since the run began (resumes included)
        self.consecutive = 0  # skipped steps in a row, up to now
        self.first_bad_step: int | None = None  # global step of the first skip of this streak
        self.explode_start: int | None = None  # step the current loss excursion began
        self.spikes = 0  # loss explosions warned about
        self._history: deque[float] = deque(maxlen=self.window)
        self._exploding = False
        self._warned_at: int | None = None
        self._loss_finite = True
        self._loss_value = math.nan
        self._skip_now = False

    # --- state (part of every checkpoint) -------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "skipped": self.skipped,
            "consecutive": self.consecutive,
            "first_bad_step": self.first_bad_step,
            "spikes": self.spikes,
            "history": list(self._history),
            "exploding": self._exploding,
            "warned_at": self._warned_at,
            "explode_start": self.explode_start,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))
        self.consecutive = int(state_dict.get("consecutive", 0))
        self.first_bad_step = state_dict.get("first_bad_step")
        self.spikes = int(state_dict.get("spikes", 0))
        self._history = deque(state_dict.get("history", []), maxlen=self.window)
        self._exploding = bool(state_dict.get("exploding", False))
        self._warned_at = state_dict.get("warned_at")
        self.explode_start = state_dict.get("explode_start")

    @property
    def in_streak(self) -> bool:
        """Whether the last step was skipped (the weights are those of the streak's start)."""
        return self.consecutive > 0

    @property
    def suspect(self) -> bool:
        """Whether the weights are suspect now (steps skipped, or the loss exploded): no
        checkpoint is written from them."""
        return self.in_streak or self._exploding

    def verdict(self) -> tuple[str, int | None] | None:
        """Why the run diverged if it ended now (what happened, the first bad step), or None:
        its last step was skipped, or its loss is still above ``max_loss_ratio`` x the running
        median of the losses before the excursion."""
        if self.in_streak:
            steps = f"{self.consecutive} steps" if self.consecutive > 1 else "step"
            what = (
                f"its last {steps} (from step {self.first_bad_step}) had a non-finite loss or "
                "gradient and were skipped"
            )
            return what, self.first_bad_step
        if self._exploding and self._history:
            typical = median(self._history)
            what = (
                f"its loss exploded from step {self.explode_start} on and ends at "
                f"{self._loss_value:.4g}, {self._loss_value / typical:.3g} x its running median "
                f"{typical:.4g} (callbacks.guard.max_loss_ratio={self.max_loss_ratio:g})"
            )
            return what, self.explode_start
        return None

    # --- hooks ----------------------------------------------------------------------------
    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor
    ) -> None:
        """Remember whether this (micro-)batch's loss is finite."""
        value = float(loss.detach().float())
        self._loss_finite = self._loss_finite and math.isfinite(value)
        self._loss_value = value

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        """Decide, on every rank together, whether this step is applied."""
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        scaler = _grad_scaler(trainer)
        # Under a GradScaler an overflowing gradient is the scaler's business (it skips the step
        # and lowers its scale); counting it here too would double-count.
        grads_ok = scaler is not None or tensors_finite([p.grad for p in params])
        bad = not (self._loss_finite and grads_ok)
        self._skip_now = trainer.strategy.reduce_boolean_decision(bad, all=False)
        self._loss_finite = True
        if self._skip_now:
            for p in params:  # torch optimizers leave parameters without a gradient untouched
                p.grad = None

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Count, log and warn; stop the run after ``max_consecutive`` skips in a row."""
        step = trainer.global_step - 1  # the step's row in metrics.csv; its weights = step<N>.ckpt
        if self._skip_now:
            self._skip_now = False
            self.skipped += 1
            self.consecutive += 1
            if self.first_bad_step is None:
                self.first_bad_step = step
            if trainer.is_global_zero:
                log.warning(
                    "step %d: non-finite loss or gradient (loss %s): optimizer step skipped "
                    "(%d in a row; callbacks.guard.max_consecutive=%d stops the run)",
                    step,
                    self._loss_value,
                    self.consecutive,
                    self.max_consecutive,
                )
        else:
            self.consecutive, self.first_bad_step = 0, None
            self._watch_loss(trainer, step)
        pl_module.log("guard/skipped_steps", float(self.skipped), on_step=True, on_epoch=False)
        if self.consecutive >= self.max_consecutive:
            self._stop(trainer, step)

    # --- helpers --------------------------------------------------------------------------
    def _watch_loss(self, trainer: pl.Trainer, step: int) -> None:
        """Warn when the loss leaves ``max_loss_ratio`` x the running median of the losses before
        it (exploded losses do not enter that median; one warning per excursion, at most one per
        ``window`` steps)."""
        value = self._loss_value
        if not math.isfinite(value):  # a GradScaler skip with a finite loss never gets here
            return
        exploding = False
        if len(self._history) >= self.min_history:
            typical = median(self._history)
            exploding = typical > 0 and value > self.max_loss_ratio * typical
            quiet = self._warned_at is not None and step - self._warned_at < self.window
            if exploding and not self._exploding:
                self.spikes += 1
                self.explode_start = step
                if trainer.is_global_zero and not quiet:
                    self._warned_at = step
                    log.warning(
                        "step %d: the loss exploded to %.4g, %.3g x its running median %.4g "
                        "(callbacks.guard.max_loss_ratio=%g): %s",
                        step,
                        value,
                        value / typical,
                        typical,
                        self.max_loss_ratio,
                        FIXES,
                    )
        self._exploding = exploding
        if not exploding:
            self.explode_start = None
            self._history.append(value)

    def _stop(self, trainer: pl.Trainer, step: int) -> None:
        callback = trainer.checkpoint_callback
        folder = Path(callback.dirpath) if callback is not None and callback.dirpath else None
        first = self.first_bad_step if self.first_bad_step is not None else step
        what = (
            f"the loss or the gradients were non-finite for {self.consecutive} steps in a row "
            f"(steps {first}-{step}; callbacks.guard.max_consecutive={self.max_consecutive})"
        )
        raise TrainingDiverged(diverged_message(what, folder, first))
