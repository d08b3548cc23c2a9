"""Throughput and health signals, logged every ``log_every_n_steps`` and shown in the progress bar.

Logged (to every logger, one value per logging step, averaged over the steps since the last one):

- ``perf/step_time_s``: wall seconds per training step (data wait included);
- ``perf/data_wait_frac``: the fraction of that time spent waiting for the next batch (the
  time Lightning spends in the loader's ``next()``, timed through its profiler hook);
- ``perf/audio_s_per_s`` and ``perf/audio_s_per_s_total`` (audio: seconds of waveform per wall
  second on this device and over all devices), or ``perf/images_per_s`` and ``..._total``;
- ``perf/peak_mem_mb``: peak CUDA memory allocated since the last logging step on a GPU, the
  process's peak resident set size on CPU;
- ``health/lr``, ``health/grad_norm`` (total L2 norm of the gradients before clipping) and
  ``health/grad_norm_{encoder,context,heads}``;
- ``health/padded_frac`` (audio): the fraction of window samples that are padding.

Cheap by construction: between logging steps it reads the host clock and adds two ints (plus one
device-side sum of the padding mask, no sync); the gradient norms and the single device-to-host
copy of all values happen only on logging steps, where Lightning's logging syncs anyway. Steps
interrupted by validation or checkpointing are left out of the time averages.
"""

from __future__ import annotations

import resource
import sys
import time
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

#: Model parts whose gradient norms are logged separately (attributes of ``CPCModule``).
PARTS = ("encoder", "context", "heads")
#: Metrics also shown in the progress bar, under these short names.
#: The action Lightning's training loop profiles around each ``next(dataloader)``.
FETCH_ACTION = "train_dataloader_next"
PROG_BAR = {
    "perf/audio_s_per_s_total": "audio_s/s",
    "perf/images_per_s_total": "img/s",
    "perf/data_wait_frac": "wait",
    "health/grad_norm": "gnorm",
    "health/lr": "lr",
}


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated on ``device`` (then reset), else the process's peak RSS (MiB)."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        return peak / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def grad_norms(module: torch.nn.Module) -> torch.Tensor:
    """``(1 + len(PARTS),)`` float32: the total gradient L2 norm, then one per part (0: none)."""
    device = next(module.parameters()).device
    per_part = []
    for name in PARTS:
        part = getattr(module, name, None)
        grads = [] if part is None else [p.grad for p in part.parameters() if p.grad is not None]
        if grads:
            per_part.append(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))
        else:
            per_part.append(torch.zeros((), device=device))
    rest = [
        p.grad
        for n, p in module.named_parameters()
        if p.grad is not None and n.split(".", 1)[0] not in PARTS
    ]
    squares = torch.stack(per_part).float().square().sum()
    if rest:
        squares = squares + torch.stack(torch._foreach_norm(rest)).float().square().sum()
    return torch.cat([squares.sqrt()[None], torch.stack(per_part).float()])


