"""``python -m cpc_lightning.quantize``: a k-means codebook on the training split's frames and
every utterance's units as fairseq HuBERT labels (``.tsv`` + ``.km``) and ZeroSpeech 2021's
``quantized_outputs.txt``; refusals in one line."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import numpy as np
import pytest
import soundfile as sf
from helpers import compose_entry, make_run, run_train

from cpc_lightning.errors import UserError
from cpc_lightning.model.encoders.audio import Conv1dEncoder
from cpc_lightning.quantize import file_ids, main, quantize

FAST = ["k=4", "epochs=2", "batch_size=256"]


def _quantize(run: Path, out: Path, *extra: str) -> dict:
    return quantize(compose_entry("quantize", [f"run_dir={run}", f"out={out}", *FAST, *extra]))


def _read_km(out: Path, split: str) -> tuple[Path, list[str], list[list[int]]]:
    """fairseq's manifest (root, relative paths) and the unit lines, in the same order."""
    tsv = (out / f"{split}.tsv").read_text().splitlines()
    km = (out / f"{split}.km").read_text().splitlines()
    return (
        Path(tsv[0]),
        [line.split("\t")[0] for line in tsv[1:]],
        [[int(u) for u in line.split()] for line in km],
    )


def test_quantize_writes_the_codebook_and_the_units(tmp_path: Path) -> None:
    run, out = make_run(tmp_path), tmp_path / "units"
    summary = _quantize(run, out)
    codebook = np.load(out / "codebook.npy")
    assert codebook.shape == (4, 16) and codebook.dtype == np.float32
    km = joblib.load(out / "kmeans.joblib")  # what fairseq's dump_km_label.py loads
    assert np.allclose(km.cluster_centers_, codebook)
    assert (out / "dict.km.txt").read_text().splitlines() == [f"{u} 1" for u in range(4)]
    ids = {}
    for split in ("train", "test"):
        root, rels, lines = _read_km(out, split)
        assert len(rels) == len(lines) == summary["utterances"][split] > 0
        for rel, units in zip(rels, lines, strict=True):
            frames = Conv1dEncoder().num_frames(sf.info(str(root / rel)).frames)
            assert len(units) == frames and all(0 <= u < 4 for u in units)  # one unit per frame
            ids[Path(rel).stem] = units
    zs = (out / "quantized_outputs.txt").read_text().splitlines()
    assert len(zs) == len(ids)
    for line in zs:  # <file id>\t<u1>,<u2>,...
        name, units = line.split("\t")
        assert [int(u) for u in units.split(",")] == ids[name]
    meta = json.loads((out / "features.json").read_text())
    assert meta["k"] == 4 and meta["layer"] == "c" and meta["frame_rate_hz"] == 100.0
    assert meta["kmeans"]["train_frames"] > 0 and meta["kmeans"]["seed"] == 0


def test_the_units_are_seeded_and_the_layer_is_chosen(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    _quantize(run, tmp_path / "a", "split=test")
    _quantize(run, tmp_path / "b", "split=test")
    assert (tmp_path / "a" / "test.km").read_text() == (tmp_path / "b" / "test.km").read_text()
    assert not (tmp_path / "a" / "train.km").exists()
    _quantize(run, tmp_path / "z", "split=test", "layer=z")
    assert not np.allclose(
        np.load(tmp_path / "z" / "codebook.npy"), np.load(tmp_path / "a" / "codebook.npy")
    )
    _quantize(run, tmp_path / "l0", "split=test", "layer=0")
    assert json.loads((tmp_path / "l0" / "features.json").read_text())["layer"] == "0"


def test_refusals_are_one_line_and_write_nothing(tmp_path: Path) -> None:
    run, out = make_run(tmp_path), tmp_path / "units"
    with pytest.raises(UserError, match=r"layer=top is not a layer of this model: give layer=z"):
        _quantize(run, out, "layer=top")
    with pytest.raises(UserError, match=r"layer=3 is not a layer .* context layer 0\.\.0"):
        _quantize(run, out, "layer=3")
    with pytest.raises(UserError, match="k=1: units need at least 2 clusters"):
        _quantize(run, out, "k=1")
    with pytest.raises(UserError, match=r"k=100000 is more than the \d+ training frames"):
        _quantize(run, out, "k=100000")
    assert not out.exists()
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=r"out=.* is not empty .*pass overwrite=true"):
        _quantize(run, out)
    _quantize(run, out, "overwrite=true", "split=test")
    assert (out / "notes.txt").read_text() == "mine" and (out / "test.km").is_file()


def test_python_m_quantize_refuses_in_one_line(tmp_path: Path) -> None:
    assert main.entry_name == "cpc_lightning.quantize"
    run = make_run(tmp_path)
    proc = run_train(
        f"run_dir={run}", f"out={tmp_path / 'u'}", "layer=top", module="cpc_lightning.quantize"
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("cpc_lightning.quantize: error: layer=top is not a layer")


@pytest.mark.slow  # an interpreter start (imports torch)
def test_python_m_quantize(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    proc = run_train(
        f"run_dir={run}", f"out={tmp_path / 'u'}", *FAST, module="cpc_lightning.quantize"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "4 units of layer c" in proc.stdout and (tmp_path / "u" / "train.km").is_file()


def test_file_ids_are_names_unless_names_repeat() -> None:
    libri = ["dev-clean/84/121123/84-121123-0000.flac", "dev-clean/84/121123/84-121123-0001.flac"]
    assert file_ids(libri) == (["84-121123-0000", "84-121123-0001"], "stem")
    timit = ["dr1-fvmh0/sa1.wav", "dr2-faem0/sa1.wav"]
    assert file_ids(timit) == (["dr1-fvmh0/sa1", "dr2-faem0/sa1"], "path")
