"""Progress of long loops (manifest probing, resampling, feature extraction, probe epochs).

On a terminal: a tqdm bar on stderr with rate and time estimate. Elsewhere (logs of SLURM jobs,
CI, ``2>file``): one log line every ``CPC_PROGRESS_EVERY`` seconds (default 15) and at the end,
with the same count, rate and estimate, so no step sits silent for minutes. ``CPC_PROGRESS``:
``auto`` (default: bar on a TTY, else lines), ``bar`` (bar always), ``log`` (lines always),
``off``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger("cpc_lightning.progress")

MODES = ("auto", "bar", "log", "off")


def _mode() -> str:
    mode = os.environ.get("CPC_PROGRESS", "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"CPC_PROGRESS={mode!r} must be one of {MODES}")
    if mode == "auto":
        return "bar" if sys.stderr.isatty() else "log"
    return mode


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60:02d}:{rem % 60:02d}"


class Progress:
    """``with Progress("extract", total=n, unit="utt") as p: ... p.update(k)``."""

    def __init__(self, desc: str, total: int | None = None, unit: str = "it") -> None:
        self.desc, self.total, self.unit = desc, total, unit
        self.mode = _mode()
        self.every = float(os.environ.get("CPC_PROGRESS_EVERY", "15"))
        self.count = 0
        self._bar: Any = None
        self._start = self._last = time.perf_counter()

    def __enter__(self) -> Progress:
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=self.total, desc=self.desc, unit=self.unit, file=sys.stderr, leave=False
            )
        return self

    def update(self, n: int = 1) -> None:
        """Count ``n`` more done; maybe draw or log."""
        self.count += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "log":
            now = time.perf_counter()
            if now - self._last >= self.every:
                self._last = now
                log.info("%s", self.line())

    def line(self) -> str:
        """``desc: done/total unit (pct), elapsed, rate, ETA``."""
        elapsed = time.perf_counter() - self._start
        rate = self.count / elapsed if elapsed > 0 else 0.0
        speed = f"{_clock(elapsed)} elapsed, {rate:.1f} {self.unit}/s"
        if not self.total:
            return f"{self.desc}: {self.count} {self.unit}, {speed}"
        eta = _clock((self.total - self.count) / rate) if rate > 0 else "?"
        done = f"{self.count}/{self.total} {self.unit} ({100 * self.count / self.total:.0f} %)"
        return f"{self.desc}: {done}, {speed}, ETA {eta}"

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.mode == "log" and time.perf_counter() - self._start >= self.every:
            log.info("%s (done)", self.line())  # a loop that logged along the way reports its end


def track(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """``items`` with progress, one unit per item."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(desc, total, unit) as p:
        for item in items:
            yield item
            p.update()