class TrainingHealth(Callback):
    """Logs throughput, data-loader wait, memory, learning rate, gradient norms and padding."""

    def __init__(self, prog_bar: bool = True) -> None:
        self.prog_bar = bool(prog_bar)
        self._reset()
        self._last_end: float | None = None
        self._grad: torch.Tensor | None = None
        self._lr: float | None = None
        self._fetch, self._fetched, self._fetch_start = 0.0, False, 0.0

    # ------------------------------------------------------------------ fetch timing
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Time each ``next(dataloader)`` through the trainer's profiler start/stop calls."""
        self._fetch = 0.0
        self._fetched = False
        profiler = trainer.profiler
        start, stop = profiler.start, profiler.stop

        def timed_start(action: str) -> None:
            if action.endswith(FETCH_ACTION):
                self._fetch_start = time.perf_counter()
            start(action)

        def timed_stop(action: str) -> None:
            stop(action)
            if action.endswith(FETCH_ACTION):
                self._fetch += time.perf_counter() - self._fetch_start
                self._fetched = True

        self._profiler = (profiler, start, stop)
        profiler.start, profiler.stop = timed_start, timed_stop  # type: ignore[method-assign]

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        profiler, start, stop = self._profiler
        profiler.start, profiler.stop = start, stop  # type: ignore[method-assign]

    def _reset(self) -> None:
        # timed steps (a step after a checkpoint write or a resume is not timed) and their items
        self._steps = 0
        self._wait = 0.0
        self._period = 0.0
        self._samples = 0
        self._timed_audio = 0
        # padding over every step since the last row (in the checkpoint: a resumed run logs
        # the same padded_frac as one that never stopped)
        self._audio_samples = 0
        self._padded: torch.Tensor | int = 0

    def state_dict(self) -> dict[str, Any]:
        return {"audio_samples": self._audio_samples, "padded": int(self._padded)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._audio_samples = int(state_dict.get("audio_samples", 0))
        self._padded = int(state_dict.get("padded", 0))

    # ------------------------------------------------------------------ timing
    def _mark(self, *args: Any) -> None:
        """An epoch starts or validation ended: the wait for the next batch starts now."""
        self._last_end = time.perf_counter()
        self._fetch, self._fetched = 0.0, False

    def _pause(self, *args: Any) -> None:
        """A checkpoint is being written: leave the next step out of the time averages."""
        self._last_end = None

    on_train_epoch_start = _mark
    on_validation_end = _mark
    on_save_checkpoint = _pause

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._start = time.perf_counter()

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any
    ) -> None:
        """Gradient norms before clipping and the learning rate of this step, on logging steps."""
        if self._will_log(trainer, stepped=False):
            self._grad = grad_norms(pl_module)
            self._lr = float(optimizer.param_groups[0]["lr"])

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        now = time.perf_counter()
        mask = batch.get("mask")
        if mask is not None:
            self._audio_samples += int(mask.numel())
            self._padded = self._padded + (mask.numel() - mask.sum())  # stays on the device
        if self._last_end is not None:
            self._steps += 1
            # the loader's own time when Lightning's fetch hook fired, else the whole gap
            self._wait += self._fetch if self._fetched else self._start - self._last_end
            self._period += now - self._last_end
            self._samples += int(batch["x"].shape[0])
            self._timed_audio += int(mask.numel()) if mask is not None else 0
        self._last_end = now
        self._fetch, self._fetched = 0.0, False
        if self._will_log(trainer, stepped=True):
            self._log(trainer, pl_module)
            self._reset()

    @staticmethod
    def _will_log(trainer: pl.Trainer, stepped: bool) -> bool:
        """Whether Lightning writes logs at this step: its own rule, plus the last step (which
        :class:`FinalStep` makes a logging step); ``stepped``: the optimizer step is taken."""
        last = 0 < trainer.max_steps <= trainer.global_step + (0 if stepped else 1)
        return trainer._logger_connector.should_update_logs or last

    # ------------------------------------------------------------------ logging
    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        values = self._values(trainer, pl_module)
        for key, value in values.items():
            pl_module.log(key, value, on_step=True, on_epoch=False, batch_size=1)
            if self.prog_bar and key in PROG_BAR:
                pl_module.log(PROG_BAR[key], value, prog_bar=True, logger=False, batch_size=1)

    def _values(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        world = max(int(trainer.world_size), 1)
        period = max(self._period, 1e-9)
        out: dict[str, float] = {}
        if self._steps:  # wall-clock figures need at least one timed step
            out["perf/step_time_s"] = period / self._steps
            out["perf/data_wait_frac"] = self._wait / period
            if self._timed_audio:
                rate = getattr(trainer.datamodule, "sample_rate", None) or 16000
                audio_s = self._timed_audio / rate / period
                out["perf/audio_s_per_s"] = audio_s
                out["perf/audio_s_per_s_total"] = audio_s * world
            elif not self._audio_samples:
                out["perf/images_per_s"] = self._samples / period
                out["perf/images_per_s_total"] = self._samples / period * world
        out["perf/peak_mem_mb"] = peak_memory_mb(pl_module.device)
        if self._lr is not None:
            out["health/lr"], self._lr = self._lr, None
        device_values = []  # copied to the host together: one sync
        if self._grad is not None:
            device_values.append(self._grad.float())
        if self._audio_samples:
            padded = torch.as_tensor(self._padded, device=pl_module.device).float()
            device_values.append(padded.reshape(1) / self._audio_samples)
        host = torch.cat(device_values).tolist() if device_values else []
        if self._grad is not None:
            names = ["health/grad_norm"] + [f"health/grad_norm_{p}" for p in PARTS]
            out.update(zip(names, host[: len(names)], strict=True))
            host = host[len(names) :]
            self._grad = None
        if self._audio_samples:
            out["health/padded_frac"] = host[0]
        return out
