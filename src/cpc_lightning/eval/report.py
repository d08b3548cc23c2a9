"""Evaluation reports: typed (one dataclass per kind), written as ``<out_dir>/<task>.json``, and
the one Markdown table writer every report uses.

A report's JSON is ``task``, what was evaluated (``meta``: run dir, checkpoint, data, ...), the
kind's own keys, ``sources`` (one entry per feature source: the trained model first, then the
baselines) and the Markdown ``table``. ``to_json`` writes the keys in the order the code always
has; ``from_json`` reads any report written so far (older ones lack keys: those stay absent)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"

    def __bool__(self) -> bool:
        return False


#: A key the report does not have (older reports lack newer keys).
ABSENT: Any = _Absent()
_META = "*meta"


def markdown_table(
    rows: Mapping[str, Mapping[str, float | None]], columns: Sequence[str], note: str = ""
) -> str:
    """Rows (e.g. feature sources) x ``columns``; values in %, one decimal (missing or NaN:
    ``-``); ``note`` below, after a blank line."""
    lines = ["| features | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for label, row in rows.items():
        cells = [
            "-" if row.get(c) is None or math.isnan(row[c]) else f"{row[c]:.1f} %"  # type: ignore[arg-type]
            for c in columns
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + (f"\n\n{note}" if note else "")


@dataclass
class Report:
    """What every report has; ``ORDER`` is the kind's key order (``*meta``: the ``meta`` keys)."""

    ORDER: ClassVar[tuple[str, ...]] = ("task", _META, "sources", "table")
    #: per-source figures, the headline first (e.g. ``accuracy``; ``within``, ``across``)
    FIGURES: ClassVar[tuple[str, ...]] = ()

    task: str = ABSENT
    meta: dict[str, Any] = field(default_factory=dict)  # every key not typed below, in order
    sources: dict[str, dict[str, Any]] = ABSENT
    table: str = ABSENT
    feature: str | None = ABSENT  # c | z (None: as the extract run wrote it)
    layer: int | None = ABSENT
    normalise: str = ABSENT
    wall_seconds: float = ABSENT
    _order: tuple[str, ...] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def _typed(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.name not in ("meta", "_order")]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Report:
        """A report of this kind from its JSON (any version); unknown keys go to ``meta``."""
        typed = set(cls._typed())
        return cls(
            **{k: v for k, v in data.items() if k in typed},
            meta={k: v for k, v in data.items() if k not in typed},
            _order=tuple(data),
        )

    def to_json(self) -> dict[str, Any]:
        """The report's JSON: the keys read (``from_json``), else in ``ORDER``, then the rest."""
        values = {k: v for k in self._typed() if (v := getattr(self, k)) is not ABSENT}
        out: dict[str, Any] = {}
        for key in self._order or self.ORDER:
            if key == _META:
                out.update({k: v for k, v in self.meta.items() if k not in out})
            elif key in values:
                out[key] = values[key]
            elif key in self.meta:
                out[key] = self.meta[key]
        out.update({k: v for k, v in values.items() if k not in out})
        out.update({k: v for k, v in self.meta.items() if k not in out})
        return out

    def figure(self, source: str, name: str) -> float | None:
        """``sources[source][name]`` as a float (None: no such source or figure)."""
        got = (self.sources or {}).get(source, {}).get(name)
        return None if got is None else float(got)

    @property
    def headline(self) -> float:
        """The trained model's main figure (for sweepers); NaN when it has none."""
        got = self.figure("cpc", self.FIGURES[0]) if self.FIGURES else None
        return float("nan") if got is None else got

    @property
    def feature_label(self) -> str:
        """The learned feature the report used (``c``, ``z``, ``c layer i``; ``+ CMVN`` when
        normalised per utterance), as one label."""
        feature = "c" if self.feature is ABSENT else self.feature
        layer = None if self.layer is ABSENT else self.layer
        name = f"{feature}" + ("" if layer is None else f" layer {layer}")
        return name + (" + CMVN" if self.normalise == "utterance" else "")


