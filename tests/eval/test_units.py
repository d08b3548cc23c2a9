"""``evaluate task=units``: k-means units scored with HuBERT's phone purity, cluster purity and
PNMI (Hsu et al. 2021, sec. IV), checked against slow references and a hand-computed table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import compose_entry, make_run

from cpc_lightning.eval import registry
from cpc_lightning.eval.report import UnitsReport
from cpc_lightning.eval.units import (
    UnitSettings,
    assign,
    contingency,
    fit_kmeans,
    unit_quality,
)


def slow_quality(pairs: list[tuple[int, int]]) -> dict[str, float]:
    """The three figures from (phone, unit) frame pairs, by counting, as the paper words them."""
    n = len(pairs)
    phones = sorted({y for y, _ in pairs})
    units = sorted({z for _, z in pairs})
    p = {(y, z): sum(1 for q in pairs if q == (y, z)) / n for y in phones for z in units}
    py = {y: sum(p[y, z] for z in units) for y in phones}
    pz = {z: sum(p[y, z] for y in phones) for z in units}
    # phone purity: E_z[max_y p(y | z)]; cluster purity: E_y[max_z p(z | y)]
    phone_purity = sum(pz[z] * max(p[y, z] / pz[z] for y in phones) for z in units)
    cluster_purity = sum(py[y] * max(p[y, z] / py[y] for z in units) for y in phones)
    mi = sum(
        p[y, z] * math.log(p[y, z] / (py[y] * pz[z])) for y in phones for z in units if p[y, z] > 0
    )
    hy = -sum(py[y] * math.log(py[y]) for y in phones)
    return {"pnmi": mi / hy, "phone_purity": phone_purity, "cluster_purity": cluster_purity}


def test_a_hand_computed_table() -> None:
    """Phones a, b; units 0, 1, 2 over 8 frames:
    a: 3 x unit 0, 1 x unit 1; b: 1 x unit 1, 3 x unit 2.
    phone purity = (3 + 1 + 3) / 8 (unit 1 is a tie: 1 frame), cluster purity = (3 + 3) / 8,
    H(y) = log 2, I = H(y) - H(y|z) = log 2 - (2 / 8) log 2 (only unit 1 is uncertain)."""
    counts = np.array([[3, 1, 0], [0, 1, 3]])
    got = unit_quality(counts)
    assert got["phone_purity"] == pytest.approx(7 / 8)
    assert got["cluster_purity"] == pytest.approx(6 / 8)
    assert got["pnmi"] == pytest.approx((math.log(2) - 0.25 * math.log(2)) / math.log(2))
    perfect = unit_quality(np.diag([5, 2, 7]))
    assert perfect == pytest.approx({"pnmi": 1.0, "phone_purity": 1.0, "cluster_purity": 1.0})
    one_unit = unit_quality(np.array([[4], [4]]))
    assert one_unit["pnmi"] == pytest.approx(0.0) and one_unit["phone_purity"] == 0.5
    assert all(math.isnan(v) for v in unit_quality(np.zeros((2, 2), dtype=int)).values())


@pytest.mark.parametrize("seed", range(5))
def test_the_figures_equal_the_slow_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    phones = [rng.integers(-1, 6, size=rng.integers(5, 40)) for _ in range(4)]
    units = [rng.integers(0, 7, size=len(y) + rng.integers(-3, 4)) for y in phones]
    counts = contingency(phones, units, 6, 7)
    pairs = [
        (int(a), int(b))
        for y, z in zip(phones, units, strict=True)
        for a, b in zip(y, z, strict=False)  # frame t with frame t, the shorter decides
        if a >= 0
    ]
    assert counts.sum() == len(pairs)
    assert unit_quality(counts) == pytest.approx(slow_quality(pairs))


def test_kmeans_is_seeded_and_finds_separated_clusters() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10]], dtype=np.float32)
    frames = np.concatenate([c + rng.normal(size=(200, 2)).astype(np.float32) for c in centres])
    s = UnitSettings(k=3, seed=1, batch_size=64, epochs=3)
    km = fit_kmeans(frames, s)
    again = fit_kmeans(frames, s)
    assert np.array_equal(km.cluster_centers_, again.cluster_centers_)
    units = assign(km, frames)
    truth = np.repeat(np.arange(3), 200)
    assert unit_quality(contingency([truth], [units], 3, 3))["pnmi"] > 0.95
    with pytest.raises(ValueError, match="k=3 is more than the 2 training frames"):
        fit_kmeans(frames[:2], s)


def test_settings_refuse_values_out_of_range() -> None:
    assert UnitSettings.from_node({"k": 8, "max_frames": None}) == UnitSettings(k=8)
    with pytest.raises(ValueError, match="k=1: units need at least 2 clusters"):
        UnitSettings.from_node({"k": 1})
    with pytest.raises(ValueError, match="epochs=0 must be at least 1"):
        UnitSettings.from_node({"epochs": 0})


def test_evaluate_units_scores_every_source(tmp_path: Path) -> None:
    from cpc_lightning.evaluate import evaluate

    run = make_run(tmp_path)
    overrides = [f"run_dir={run}", "task=units", "units.k=4", "units.epochs=2"]
    report = evaluate(compose_entry("evaluate", overrides))
    saved = json.loads((run / "eval" / "units.json").read_text())
    assert saved == report and list(saved["sources"]) == ["cpc", "random_init", "mfcc"]
    assert saved["units"]["k"] == 4
    for entry in saved["sources"].values():
        for figure in ("pnmi", "phone_purity", "cluster_purity"):
            assert 0.0 <= entry[figure] <= 1.0
        assert 1 <= entry["units_used"] <= 4 and entry["test_frames"] > 0
    typed = registry.read_report(run / "eval" / "units.json")
    assert isinstance(typed, UnitsReport) and typed.headline == saved["sources"]["cpc"]["pnmi"]
    assert "| MFCC (39-d) |" in saved["table"] and "PNMI" in saved["table"]


def test_units_on_timit(shared_data: Path, tmp_path: Path) -> None:
    from cpc_lightning.evaluate import evaluate

    if not (shared_data / "timit_sample").is_dir():
        pytest.skip("TIMIT sample absent")
    run = make_run(tmp_path)
    overrides = [
        f"run_dir={run}", "task=units", "data=timit", f"data.root={shared_data / 'timit_sample'}",
        f"data.cache_dir={tmp_path / 'cache'}", "baseline=mfcc", "units.k=20",
    ]  # fmt: skip
    report = evaluate(compose_entry("evaluate", overrides))
    mfcc = report["sources"]["mfcc"]
    assert mfcc["units_used"] == 20 and 0.2 < mfcc["pnmi"] < 1.0  # MFCC units follow phones
    assert report["sources"]["cpc"]["test_frames"] == mfcc["test_frames"] > 10000
