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
from dataclasses import dataclass, field, fields, replace
from typing import Any

from omegaconf import DictConfig, OmegaConf

FEATURES = ("c", "z")
#: Pooling of each modality's learned features (the first is audio's default; images' default
#: is :data:`IMAGE_POOL`, chosen on held-out training images, see docs/design.md).
MODALITY_POOLS = {"audio": ("mean", "meanstd"), "image": ("mean", "grid2", "grid4", "none")}
POOLS = ("mean", "meanstd", "grid2", "grid4", "none")
#: Per-modality defaults of ``feature``, ``pool`` and ``weight_decay`` (their value ``None``):
#: images follow CPC v2's protocol (the encoder's ``z``, spatially pooled, the L2 penalty chosen
#: on held-out training images); audio keeps the context ``c``, the mean, no penalty.
IMAGE_POOL = "grid4"
MODALITY_DEFAULTS: dict[str, dict[str, Any]] = {
    "audio": {"feature": "c", "pool": "mean", "weight_decay": 0.0},
    "image": {"feature": "z", "pool": IMAGE_POOL, "weight_decay": [0.0, 1.0e-4, 1.0e-3, 1.0e-2]},
}
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
    """``0`` or ``[0, 1]`` -> a list of ints (at least one)."""
    out = [int(seeds)] if isinstance(seeds, int) else [int(s) for s in seeds]
    if not out:
        raise ValueError(
            "probe.seeds=[] gives no probe to train: give at least one seed, e.g. probe.seeds=[0]"
        )
    return out


@dataclass(frozen=True)
class EvalSettings:
    """Feature choice (``feature``, ``layer``, ``pool``), probe training (the keys of
    ``conf/probe/linear.yaml``, same defaults) and where to run (``device``, ``precision``)."""

    epochs: int = 30
    min_steps: int = 1000
    lr: float = 1.0e-3
    # Adam's L2 penalty; a list: chosen per source on ``dev_fraction`` of the training rows
    # (None: per modality, see MODALITY_DEFAULTS)
    weight_decay: float | list[float] | None = None
    dev_fraction: float = 0.1
    batch_size: int = 1024
    hidden: int = 0
    seeds: list[int] = field(default_factory=lambda: [0])
    max_train_rows: int | None = None
    max_train_items: int | None = None
    max_test_items: int | None = None
    extract_batch: int = 16
    feature: str | None = None  # c (context) | z (encoder); None: per modality (images z, audio c)
    layer: int | None = None  # context layer (0-based, negative from the top); None: the output
    # pooled tasks, learned features: audio mean | meanstd (MFCC: always meanstd); image grids
    # mean | grid2 | grid4 | none (model/pooling.py); None: per modality
    pool: str | None = None
    pixel_side: int | None = 32  # the pixel baseline's side: larger images are area-averaged
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
        if isinstance(merged.get("weight_decay"), list | tuple):
            merged["weight_decay"] = [float(w) for w in merged["weight_decay"]]
        out = cls(**merged)
        if out.feature not in (None, *FEATURES):
            raise ValueError(f"feature={out.feature!r} must be 'c' or 'z' (or null: per modality)")
        if out.pool not in (None, *POOLS):
            raise ValueError(
                f"pool={out.pool!r} must be 'mean' or 'meanstd' (audio), or 'mean', 'grid2', "
                "'grid4' or 'none' (images)"
            )
        out._check_weight_decay()
        if out.precision not in PRECISIONS:
            raise ValueError(f"precision={out.precision!r} must be 32 or bf16")
        if out.normalise not in NORMALISE:
            raise ValueError(f"normalise={out.normalise!r} must be 'none' or 'utterance'")
        return out

    def _check_weight_decay(self) -> None:
        grid = self.weight_decays if self.weight_decay is not None else [0.0]
        if not grid or any(not math.isfinite(w) or w < 0 for w in grid):
            raise ValueError(
                f"probe.weight_decay={self.weight_decay!r}: give a value >= 0 or a list of them "
                "(e.g. [0, 1e-4, 1e-3, 1e-2])"
            )
        if len(grid) > 1 and not 0.0 < self.dev_fraction < 1.0:
            raise ValueError(
                f"probe.dev_fraction={self.dev_fraction}: choosing among weight_decay={grid} "
                "needs a share of the training rows in (0, 1), e.g. 0.1"
            )

    def for_modality(self, modality: str) -> EvalSettings:
        """These settings with ``None`` keys set to ``modality``'s defaults (``audio`` |
        ``image``); a ``ValueError`` when ``pool`` does not suit the modality."""
        defaults = MODALITY_DEFAULTS.get(modality, MODALITY_DEFAULTS["audio"])
        unset = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        out = replace(self, **unset) if unset else self
        pools = MODALITY_POOLS.get(modality, MODALITY_POOLS["audio"])
        if out.pool not in pools:
            raise ValueError(
                f"pool={out.pool!r} does not apply to {modality} features: use one of "
                f"{', '.join(pools)}"
            )
        return out

    @property
    def weight_decays(self) -> list[float]:
        """The weight decays to choose from (one: no choice; unresolved None: ``[0.0]``)."""
        wd = self.weight_decay
        if wd is None:
            return [0.0]
        return [float(w) for w in wd] if isinstance(wd, list | tuple) else [float(wd)]

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
        """A train ``probe`` node; ``seed`` (the run's) is the one probe seed. An unset
        ``weight_decay`` is 0 here for every modality: the end-of-run probes fit one head per
        source (``evaluate`` chooses images' penalty from a list)."""
        values = node_values(node)
        if values.get("weight_decay") is None:
            values = {**values, "weight_decay": 0.0}
        return cls(
            probe=EvalSettings.from_mapping({**values, "seeds": [int(seed)]}),
            tasks=[str(t) for t in values.get("tasks") or []],
            baselines=values.get("baselines", "all"),
        )
