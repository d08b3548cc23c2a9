"""``export`` called as its entry point calls it (no Hydra), for the export tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from cpc_lightning.export import export

#: The setting a CPC_audio export needs beyond helpers.TINY_RUN (CPC_audio feeds raw waveforms).
RAW = ["encoder.standardize=false"]


def exported(run: Path, out: Path, to: str = "cpc_audio", **extra: Any) -> Path:
    """Export ``run`` as ``to`` into ``out``; return what was written."""
    cfg = {"run_dir": str(run), "checkpoint": None, "to": to, "out": str(out), "overwrite": False}
    return export(OmegaConf.create({**cfg, **extra}))
