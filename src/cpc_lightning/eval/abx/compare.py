"""How far two ABX scores on the same items can be told apart: a paired bootstrap over phone pairs.

An ABX score is the mean of per-phone-pair errors (:attr:`ABXResult.per_pair`). On a small
held-out set most pairs rest on a handful of triples, so two feature sources can differ by less
than one pair's weight. :func:`paired_bootstrap` resamples the ordered phone pairs both sources
scored (the same pairs for both, with replacement) and gives the difference of the means with a
percentile interval; an interval that holds 0 says the items cannot rank the two sources.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

PerPair = Mapping[str, Mapping[str, float | None]]


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


def paired_bootstrap(
    first: PerPair, second: PerPair, num_samples: int = 2000, level: float = 0.95, seed: int = 0
) -> dict[str, Any]:
    """``first - second`` (ABX error points) over the phone pairs both scored, with a
    ``level`` percentile interval from ``num_samples`` paired resamples of those pairs."""
    if num_samples < 1 or not 0.0 < level < 1.0:
        raise ValueError(
            f"paired_bootstrap: num_samples={num_samples} must be >= 1 and level={level} in (0, 1)"
        )
    a, b = _flat(first), _flat(second)
    common = sorted(a.keys() & b.keys())
    if not common:
        raise ValueError("paired_bootstrap: the two ABX results share no scored phone pair")
    diff = np.array([a[k] - b[k] for k in common])
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(num_samples, len(diff)))].mean(axis=1)
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(means, [tail, 100.0 - tail])
    return {
        "difference": float(diff.mean()),
        "interval": [float(lo), float(hi)],
        "level": level,
        "phone_pairs": len(common),
        "pairs_first_better": int((diff < 0).sum()),
        "pairs_second_better": int((diff > 0).sum()),
    }
