"""What to extract and how to train the probe. Defaults live in ``conf/probe/linear.yaml`` only."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

PROBE_DEFAULTS = Path(__file__).resolve().parents[1] / "conf" / "probe" / "linear.yaml"
FEATURES = ("c", "z")
POOLS = ("mean", "meanstd")
PRECISIONS = ("32", "bf16")
NORMALISE = ("none", "utterance")


@dataclass(frozen=True)
class EvalSettings:
    """Feature choice (``feature``, ``layer``, ``pool``), probe training (the keys of
    ``conf/probe/linear.yaml``) and where to run (``device``, ``precision``)."""

    epochs: int
    min_steps: int
    lr: float
    weight_decay: float
    batch_size: int
    hidden: int
    seeds: list[int]
    max_train_rows: int | None
    max_train_items: int | None
    max_test_items: int | None
    extract_batch: int
    feature: str = "c"  # c (context) | z (encoder)
    layer: int | None = None  # context layer (0-based, negative from the top); None: the output
    pool: str = "mean"  # pooled tasks, learned features: mean | meanstd (MFCC: always meanstd)
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "32"  # 32 | bf16 (autocast, CUDA or CPU)
    normalise: str = "none"  # none | utterance (learned frame features; MFCC stays raw)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None = None) -> EvalSettings:
        """The packaged probe defaults with the non-null known keys of ``values`` on top."""
        merged = dict(OmegaConf.to_container(OmegaConf.load(PROBE_DEFAULTS)))  # type: ignore[arg-type]
        known = {f.name for f in fields(cls)}
        merged.update({k: v for k, v in dict(values or {}).items() if k in known and v is not None})
        seeds = merged["seeds"]
        merged["seeds"] = [int(seeds)] if isinstance(seeds, int) else [int(s) for s in seeds]
        merged["precision"] = str(merged.get("precision", "32"))
        out = cls(**{k: v for k, v in merged.items() if k in known})
        if out.feature not in FEATURES:
            raise ValueError(f"feature={out.feature!r} must be 'c' or 'z'")
        if out.pool not in POOLS:
            raise ValueError(f"pool={out.pool!r} must be 'mean' or 'meanstd'")
        if out.precision not in PRECISIONS:
            raise ValueError(f"precision={out.precision!r} must be 32 or bf16")
        if out.normalise not in NORMALISE:
            raise ValueError(f"normalise={out.normalise!r} must be 'none' or 'utterance'")
        return out

    @property
    def linear(self) -> bool:
        return self.hidden <= 0

    @property
    def probe_kind(self) -> str:
        """How reports name the probe."""
        if self.linear:
            return "linear softmax"
        return f"MLP, one hidden layer of {self.hidden} (NOT linear)"
