"""Writers never destroy what is written, wrong inputs are one line (issue 30: findings 3, 8, 9
and the traceback list): ``prepare`` into an existing folder, ``evaluate run_dir=A
checkpoint=<B's>``, ABX item lines and feature dimensions, a sweep with a failed point, and the
one-line errors of the entry points (a typo'd key, a too-small chunk, no probe seed, ...)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CONF, cli_env, compose_entry, make_run, write_tone
from omegaconf import OmegaConf

from cpc_lightning.errors import UserError

#: A tiny synthetic corpus for ``prepare`` (utterances of 0.6-1.0 s: 19-32 KB as int16).
PREP = [
    "data.synthetic.num_speakers=3",
    "data.synthetic.utterances_per_speaker=3",
    "data.synthetic.min_seconds=0.6",
    "data.synthetic.max_seconds=1.0",
    "data.window=3200",
]


def digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` (hidden ones too) by relative path: its SHA-256."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def prep_cfg(tmp_path: Path, out: Path, *extra: str):
    cache = tmp_path / "cache"
    return compose_entry("prepare", [*PREP, f"out={out}", f"paths.cache_dir={cache}", *extra])


def fake_shards(out: Path, source: dict) -> Path:
    """A shard folder as ``prepare`` leaves it (contents are placeholders)."""
    for split in ("train", "test"):
        (out / split).mkdir(parents=True)
        (out / split / "index.json").write_text(json.dumps({"split": split}))
        (out / split / "chunk-0-0.bin").write_bytes(bytes(range(256)))
    manifest = {"format": 1, "source": source, "splits": {"train": [], "test": []}}
    (out / "cpc_manifest.json").write_text(json.dumps(manifest))
    return out


def source_of(cfg) -> dict:
    return OmegaConf.to_container(cfg.data, resolve=True)


@pytest.fixture
def no_shard_writes(monkeypatch):
    """Fail at once if ``prepare`` reaches litdata (a refusal must come before any writing)."""
    from cpc_lightning.data.audio import shards

    def refuse(*args, **kwargs):
        raise AssertionError(f"prepare wrote shards to {args[3]}")

    monkeypatch.setattr(shards, "_optimize", refuse)


# ------------------------------------------------------------------------ finding 3: prepare
def test_a_failed_prepare_leaves_the_shards_byte_identical(tmp_path):
    from cpc_lightning.prepare import prepare

    cfg = prep_cfg(tmp_path, tmp_path / "P", "chunk_bytes=20000")
    out = fake_shards(tmp_path / "P", source_of(cfg))
    before = digest(out)
    with pytest.raises(UserError, match=r"chunk_bytes=20000 .*largest utterance"):
        prepare(cfg)
    assert digest(out) == before


def test_a_prepare_that_fails_midway_changes_nothing_and_a_good_one_replaces(tmp_path, monkeypatch):
    from cpc_lightning.data.audio import shards
    from cpc_lightning.prepare import prepare

    cfg = prep_cfg(tmp_path, tmp_path / "P")
    out = fake_shards(tmp_path / "P", source_of(cfg))
    before = digest(out)
    calls = []

    def optimize(litdata, fn, count, output_dir, *rest):
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / "index.json").write_text(json.dumps({"new": count}))
        calls.append(output_dir)
        if calls and len(calls) == 2 and fail:
            raise RuntimeError("disk full")

    monkeypatch.setattr(shards, "_optimize", optimize)
    fail = True
    with pytest.raises(RuntimeError, match="disk full"):
        prepare(cfg)
    assert digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["P", "cache"]  # no temporary left
    fail = False
    manifest = prepare(cfg)
    assert "new" in json.loads((out / "train" / "index.json").read_text())
    assert json.loads((out / "cpc_manifest.json").read_text()) == manifest
    assert not (out / "train" / "chunk-0-0.bin").exists()  # replaced, not merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["P", "cache"]


def test_prepare_refuses_a_run_dir_a_foreign_folder_and_other_shards(tmp_path, no_shard_writes):
    from cpc_lightning.prepare import prepare

    run = make_run(tmp_path / "r")
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep me")
    foreign = fake_shards(tmp_path / "S", {"_target_": "x.Other", "root": "/elsewhere"})
    cases = {
        run: r"is a run dir",
        other: r"is not empty and holds no shards .*todo\.txt",
        foreign: r"holds shards of another corpus .*overwrite=true",
    }
    for out, message in cases.items():
        before = digest(out)
        with pytest.raises(UserError, match=rf"out={out} {message}"):
            prepare(prep_cfg(tmp_path, out))
        assert digest(out) == before


# ---------------------------------------------------------- finding 8: evaluate checkpoint=
class Reached(Exception):
    pass


def test_evaluate_never_files_another_runs_scores_under_run_dir(tmp_path, monkeypatch):
    import cpc_lightning.evaluate as evaluate_module

    a, b = make_run(tmp_path / "a"), make_run(tmp_path / "b")

    def run_task(task, inputs):
        raise Reached(inputs.out_dir)

    monkeypatch.setattr(evaluate_module, "run_task", run_task)
    args = [f"run_dir={a}", f"checkpoint={b}/checkpoints/last.ckpt", "task=speakers"]
    with pytest.raises(UserError, match=rf"checkpoint=.*is not in run_dir={a}.*out_dir="):
        evaluate_module.evaluate(compose_entry("evaluate", args))
    assert not (a / "eval").exists() and not (b / "eval").exists()
    with pytest.raises(Reached) as reached:  # said where: allowed
        evaluate_module.evaluate(compose_entry("evaluate", [*args, f"out_dir={tmp_path / 'x'}"]))
    assert reached.value.args[0] == tmp_path / "x"
    step = a / "checkpoints" / "step_2.ckpt"  # a checkpoint of run_dir itself: its eval/
    step.write_bytes((a / "checkpoints" / "last.ckpt").read_bytes())
    own = [f"run_dir={a}", f"checkpoint={step}", "task=speakers"]
    with pytest.raises(Reached) as reached:
        evaluate_module.evaluate(compose_entry("evaluate", own))
    assert reached.value.args[0] == a / "eval"


# -------------------------------------------------------------------- finding 9: ABX inputs
@pytest.mark.parametrize(
    "line, message",
    [
        ("f1 0.50 0.20 a b c s1", r"onset 0.5 is after its offset 0.2"),
        ("f1 0.30 0.30 a b c s1", r"onset 0.3 equals its offset"),
        ("f1 -0.1 0.30 a b c s1", r"negative time"),
        ("f1 0.1 nan a b c s1", r"'nan' is not a finite number"),
        ("f1 0.1 0.2x a b c s1", r"'0.2x' is not a number"),
    ],
)
def test_abx_item_lines_with_impossible_times_are_refused(tmp_path, line, message):
    from cpc_lightning.eval.abx import ITEM_HEADER, read_items

    path = tmp_path / "x.item"
    path.write_text(f"{ITEM_HEADER}\nf1 0.0 0.1 a b c s1\n{line}\n")
    with pytest.raises(ValueError, match=rf"{path}: item line 3: {message}"):
        read_items(path)


def test_abx_refuses_features_of_mixed_dimensions():
    from cpc_lightning.eval.abx import ItemSet, abx

    items = ItemSet()
    for k, f in enumerate(["f1", "f2", "f1", "f2"]):
        items.append(f, 0.0, 0.05, "ab"[k % 2], "x", "y", "s1")
    feats = {"f1": torch.randn(10, 3), "f2": torch.randn(10, 4)}
    with pytest.raises(ValueError, match=r"'f1' has dimension 3 but 'f2' has 4"):
        abx(feats, items, 100.0)


# ------------------------------------------------------------ finding 9: a sweep's exit code
def test_a_sweep_with_a_failed_point_exits_non_zero_with_the_summarys_count(tmp_path, caplog):
    from cpc_lightning.training.sweep_summary import SweepSummary

    for num, failed in ((0, True), (1, False), (2, False)):
        job = tmp_path / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- model.prediction_steps={num}\n")
        if failed:
            (job / "failed.txt").write_text("Traceback ...\nValueError: no\n")
        else:
            (job / "result.json").write_text(json.dumps({"metrics": {"val/loss": 1.0}}))
    cfg = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    with caplog.at_level(logging.INFO), pytest.raises(SystemExit) as exit_:
        SweepSummary().on_multirun_end(cfg)
    assert exit_.value.code == 1
    md = (tmp_path / "summary.md").read_text()
    assert "(3 points, 1 failed or missing)" in md
    assert "3 points, 1 failed or missing (job 0)" in caplog.text


# --------------------------------------------------------------- the traceback list: one line
def _fsdd_run(tmp_path: Path) -> list[str]:
    run = make_run(tmp_path / "r")
    return [f"run_dir={run}", "task=speakers", "probe.seeds=[]"]


def _mixed_features(tmp_path: Path) -> list[str]:
    feats = tmp_path / "feats"
    feats.mkdir()
    np.save(feats / "a.npy", np.ones((20, 3), np.float32))
    np.save(feats / "b.npy", np.ones((20, 4), np.float32))
    meta = {"frame_rate_hz": 100.0, "files": ["a.npy", "b.npy"], "model": {}, "feature": "c"}
    (feats / "features.json").write_text(json.dumps(meta))
    items = tmp_path / "x.item"
    items.write_text("#h\na 0 0.1 p x y s\nb 0 0.1 q x y s\na 0.1 0.15 p x y s\n")
    return [f"features={feats}", f"items={items}", "task=abx"]


def _text_checkpoint(tmp_path: Path) -> list[str]:
    (tmp_path / "notes.txt").write_text("hello: not a checkpoint\n")  # unpickles as a KeyError
    return [f"checkpoint={tmp_path / 'notes.txt'}", f"out={tmp_path / 'conv'}"]


ONE_LINE = {
    "prepare chunk_bytes=20000": (
        "prepare",
        lambda tmp: [*PREP, f"out={tmp / 'P'}", f"paths.cache_dir={tmp}/c", "chunk_bytes=20000"],
        r"chunk_bytes=20000 .*give chunk_bytes=\d+MB",
    ),
    "prepare chunk_bytes=64 MiB": (
        "prepare",
        lambda tmp: [*PREP, f"out={tmp / 'P'}", f"paths.cache_dir={tmp}/c", "chunk_bytes=64MiB"],
        r"chunk_bytes='64MiB' is not a size",
    ),
    "evaluate probe.seeds=[]": ("evaluate", _fsdd_run, r"probe.seeds=\[\] .*probe.seeds=\[0\]"),
    "abx features of mixed dimensions": (
        "evaluate",
        _mixed_features,
        r"'a' has dimension 3 but 'b' has 4",
    ),
    "convert a text file": (
        "convert",
        _text_checkpoint,
        r"notes.txt is not a file written by torch.save",
    ),
}


@pytest.mark.parametrize("case", sorted(ONE_LINE))
def test_each_mistake_is_one_line_and_exit_2(case, tmp_path, capsys, monkeypatch):
    import importlib

    entry, args, message = ONE_LINE[case]
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(f"cpc_lightning.{entry}")
    if entry == "convert":  # its body reads the command line's overrides from Hydra
        hydra_config = type("HydraConfig", (), {"get": staticmethod(lambda: no_overrides)})
        no_overrides = OmegaConf.create({"overrides": {"task": []}})
        monkeypatch.setattr(module, "HydraConfig", hydra_config)
    main = module.main
    cfg = compose_entry(entry, args(tmp_path))
    with pytest.raises(SystemExit) as exit_:
        main(cfg)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2, err
    assert len(err) == 1 and err[0].startswith(f"cpc_lightning.{entry}: error: "), err
    assert re.search(message, err[0]), err


@pytest.mark.skipif(os.name != "posix", reason="file names are bytes on POSIX only")
def test_an_audio_file_whose_name_is_not_utf8_is_read_like_any_other(tmp_path):
    from cpc_lightning.data.audio.datamodules import AudioFolderDataModule

    root = tmp_path / "audio"
    for n, name in enumerate([b"anna_1.wav", b"bert_1.wav", b"caf\xe9_1.wav"]):
        write_tone(root / f"{n}.wav", 0.5, seed=n)  # soundfile cannot write that name either
        (root / f"{n}.wav").rename(root / os.fsdecode(name))
    dm = AudioFolderDataModule(
        root=str(root), pattern=r"(?P<speaker>[a-z\udce9]+)_\d\.wav$", window=3200,
        batch_size=1, test_fraction=0.34, cache_dir=str(tmp_path / "cache"), num_workers=0,
    )  # fmt: skip
    dm.prepare_data()
    dm.setup("fit")
    records = [r for split in ("train", "test") for r in dm.items(split)]
    assert len(records) == 3  # none called unreadable
    assert all(dm.reader.load(r).numel() > 0 for r in records)


TYPOS = [
    (
        "train",
        "trainer.max_step=5",
        r"trainer.max_step is not a key .*did you mean "
        r"trainer.max_steps",
    ),  # fmt: skip
    ("prepare", "chunk_byte=1MB", r"chunk_byte is not a key .*did you mean chunk_bytes\?"),
    ("train", "data=fsdx", r"Could not find 'data/fsdx'.*fsdd"),
]


@pytest.mark.parametrize("entry, override, message", TYPOS)
def test_a_typo_in_a_key_is_one_line_naming_the_nearest(entry, override, message):
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException

    from cpc_lightning.errors import composition_message

    with (
        initialize_config_dir(config_dir=str(CONF), version_base="1.3"),
        pytest.raises(ConfigCompositionException) as exc,
    ):
        compose(entry, overrides=[override])
    line = composition_message(exc.value, CONF, entry, [override])
    assert "\n" not in line and re.search(message, line), line


@pytest.mark.slow  # three interpreter starts (each imports torch)
def test_python_m_with_a_typo_is_one_line_exit_2_and_writes_nothing(tmp_path):
    procs = []
    for n, (entry, override, message) in enumerate(TYPOS):
        cwd = tmp_path / str(n)
        cwd.mkdir()
        cmd = [sys.executable, "-m", f"cpc_lightning.{entry}", override]
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
        procs.append((entry, message, cwd, subprocess.Popen(cmd, cwd=cwd, env=cli_env(), **pipes)))
    for entry, message, cwd, proc in procs:
        _, err = proc.communicate(timeout=600)
        lines = err.strip().splitlines()
        prefix = "cpc_lightning" if entry == "train" else f"cpc_lightning.{entry}"
        assert proc.returncode == 2, err[-3000:]
        assert len(lines) == 1 and lines[0].startswith(f"{prefix}: error: "), lines
        assert re.search(message, lines[0]), lines
        assert list(cwd.iterdir()) == []  # nothing written
