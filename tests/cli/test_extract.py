"""``cpc_lightning.extract``: one feature file per input file, with the recorded frame rate."""

from __future__ import annotations

import json
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
