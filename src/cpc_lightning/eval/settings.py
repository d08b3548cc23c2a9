"""Evaluation settings, each a dataclass built from its config node one way (``from_node``).

``EvalSettings``: what to extract and how to train the probe (``probe.*``, plus the entry config's
feature and device keys); ``ABXSettings``: ``abx.*``; ``CTCSettings``: ``phone_recognition.*``.
The dataclass defaults equal the packaged YAML (``conf/probe/linear.yaml``, ``conf/evaluate.yaml``;
``tests/eval/test_eval_settings.py`` checks it), so a caller without a composed config (the Python
API, ``extract``, tests) gets the same values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from omegaconf import DictConfig, OmegaConf

FEATURES = ("c", "z")
POOLS = ("mean", "meanstd")
PRECISIONS = ("32", "bf16")
NORMALISE = ("none", "utterance")


def node_values(node: DictConfig | Mapping[str, Any] | None) -> dict[str, Any]:
    """A config node (or mapping, or None) as a plain resolved dict."""
    if node is None:
        return {}
    if isinstance(node, DictConfig):
        return dict(OmegaConf.to_container(node, resolve=True))  # type: ignore[arg-type]
    return dict(node)


def seed_list(seeds: Any) -> list[int]:
    """``0`` or ``[0, 1]`` -> a list of ints."""
    return [int(seeds)] if isinstance(seeds, int) else [int(s) for s in seeds]


@dataclass(frozen=True)
class EvalSettings:
    """Feature choice (``feature``, ``layer``, ``pool``), probe training (the keys of
    ``conf/probe/linear.yaml``, same defaults) and where to run (``device``, ``precision``)."""

    epochs: int = 30
    min_steps: int = 1000
    lr: float = 1.0e-3
    weight_decay: float = 0.0
    batch_size: int = 1024
    hidden: int = 0
    seeds: list[int] = field(default_factory=lambda: [0])
    max_train_rows: int | None = None
    max_train_items: int | None = None
    max_test_items: int | None = None
    extract_batch: int = 16
    feature: str = "c"  # c (context) | z (encoder)
    layer: int | None = None  # context layer (0-based, negative from the top); None: the output
    pool: str = "mean"  # pooled tasks, learned features: mean | meanstd (MFCC: always meanstd)
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "32"  # 32 | bf16 (autocast, CUDA or CPU)
    normalise: str = "none"  # none | utterance (learned frame features; MFCC stays raw)

    @classmethod
    def from_node(cls, node: DictConfig | Mapping[str, Any] | None, **values: Any) -> EvalSettings:
        """A ``probe`` node (``probe.*``; other keys ignored) with ``values`` on top."""
        return cls.from_mapping({**node_values(node), **values})

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None = None) -> EvalSettings:
        """The defaults with the non-null known keys of ``values`` on top."""
        known = {f.name for f in fields(cls)}
        merged = {k: v for k, v in dict(values or {}).items() if k in known and v is not None}
        if "seeds" in merged:
            merged["seeds"] = seed_list(merged["seeds"])
        if "precision" in merged:
            merged["precision"] = str(merged["precision"])
        out = cls(**merged)
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


@dataclass
class ABXSettings:
    """``abx.*`` of the evaluate config."""

    modes: list[str] = field(default_factory=lambda: ["within", "across"])
    max_size_group: int | None = 10
    max_x_across: int | None = 5
    exclude_central: list[str] = field(default_factory=lambda: ["sil", "SIL"])
    mapping: str = "libri-light"
    seed: int = 0

    @classmethod
    def from_node(cls, node: DictConfig | Mapping[str, Any] | None) -> ABXSettings:
        """An ``abx`` node (None: the defaults)."""
        return cls(**node_values(node))


@dataclass
class CTCSettings:
    """How the CTC head is trained (``phone_recognition.*`` of the evaluate config)."""

    head: str = "linear"
    hidden: int = 256
    epochs: int = 40
    min_steps: int = 1000
    lr: float = 1e-2
    batch_size: int = 16
    # L2 penalty of Adam; a list of several: chosen per source on ``dev_speakers`` training speakers
    weight_decay: float | list[float] = 0.0
    dev_speakers: int = 2
    seeds: list[int] = field(default_factory=lambda: [0])

    def __post_init__(self) -> None:
        grid = self.weight_decays
        if not grid or any(not math.isfinite(w) or w < 0 for w in grid):
            raise ValueError(
                f"phone_recognition.weight_decay={self.weight_decay!r}: give a value >= 0 or a "
                "list of them (e.g. [0, 1e-3, 1e-2])"
            )
        if len(grid) > 1 and self.dev_speakers < 1:
            raise ValueError(
                f"phone_recognition.dev_speakers={self.dev_speakers}: choosing among weight_decay="
                f"{grid} needs at least 1 held-out training speaker"
            )

    @classmethod
    def from_node(
        cls, node: DictConfig | Mapping[str, Any] | None, seeds: Any = None
    ) -> CTCSettings:
        """A ``phone_recognition`` node, with the head seeds (the probe seeds) when given."""
        values = node_values(node)
        if seeds is not None:
            values["seeds"] = seed_list(seeds)
        return cls(**values)

    @property
    def weight_decays(self) -> list[float]:
        """The weight decays to choose from (one: no choice)."""
        wd = self.weight_decay
        return [float(w) for w in wd] if isinstance(wd, list | tuple) else [float(wd)]

    @property
    def linear(self) -> bool:
        return self.head == "linear"


@dataclass(frozen=True)
class RunProbeSettings:
    """``probe.*`` of the train config: the end-of-run probes (tasks, baselines, probe)."""

    probe: EvalSettings
    tasks: list[str] = field(default_factory=lambda: ["phones", "speakers"])
    baselines: Any = "all"  # all | none | random_init | mfcc | a list of them

    @classmethod
    def from_node(cls, node: DictConfig | Mapping[str, Any] | None, seed: int) -> RunProbeSettings:
        """A train ``probe`` node; ``seed`` (the run's) is the one probe seed."""
        values = node_values(node)
        return cls(
            probe=EvalSettings.from_mapping({**values, "seeds": [int(seed)]}),
            tasks=[str(t) for t in values.get("tasks") or []],
            baselines=values.get("baselines", "all"),
        )
