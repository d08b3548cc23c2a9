"""``benchmarks/image_feature_choice.py``: held-out training images only, disjoint and seeded, and
one table row per choice with CPC minus random init."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CIFAR_SUBSET = ROOT.parent / "shared" / "data" / "cifar10_subset"
IMAGE_RUN = ROOT / "tests" / "fixtures" / "run_f2cadb0_image"


def _module():
    path = ROOT / "benchmarks/image_feature_choice.py"
    spec = importlib.util.spec_from_file_location("image_feature_choice", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_split_reads_the_training_folder_only_disjoint_and_seeded(tmp_path: Path) -> None:
    for split, n in (("train", 6), ("test", 4)):
        for label in ("cat", "dog"):
            (tmp_path / split / label).mkdir(parents=True)
            for i in range(n):
                (tmp_path / split / label / f"{i}.jpg").write_bytes(b"")
    mod = _module()
    got = mod.split_files(tmp_path, fit=3, held_out=2, seed=0)
    assert len(got["fit"]) == 6 and len(got["held_out"]) == 4
    assert not {p for p, _ in got["fit"]} & {p for p, _ in got["held_out"]}
    assert all(p.parent.parent.name == "train" for p, _ in got["fit"] + got["held_out"])
    assert sorted({y for _, y in got["held_out"]}) == [0, 1]  # 2 of each class
    assert got == mod.split_files(tmp_path, fit=3, held_out=2, seed=0)
    assert got != mod.split_files(tmp_path, fit=3, held_out=2, seed=1)
    with pytest.raises(SystemExit, match="not a folder"):
        mod.split_files(tmp_path / "absent", fit=1, held_out=1, seed=0)


@pytest.mark.skipif(not CIFAR_SUBSET.is_dir(), reason=f"{CIFAR_SUBSET} is absent")
def test_table_has_a_row_per_choice_with_the_margin(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(IMAGE_RUN, run)
    _module().main([
        str(run), "--root", str(CIFAR_SUBSET), "--fit", "4", "--held-out", "2",
        "--choices", "c:grid4,zc:mean", "--epochs", "2", "--weight-decays", "0,0.01",
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert "40 fitting, 20 held-out images" in out
    rows = re.findall(r"\| (\w+), (\w+) \| ([\d.]+) \| ([\d.]+) \| ([+-][\d.]+) \|", out)
    assert [(f, p) for f, p, *_ in rows] == [("c", "grid4"), ("zc", "mean")]
    for _, _, cpc, rand, gap in rows:
        assert 0 <= float(cpc) <= 100 and 0 <= float(rand) <= 100
        assert float(gap) == pytest.approx(float(cpc) - float(rand), abs=0.11)
