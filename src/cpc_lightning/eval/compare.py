"""How far two scores on the same held-out items can be told apart: a paired bootstrap.

An ABX score is the mean of per-phone-pair errors (:attr:`ABXResult.per_pair`); a phone error
rate is the edits of all test utterances over their phones. On a small held-out set most phone
pairs rest on a handful of triples and a few utterances carry the PER, so two feature sources can
differ by less than one unit's weight. :func:`bootstrap_difference` resamples the units (the same
ones for both sources, with replacement) and gives the difference with a percentile interval; an
interval that holds 0 says the items cannot rank the two sources. :func:`paired_bootstrap` does
it for two ABX results, over the ordered phone pairs both scored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

PerPair = Mapping[str, Mapping[str, float | None]]


def bootstrap_difference(
    first: Sequence[float],
    second: Sequence[float],
    weights: Sequence[float] | None = None,
    num_samples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    unit: str = "unit",
) -> dict[str, Any]:
    """``sum(first - second) / sum(weights)`` (the mean difference when ``weights`` is None)
    over paired units (named ``unit`` in the result), with a ``level`` percentile interval
    from ``num_samples`` resamples."""
    if num_samples < 1 or not 0.0 < level < 1.0:
        raise ValueError(
            f"bootstrap: num_samples={num_samples} must be >= 1 and level={level} in (0, 1)"
        )
    a, b = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    w = np.ones_like(a) if weights is None else np.asarray(weights, dtype=np.float64)
    if a.ndim != 1 or not len(a) or not a.shape == b.shape == w.shape or w.sum() <= 0:
        raise ValueError(
            f"bootstrap: {len(first)} and {len(second)} scores (weights: "
            f"{'none' if weights is None else len(weights)}) are not one positive-weight set "
            "of paired units"
        )
    diff = a - b
    idx = np.random.default_rng(seed).integers(0, len(diff), size=(num_samples, len(diff)))
    resampled = diff[idx].sum(axis=1) / w[idx].sum(axis=1)
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(resampled, [tail, 100.0 - tail])
    return {
        "difference": float(diff.sum() / w.sum()),
        "interval": [float(lo), float(hi)],
        "level": level,
        "units": len(diff),
        "unit": unit,
        "first_better": int((diff < 0).sum()),
        "second_better": int((diff > 0).sum()),
    }


def _flat(per_pair: PerPair) -> dict[tuple[str, str], float]:
    """``{(a, b): error}`` of the scored (finite) phone pairs."""
    return {
        (a, b): float(v)
        for a, row in per_pair.items()
        for b, v in row.items()
        if v is not None and np.isfinite(v)
    }


def paired_keys(per_pair: PerPair) -> set[tuple[str, str]]:
    """The ordered phone pairs ``(a, b)`` a result scored."""
    return set(_flat(per_pair))


def paired_bootstrap(first: PerPair, second: PerPair, **kw: Any) -> dict[str, Any]:
    """``first - second`` (ABX error points) over the phone pairs both scored, with the interval
    of :func:`bootstrap_difference` (``kw``: its ``num_samples``, ``level``, ``seed``)."""
    a, b = _flat(first), _flat(second)
    common = sorted(a.keys() & b.keys())
    if not common:
        raise ValueError("paired_bootstrap: the two ABX results share no scored phone pair")
    return bootstrap_difference(
        [a[k] for k in common], [b[k] for k in common], unit="phone pair", **kw
    )


def compare_accuracy(
    entries: Mapping[str, Mapping[str, Any]], unit: str = "test item", seed: int = 0
) -> dict[str, dict[str, Any]]:
    """The first source's accuracy minus each other one's (points), with the paired bootstrap
    over the test items of :func:`bootstrap_difference` (``{other: {"accuracy": ...}}``).

    Each entry's ``item_correct`` is its per-item correctness, already averaged over the probe
    seeds, in the same item order for every source; entries without it are skipped."""
    names = [n for n, e in entries.items() if e.get("item_correct")]
    if len(names) < 2 or names[0] != next(iter(entries)):
        return {}
    first = [100.0 * c for c in entries[names[0]]["item_correct"]]
    out = {}
    for other in names[1:]:
        second = [100.0 * c for c in entries[other]["item_correct"]]
        if len(second) == len(first):
            out[other] = {"accuracy": bootstrap_difference(first, second, seed=seed, unit=unit)}
    return out


def comparison_lines(
    comparison: Mapping[str, Mapping[str, Any]],
    entries: Mapping[str, Mapping[str, Any]],
    points: str = "accuracy points",
) -> str:
    """Lines under a table: the first source minus each baseline, with its interval."""
    if not comparison:
        return ""
    first = entries[next(iter(entries))]["label"]
    lines = [
        f"\n\n{first} minus each baseline, {points}, with the 95 % interval of a paired "
        "bootstrap over the held-out units (an interval holding 0: these items cannot rank "
        "the two):"
    ]
    for other, figures in comparison.items():
        cells = [
            f"{name} {c['difference']:+.1f} [{c['interval'][0]:+.1f}, {c['interval'][1]:+.1f}]"
            f" ({c['units']} {c['unit']}s)"
            for name, c in figures.items()
        ]
        lines.append(f"- vs {entries[other]['label']}: " + "; ".join(cells))
    return "\n".join(lines)
