"""The paired bootstrap: can two scores on the same held-out items be told apart?"""

from __future__ import annotations

import numpy as np
import pytest

from cpc_lightning.eval.compare import bootstrap_difference, paired_bootstrap, paired_keys


def _per_pair(values: dict[tuple[str, str], float]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for (a, b), v in values.items():
        out.setdefault(a, {})[b] = v
    return out


def _random_pairs(n: int, seed: int, shift: float = 0.0) -> dict[tuple[str, str], float]:
    rng = np.random.default_rng(seed)
    return {(f"p{i}", f"q{i}"): float(rng.uniform(0, 50) + shift) for i in range(n)}


def test_same_scores_differ_by_nothing():
    pp = _per_pair(_random_pairs(30, 0))
    c = paired_bootstrap(pp, pp)
    assert (
        c["difference"] == 0
        and c["interval"] == [0.0, 0.0]
        and c["units"] == 30
        and c["unit"] == "phone pair"
    )
    assert c["first_better"] == c["second_better"] == 0


def test_a_constant_gap_is_the_difference_and_the_whole_interval():
    base = _random_pairs(40, 1)
    better = {k: v - 3.0 for k, v in base.items()}
    c = paired_bootstrap(_per_pair(better), _per_pair(base))
    assert c["difference"] == pytest.approx(-3.0)
    assert c["interval"] == pytest.approx([-3.0, -3.0])
    assert c["first_better"] == 40


def test_interval_holds_zero_for_noise_and_excludes_it_for_a_real_gap():
    first = _random_pairs(100, 2)
    second = {k: v + float(np.random.default_rng(3).normal()) for k, v in first.items()}
    noise = paired_bootstrap(_per_pair(first), _per_pair(_random_pairs(100, 4)))
    assert noise["interval"][0] < 0 < noise["interval"][1]
    gap = paired_bootstrap(_per_pair({k: v + 10 for k, v in second.items()}), _per_pair(first))
    assert gap["interval"][0] > 0
    # the same seed gives the same interval; more pairs of the same spread, a narrower one
    assert paired_bootstrap(_per_pair(first), _per_pair(second)) == paired_bootstrap(
        _per_pair(first), _per_pair(second)
    )
    wide = paired_bootstrap(_per_pair(_random_pairs(20, 5)), _per_pair(_random_pairs(20, 6)))
    narrow = paired_bootstrap(_per_pair(_random_pairs(500, 5)), _per_pair(_random_pairs(500, 6)))
    assert np.diff(narrow["interval"])[0] < np.diff(wide["interval"])[0]


def test_only_pairs_both_scored_count():
    first = _per_pair({("a", "b"): 10.0, ("a", "c"): 0.0, ("b", "a"): None})  # type: ignore[dict-item]
    second = _per_pair({("a", "b"): 20.0, ("c", "a"): 100.0})
    assert paired_keys(first) == {("a", "b"), ("a", "c")}
    c = paired_bootstrap(first, second)
    assert c["units"] == 1 and c["difference"] == -10.0


def test_weighted_difference_is_the_difference_of_the_ratios():
    # PER: edits over phones per utterance; the difference is that of the two error rates
    edits_a, edits_b, phones = [3.0, 0.0, 10.0], [1.0, 2.0, 6.0], [10, 5, 25]
    c = bootstrap_difference(
        [100 * e for e in edits_a], [100 * e for e in edits_b], weights=phones, seed=1
    )
    assert c["difference"] == pytest.approx(100 * 13 / 40 - 100 * 9 / 40)
    assert c["interval"][0] <= c["difference"] <= c["interval"][1] and c["units"] == 3
    assert (c["first_better"], c["second_better"]) == (1, 2)


def test_bad_input_is_one_clear_error():
    with pytest.raises(ValueError, match="share no scored phone pair"):
        paired_bootstrap(_per_pair({("a", "b"): 1.0}), _per_pair({("b", "a"): 1.0}))
    one = _per_pair({("a", "b"): 1.0})
    with pytest.raises(ValueError, match="num_samples=0"):
        paired_bootstrap(one, one, num_samples=0)
    with pytest.raises(ValueError, match="level=1.5"):
        paired_bootstrap(one, one, level=1.5)
    with pytest.raises(ValueError, match="2 and 3 scores"):
        bootstrap_difference([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="weights: 1"):
        bootstrap_difference([1.0, 2.0], [1.0, 2.0], weights=[1.0])