@dataclass
class ProbeReport(Report):
    """A linear-probe task (``phones``, ``speakers``, ``classes``, ...): accuracy per source
    (mean and std over the probe seeds), per-class accuracy, confusion, counts; the weight decay
    used (and, when chosen, each candidate's accuracy on held-out training rows); where a test
    row is one item, each item's correctness and ``comparison``."""

    ORDER: ClassVar[tuple[str, ...]] = (
        *("task", _META, "feature", "layer", "pool", "class_names", "probe", "sources"),
        *("comparison", "table", "combined_table", "wall_seconds", "normalise"),
    )
    FIGURES: ClassVar[tuple[str, ...]] = ("accuracy",)

    pool: str = ABSENT
    class_names: list[str] = ABSENT
    probe: dict[str, Any] = ABSENT  # the probe's kind and settings
    combined_table: str = ABSENT  # every task probed in the same run
    # one test row per item (images, utterances of ``classes``): the trained model's accuracy
    # minus each baseline's, with a paired-bootstrap interval over the test items
    comparison: dict[str, Any] = ABSENT


@dataclass
class ABXReport(Report):
    """``abx``: within/across-speaker ABX error (%) per source, per phone pair, and the trained
    model minus each baseline with a paired-bootstrap interval (``comparison``)."""

    ORDER: ClassVar[tuple[str, ...]] = (
        *("task", _META, "abx", "sources", "items", "comparison", "table"),
        *("wall_seconds", "feature", "layer", "normalise"),
    )
    FIGURES: ClassVar[tuple[str, ...]] = ("within", "across")

    abx: dict[str, Any] = ABSENT  # the ABX settings
    items: dict[str, Any] = ABSENT  # the item file and token count
    comparison: dict[str, Any] = ABSENT

    def per_pair(self, source: str, mode: str) -> dict[str, dict[str, float | None]]:
        """``{a: {b: error}}`` of ``source`` in ``mode`` (empty when not scored)."""
        return (self.sources or {}).get(source, {}).get("per_pair", {}).get(mode) or {}


@dataclass
class PERReport(Report):
    """``phone_recognition``: the phone error rate (%) of a CTC head per source, per test
    utterance (``utterance_edits``, ``utterance_phones``), and ``comparison`` as for ABX."""

    ORDER: ClassVar[tuple[str, ...]] = (
        *("task", _META, "ctc", "head", "linear", "sources", "comparison", "table"),
        *("wall_seconds", "feature", "layer", "normalise"),
    )
    FIGURES: ClassVar[tuple[str, ...]] = ("per",)

    ctc: dict[str, Any] = ABSENT  # the CTC head's settings
    head: str = ABSENT
    linear: bool = ABSENT
    comparison: dict[str, Any] = ABSENT

    def utterance_edits(self, source: str) -> list[float] | None:
        """Edits per test utterance (None: a report from before they were written)."""
        return (self.sources or {}).get(source, {}).get("utterance_edits")

    def utterance_phones(self, source: str) -> list[int] | None:
        """Reference phones per test utterance."""
        return (self.sources or {}).get(source, {}).get("utterance_phones")


@dataclass
class UnitsReport(Report):
    """``units``: PNMI, phone purity and cluster purity (fractions) of each source's k-means
    units against the held-out frame phones (``eval/units.py``), with the k-means settings."""

    ORDER: ClassVar[tuple[str, ...]] = (
        *("task", _META, "units", "sources", "table"),
        *("wall_seconds", "feature", "layer", "normalise"),
    )
    FIGURES: ClassVar[tuple[str, ...]] = ("pnmi", "phone_purity", "cluster_purity")

    units: dict[str, Any] = ABSENT  # the k-means settings


def write_report(out_dir: Path, task: str, report: Report | Mapping[str, Any]) -> Path:
    """``<out_dir>/<task>.json`` (written to a temporary file, then renamed)."""
    data = report.to_json() if isinstance(report, Report) else report
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{task}.json"
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
    return path
