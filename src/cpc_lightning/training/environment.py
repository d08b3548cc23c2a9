"""What a run ran on: code version, library versions, device, and the CPU precision choice.

:func:`run_environment` goes into the run's result file (``RunDir.result``) and every logger's
hyperparameters; :func:`choose_precision` resolves ``trainer.precision=auto`` (``trainer=cpu``)
and logs why.
"""

from __future__ import annotations

import logging
import os
import platform
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

log = logging.getLogger("cpc_lightning.train")

#: /proc/cpuinfo flags of CPUs with native bf16 arithmetic (AMX tiles, AVX512-BF16 dot products).
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def code_version() -> dict[str, Any]:
    """``{"package": version, "git_commit", "git_dirty"}``; the git keys only inside a checkout."""
    try:
        version = metadata.version("cpc_lightning")
    except metadata.PackageNotFoundError:
        version = None
    out: dict[str, Any] = {"package": version}
    src = Path(__file__).resolve().parent
    commit = _git(["rev-parse", "HEAD"], src)
    if commit:
        status = _git(["status", "--porcelain", "--untracked-files=no"], src)
        out["git_commit"] = commit
        out["git_dirty"] = bool(status)
    return out


def cpu_flags() -> set[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@cache
def cpu_name() -> str:
    """The CPU model name (or the platform's processor string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def native_bf16_cpu(flags: set[str] | None = None) -> str | None:
    """The first native-bf16 flag this CPU has (``amx_bf16``, ``avx512_bf16``), else None."""
    flags = cpu_flags() if flags is None else flags
    return next((f for f in NATIVE_BF16_FLAGS if f in flags), None)


def choose_precision(precision: Any, accelerator: str, flags: set[str] | None = None) -> Any:
    """``trainer.precision``, with ``auto`` resolved: on CPU ``bf16-mixed`` where the CPU has
    native bf16 (faster there: ``make bench``), else ``32-true``; on GPU ``bf16-mixed`` where
    supported. The choice and its reason are logged. Other values pass through."""
    if str(precision) != "auto":
        return precision
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        choice = "bf16-mixed" if ok else "32-true"
        log.info("trainer.precision=auto -> %s (GPU bf16 supported: %s)", choice, ok)
        return choice
    flag = native_bf16_cpu(flags)
    choice = "bf16-mixed" if flag else "32-true"
    reason = f"CPU has {flag}" if flag else "CPU has no native bf16 (amx_bf16/avx512_bf16)"
    log.info("trainer.precision=auto -> %s (%s)", choice, reason)
    return choice


def device_info(trainer: Any) -> dict[str, Any]:
    """The device this process trains on, with enough detail to compare runs."""
    device = trainer.strategy.root_device
    out: dict[str, Any] = {
        "type": device.type,
        "world_size": int(trainer.world_size),
        "precision": str(trainer.precision),
    }
    if device.type == "cuda":
        out["name"] = torch.cuda.get_device_name(device)
        out["cuda"] = torch.version.cuda
    else:
        out["name"] = cpu_name()
        out["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        out["native_bf16"] = native_bf16_cpu()
        out["threads"] = torch.get_num_threads()
        out["cpus"] = os.cpu_count()
    return out


def run_environment(trainer: Any) -> dict[str, Any]:
    """Code version, Python/torch/Lightning versions, the device and torch's intra-op thread
    count, for the run's result file."""
    return {
        "code": code_version(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pytorch_lightning": pl.__version__,
        "device": device_info(trainer),
        "torch_threads": torch.get_num_threads(),
    }
