"""``cpc_lightning.extract``: one feature file per input file, with the recorded frame rate."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import compose_entry, make_run

from cpc_lightning.model.encoders.audio import Conv1dEncoder


@pytest.mark.parametrize("fmt", ["npy", "pt"])
def test_extract_writes_one_file_per_input(tmp_path: Path, fmt: str) -> None:
    from cpc_lightning.extract import extract

    run = make_run(tmp_path)
    out = tmp_path / "feats"
    cfg = compose_entry("extract", [f"run_dir={run}", f"out={out}", f"format={fmt}"])
    summary = extract(cfg)
    meta = json.loads((out / "features.json").read_text())
    assert meta["frame_rate_hz"] == 100.0 and meta["hop_samples"] == 160
    assert meta["feature"] == "c" and meta["dim"] == 16 and meta["format"] == fmt
    audio = sorted(p for p in Path(summary["data_root"]).rglob("*.flac"))
    written = sorted(out.rglob(f"*.{fmt}"))
    assert len(written) == len(audio) == meta["num_files"] > 0
    for src in audio:
        rel = src.relative_to(summary["data_root"]).with_suffix(f".{fmt}")
        dest = out / rel
        assert dest.is_file(), rel
        feats = np.load(dest) if fmt == "npy" else torch.load(dest).numpy()
        length = sf.info(str(src)).frames
        assert feats.shape == (Conv1dEncoder().num_frames(length), 16)  # ~L / 160 frames


def test_layer_options_are_checked(tmp_path: Path) -> None:
    from cpc_lightning.errors import UserError
    from cpc_lightning.extract import extract

    run = make_run(tmp_path)
    base = [f"run_dir={run}", f"out={tmp_path / 'f'}"]
    with pytest.raises(UserError, match="layers=some must be null"):
        extract(compose_entry("extract", [*base, "layers=some"]))
    with pytest.raises(UserError, match="layers=all writes every layer: drop layer=0"):
        extract(compose_entry("extract", [*base, "layers=all", "layer=0"]))
    assert not (tmp_path / "f").exists()


@pytest.mark.parametrize("mode", ["bar", "log"])
def test_extract_shows_progress_with_a_time_estimate(tmp_path: Path, mode: str) -> None:
    from helpers import run_train

    run = make_run(tmp_path)
    env = {"CPC_PROGRESS": mode, "CPC_PROGRESS_EVERY": "0"}  # log: a line per batch here
    proc = run_train(
        f"run_dir={run}", f"out={tmp_path / 'feats'}", "batch_size=2",
        module="cpc_lightning.extract", env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    n = json.loads((tmp_path / "feats" / "features.json").read_text())["num_files"]
    if mode == "bar":  # tqdm on stderr: count, total and the remaining-time estimate
        assert f"/{n}" in proc.stderr and "utt" in proc.stderr and "<" in proc.stderr
    else:  # no terminal: log lines with count, rate and ETA
        lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "extract:" in ln]
        assert len(lines) >= 2 and f"/{n} utt" in lines[-1] and "ETA" in lines[0]


def test_extract_refuses_a_non_empty_folder_unless_overwrite(tmp_path: Path) -> None:
    """Finding 4: extract into a folder of other files overwrote features.json and mixed files."""
    from cpc_lightning.errors import UserError
    from cpc_lightning.extract import extract

    run = make_run(tmp_path)
    out = tmp_path / "feats"
    out.mkdir()
    (out / "features.json").write_text("someone else's")
    cfg = compose_entry("extract", [f"run_dir={run}", f"out={out}"])
    with pytest.raises(UserError, match=r"is not empty \(1 entries, e.g. features.json\)"):
        extract(cfg)
    assert (out / "features.json").read_text() == "someone else's"
    assert sorted(p.name for p in out.iterdir()) == ["features.json"]
    summary = extract(compose_entry("extract", [f"run_dir={run}", f"out={out}", "overwrite=true"]))
    assert json.loads((out / "features.json").read_text())["num_files"] == summary["num_files"]
    assert not list(out.rglob("*.partial"))


def test_extract_writes_each_file_atomically(tmp_path: Path, monkeypatch) -> None:
    """A write that dies half way leaves no feature file under its final name."""
    from cpc_lightning import extract as entry
    from cpc_lightning import feature_folder

    run = make_run(tmp_path)
    out = tmp_path / "feats"
    real = np.save
    calls = []

    def dies_on_the_third(fh, arr):
        calls.append(1)
        if len(calls) == 3:
            fh.write(b"half")
            raise OSError("disk full")
        real(fh, arr)

    monkeypatch.setattr(feature_folder.np, "save", dies_on_the_third)
    with pytest.raises(OSError, match="disk full"):
        entry.extract(compose_entry("extract", [f"run_dir={run}", f"out={out}"]))
    assert len(calls) == 3 and not out.exists()  # nothing published, no staging folder left
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_extract_refuses_pool_for_audio_and_files_that_share_a_name(tmp_path: Path) -> None:
    """``pool=`` pools image grids only; ``a.flac`` beside ``a.wav`` would write one ``a.npy``."""
    from helpers import write_tone

    from cpc_lightning.errors import UserError
    from cpc_lightning.extract import extract

    run = make_run(tmp_path)
    out = tmp_path / "feats"
    with pytest.raises(UserError, match="pool=mean pools image grids: drop it for audio data"):
        extract(compose_entry("extract", [f"run_dir={run}", f"out={out}", "pool=mean"]))
    for i, name in enumerate(("spk1/a.flac", "spk1/a.wav", "spk2/b.flac")):
        write_tone(tmp_path / "audio" / name, 0.5, seed=i)
    data = ["data=audio_folder", f"data.root={tmp_path / 'audio'}", f"data.cache_dir={tmp_path}"]
    with pytest.raises(UserError, match=r"spk1/a.flac and spk1/a.wav would both write spk1/a.npy"):
        extract(compose_entry("extract", [f"run_dir={run}", f"out={out}", *data]))
    assert not out.exists()


# ------------------------------------------------------- issue 30, finding 9 and tracebacks
def files_under(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())


def test_overwrite_replaces_the_feature_files_wholesale(tmp_path: Path) -> None:
    """Finding 9: after ``overwrite=true`` with fewer inputs, the old model's files stayed; the
    files the previous ``features.json`` listed go, files extract did not write stay."""
    from helpers import write_tone

    from cpc_lightning.extract import extract

    run = make_run(tmp_path)
    for i, name in enumerate(("s1/a.flac", "s1/b.flac", "s2/c.flac", "s2/d.flac")):
        write_tone(tmp_path / "many" / name, 0.5, seed=i)
        if i < 2:
            write_tone(tmp_path / "few" / name, 0.5, seed=i)
    out = tmp_path / "feats"

    def extract_from(root: str, *extra: str) -> dict:
        data = ["data=audio_folder", f"data.root={tmp_path / root}", f"data.cache_dir={tmp_path}"]
        return extract(compose_entry("extract", [f"run_dir={run}", f"out={out}", *data, *extra]))

    extract_from("many", "data.test_fraction=0.25")
    (out / "README.txt").write_text("my notes")  # not extract's: kept
    summary = extract_from("few", "overwrite=true", "data.test_fraction=0.5")
    meta = json.loads((out / "features.json").read_text())
    assert meta["files"] == summary["files"] == ["s1/a.npy", "s1/b.npy"]
    assert files_under(out) == ["README.txt", "features.json", "s1/a.npy", "s1/b.npy"]
    assert not (out / "s2").exists()


def test_a_failed_extract_leaves_the_folder_as_it_was(tmp_path: Path, monkeypatch) -> None:
    from cpc_lightning import extract as entry
    from cpc_lightning import feature_folder

    run = make_run(tmp_path)
    out = tmp_path / "feats"
    entry.extract(compose_entry("extract", [f"run_dir={run}", f"out={out}"]))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    real, calls = feature_folder.np.save, []

    def dies_on_the_third(fh, arr):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        real(fh, arr)

    monkeypatch.setattr(feature_folder.np, "save", dies_on_the_third)
    with pytest.raises(OSError, match="disk full"):
        again = [f"run_dir={run}", f"out={out}", "overwrite=true", "feature=z"]  # other values
        entry.extract(compose_entry("extract", again))
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def _audio_tones(tmp_path: Path) -> list[str]:
    from helpers import write_tone

    for i, name in enumerate(("s1/a.flac", "s2/b.flac")):
        write_tone(tmp_path / "tones" / name, 0.5, seed=i)
    return ["data=audio_folder", f"data.root={tmp_path / 'tones'}", f"data.cache_dir={tmp_path}"]


def _image_tree(tmp_path: Path) -> list[str]:
    from helpers import make_image_tree

    tree = make_image_tree(tmp_path / "tree", per_class=1, size=40, classes=("a", "b"))
    return ["data=imagenet_patches", f"data.root={tree}", "data.image_size=32",
            "data.patch_size=16", "data.stride=8"]  # fmt: skip


IMAGE_RUN = Path(__file__).resolve().parents[1] / "fixtures" / "run_f2cadb0_image"
ONE_LINE = {
    "layer=9": (lambda tmp: [f"run_dir={make_run(tmp)}", "layer=9"], r"layer=9 is out of range"),
    "an image run on audio": (
        lambda tmp: [f"run_dir={IMAGE_RUN}", *_audio_tones(tmp)],
        r"reads image but data .* is audio: run_dir=.* is an image model",
    ),
    "an audio run on images": (
        lambda tmp: [f"run_dir={make_run(tmp)}", *_image_tree(tmp)],
        r"reads audio but data .* is image: run_dir=.* is an audio model",
    ),
}


@pytest.mark.parametrize("case", sorted(ONE_LINE))
def test_each_mistake_is_one_line_and_exit_2(case, tmp_path, capsys, monkeypatch) -> None:
    from cpc_lightning.extract import main

    args, message = ONE_LINE[case]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(compose_entry("extract", [*args(tmp_path), f"out={tmp_path / 'f'}"]))
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2, err
    assert len(err) == 1 and err[0].startswith("cpc_lightning.extract: error: "), err
    assert re.search(message, err[0]), err
    assert not (tmp_path / "f").exists()


def test_a_grid_context_with_audio_is_refused_before_writing(tmp_path: Path) -> None:
    from helpers import make_cfg, tiny

    from cpc_lightning.errors import UserError
    from cpc_lightning.train import train

    with pytest.raises(UserError, match=r"context MaskedConvContext reads image patch grids") as e:
        train(make_cfg(tiny("context=masked_conv", "context.num_layers=1"), tmp_path))
    assert "\n" not in str(e.value) and "context=gru" in str(e.value)
    assert not (tmp_path / "run").exists() or not list((tmp_path / "run").iterdir())
