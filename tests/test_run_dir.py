"""The run-dir layout has one owner: ``cpc_lightning/run_dir.py`` names every file, and no other
source file spells the last checkpoint's or the result file's name."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from helpers import REPO

from cpc_lightning import run_dir as owner
from cpc_lightning.run_dir import RunDir, last_checkpoint_in, run_dirs_under, write_json

PACKAGE = REPO / "src" / "cpc_lightning"


def test_paths(tmp_path: Path) -> None:
    run = RunDir(str(tmp_path))
    assert run.root == tmp_path
    assert run.config_resolved == tmp_path / "config_resolved.yaml"
    assert run.hydra_dir == tmp_path / ".hydra"
    assert run.hydra_config == tmp_path / ".hydra" / "config.yaml"
    assert run.hydra_overrides == tmp_path / ".hydra" / "overrides.yaml"
    assert run.checkpoints == tmp_path / "checkpoints"
    assert run.last_checkpoint == tmp_path / "checkpoints" / "last.ckpt"
    assert last_checkpoint_in(run.checkpoints) == run.last_checkpoint
    assert run.result == tmp_path / "result.json"
    assert run.reused == tmp_path / "reused.json"
    assert run.failed == tmp_path / "failed.txt"
    assert run.failed_previous == tmp_path / "failed.previous.txt"
    assert run.converted_from == tmp_path / "converted_from.json"
    assert run.metrics == tmp_path / "metrics.csv"
    assert run.probe_table == tmp_path / "probe.md"
    assert run.config_files() == (run.config_resolved, run.hydra_config)


def test_run_dir_of_a_checkpoint(tmp_path: Path) -> None:
    assert RunDir.of_checkpoint(tmp_path / "checkpoints" / "step4.ckpt").root == tmp_path
    assert RunDir.of_checkpoint(tmp_path / "model.ckpt").root == tmp_path


def test_holds_a_run(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert run.holds_a_run() is None
    run.checkpoints.mkdir()
    (run.checkpoints / "step2.ckpt").write_bytes(b"x")
    (run.checkpoints / "step4.ckpt").write_bytes(b"x")
    assert run.holds_a_run() == run.checkpoints / "step4.ckpt"
    run.write_result({"metrics": {}})
    assert run.holds_a_run() == run.result
    other = RunDir(tmp_path / "killed")  # killed before its first checkpoint: its rows count
    other.root.mkdir()
    other.metrics.write_text("")
    assert other.holds_a_run() is None
    other.metrics.write_text("epoch,step,train/loss\n0,0,2.5\n")
    assert other.holds_a_run() == other.metrics
    run.last_checkpoint.write_bytes(b"x")
    assert run.holds_a_run() == run.last_checkpoint


def test_write_result_is_atomic_and_read_back(tmp_path: Path, monkeypatch) -> None:
    run = RunDir(tmp_path)
    assert run.read_result() is None
    result = {"metrics": {"val/loss": 1.5}, "global_step": 4}
    assert run.write_result(result) == run.result
    assert run.read_result() == result
    assert json.loads(run.result.read_text()) == result
    assert sorted(p.name for p in tmp_path.iterdir()) == [run.result.name]  # no temp file left

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(owner.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        run.write_result({"metrics": {"val/loss": 0.0}})
    assert run.read_result() == result  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == [run.result.name]


def test_write_json_indent(tmp_path: Path) -> None:
    path = write_json(tmp_path / "reused.json", {"global_step": 3}, indent=None)
    assert path.read_text() == '{"global_step": 3}'


def test_run_dirs_under_a_sweep(tmp_path: Path) -> None:
    for job in ("0", "1", "nested/2"):
        RunDir(tmp_path / job).hydra_dir.mkdir(parents=True)
        RunDir(tmp_path / job).hydra_overrides.write_text("[]\n")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "overrides.yaml").write_text("[]\n")  # not in a Hydra folder
    assert run_dirs_under(tmp_path) == {tmp_path / "0", tmp_path / "1", tmp_path / "nested" / "2"}


def test_the_owner_imports_nothing_of_the_package() -> None:
    tree = ast.parse(Path(owner.__file__).read_text())
    imported = [
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in getattr(node, "names", [])
    ]
    assert not [m for m in imported if m and m.startswith("cpc_lightning")], imported


def test_only_the_owner_spells_the_file_names() -> None:
    """``grep -rn "last.ckpt\\|result.json" src``: the owner module only (YAML comments too)."""
    pattern = re.compile(r"last.ckpt|result.json")
    found = [
        f"{path.relative_to(PACKAGE)}:{i}"
        for path in sorted(PACKAGE.rglob("*"))
        if path.is_file() and path.suffix in (".py", ".yaml", ".yml", ".md", ".txt")
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    owner_file = Path(owner.__file__).relative_to(PACKAGE)
    assert found and all(f.startswith(f"{owner_file}:") for f in found), found
