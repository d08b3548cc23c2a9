"""Findings 2 and 9: NaN/inf samples, cut WAV files and label files that match no audio are
found and named (skipped with a warning, or one error where asked or needed)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import BASE, make_cfg, run_train, tiny, write_tone

from cpc_lightning.data.audio.datamodules import AudioFolderDataModule, LibriSpeechDataModule
from cpc_lightning.data.audio.manifest import AudioDataWarning

SYNTHETIC = tuple(k for k in BASE if k.startswith("data.synthetic."))


def float_wav(path: Path, seconds: float, bad: float | None = None, seed: int = 0) -> Path:
    """A float32 WAV; ``bad`` (nan or inf) is written into a few samples after the first 0.1 s."""
    rng = np.random.default_rng(seed)
    x = (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)
    if bad is not None:
        x[1600:1610] = bad
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, 16000, subtype="FLOAT")
    return path


def corpus(root: Path, bad: dict[str, float]) -> Path:
    """``<spk>/<spk>_<i>.wav``: 2 speakers x 4 float files, some with non-finite samples."""
    for spk in ("ann", "bob"):
        for i in range(4):
            name = f"{spk}/{spk}_{i}.wav"
            float_wav(root / name, 0.6, bad.get(name), seed=i)
    return root


def folder_dm(root: Path, cache: Path, **kw) -> AudioFolderDataModule:
    dm = AudioFolderDataModule(
        root=str(root),
        pattern=r"(?P<speaker>[a-z]+)/",
        cache_dir=str(cache),
        window=3200,
        batch_size=2,
        **kw,
    )
    dm.prepare_data()
    dm.setup()
    return dm


def test_files_with_nan_or_inf_samples_are_skipped_and_named(tmp_path):
    root = corpus(tmp_path / "c", {"ann/ann_1.wav": math.nan, "bob/bob_2.wav": math.inf})
    with pytest.warns(AudioDataWarning) as rec:
        dm = folder_dm(root, tmp_path / "cache")
    named = [str(w.message) for w in rec if "non-finite" in str(w.message)]
    assert len(named) == 2 and any(str(root / "ann/ann_1.wav") in m for m in named)
    assert dm.stats["corrupt"] == 2 and dm.stats["utterances"] == 6
    for batch in dm.train_dataloader():
        assert torch.isfinite(batch["x"]).all()
    # a cached start names them again
    with pytest.warns(AudioDataWarning, match="non-finite"):
        assert folder_dm(root, tmp_path / "cache").stats["corrupt"] == 2


def test_on_bad_file_error_is_one_clear_error(tmp_path):
    root = corpus(tmp_path / "c", {"ann/ann_1.wav": math.nan})
    with pytest.raises(ValueError, match=r"bad audio file .*ann_1.wav: non-finite.*on_bad_file"):
        folder_dm(root, tmp_path / "cache", on_bad_file="error")
    with pytest.raises(ValueError, match="data.on_bad_file='never' must be skip or error"):
        folder_dm(root, tmp_path / "cache", on_bad_file="never")


def test_a_corpus_of_only_bad_files_says_so(tmp_path):
    root = corpus(
        tmp_path / "c", {f"{s}/{s}_{i}.wav": math.nan for s in ("ann", "bob") for i in range(4)}
    )
    with (
        pytest.warns(AudioDataWarning),
        pytest.raises(FileNotFoundError, match="all 8 files are bad"),
    ):
        folder_dm(root, tmp_path / "cache")


NAN_DATA = {"ann/ann_1.wav": math.nan, "bob/bob_2.wav": -math.inf}


def nan_run(root: Path, *extra: str) -> list[str]:
    data = ["data=audio_folder", f"data.root={root}", "data.pattern='(?P<speaker>[a-z]+)/'"]
    return tiny(*data, "data.test_fraction=0.25", *extra, drop=SYNTHETIC)


def test_nan_input_trains_a_finite_model_or_stops_at_start_up(tmp_path):
    """Finding 2: float WAVs with NaN/inf trained into a NaN model, exit 0."""
    from cpc_lightning.errors import UserError
    from cpc_lightning.train import train

    root = corpus(tmp_path / "c", NAN_DATA)
    result = train(make_cfg(nan_run(root), tmp_path))
    assert all(math.isfinite(v) for k, v in result["metrics"].items() if "loss" in k)
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values())
    with pytest.raises(UserError, match=r"ann_1.wav: non-finite"):
        train(make_cfg(nan_run(root, "data.on_bad_file=error"), tmp_path / "strict"))
    assert not (tmp_path / "strict" / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_nan_input_with_on_bad_file_error_is_one_line(tmp_path):
    root = corpus(tmp_path / "c", NAN_DATA)
    proc = run_train(
        *nan_run(root, "data.on_bad_file=error"),
        f"hydra.run.dir={tmp_path / 'strict'}",
        env={"CPC_CACHE_DIR": str(tmp_path / "cache")},
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1 and str(root / "ann" / "ann_1.wav") in errors[0]


def test_a_file_that_turns_nan_after_indexing_is_read_as_silence(tmp_path):
    root = corpus(tmp_path / "c", {})
    dm = folder_dm(root, tmp_path / "cache", memory_cache_mb=0)
    victim = root / "ann" / "ann_0.wav"
    st = victim.stat()
    data, sr = sf.read(str(victim), dtype="float32")
    data[:] = np.nan
    sf.write(str(victim), data, sr, subtype="FLOAT")
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))  # the manifest still trusts it
    index = next(i for i, r in enumerate(dm.train_set.records) if r.path == str(victim))
    with pytest.warns(AudioDataWarning, match=r"ann_0.wav: non-finite .*using silence"):
        item = dm.train_set[index]
    assert torch.isfinite(item["x"]).all() and not item["mask"].any()


def test_a_wav_cut_short_is_read_with_a_warning(tmp_path):
    """Finding 9: a WAV cut to a third of its bytes was read as a shorter file, silently."""
    root = tmp_path / "c"
    for i in range(4):
        write_tone(root / "ann" / f"ann_{i}.wav", 1.5, seed=i)
    cut = root / "ann" / "ann_3.wav"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 3])
    with pytest.warns(AudioDataWarning, match=r"ann_3.wav: its header promises 24000 frames, "):
        dm = folder_dm(root, tmp_path / "cache")
    rec = next(r for r in dm.items("train") + dm.items("test") if r.path == str(cut))
    assert rec.num_samples == sf.info(str(cut)).frames < 24000 // 3 + 100
    assert dm.stats["truncated"] == 1 and dm.stats["corrupt"] == 0
    with pytest.raises(ValueError, match="ann_3.wav: its header promises"):
        folder_dm(root, tmp_path / "cache", on_bad_file="error")


def test_a_phone_file_that_matches_no_audio(libri_tree, tmp_path):
    """Finding 9: a label file covering no audio trained with zero phone labels after one INFO."""
    labels = libri_tree / "converted_aligned_phones.txt"
    labels.write_text("7-7-0000 1 2 3\n8-8-0000 1 2\n")
    with pytest.warns(AudioDataWarning, match=r"none of the 2 utterance ids of the phone labels"):
        dm = LibriSpeechDataModule(root=str(libri_tree), cache_dir=str(tmp_path), window=3200)
        dm.setup()
    assert "phones" not in dm.labels and dm.label_problems
    assert "11-100-0000" in dm.label_problems[0]  # what the audio ids look like
    # named explicitly, the file is needed: an error
    with pytest.raises(ValueError, match="does not belong to this corpus"):
        LibriSpeechDataModule(
            root=str(libri_tree), cache_dir=str(tmp_path), window=3200, phones_file=str(labels)
        ).setup()


def test_evaluate_phones_names_the_label_file_that_matched_nothing(libri_tree, tmp_path):
    from helpers import compose_entry, make_run

    from cpc_lightning.errors import UserError
    from cpc_lightning.evaluate import evaluate

    (libri_tree / "converted_aligned_phones.txt").write_text("7-7-0000 1 2 3\n")
    run = make_run(tmp_path / "r")
    cfg = compose_entry(
        "evaluate",
        [
            f"run_dir={run}",
            "task=phones",
            "data=librispeech",
            f"data.root={libri_tree}",
            f"data.cache_dir={tmp_path / 'cache'}",
        ],
    )
    with pytest.raises(UserError) as err:
        evaluate(cfg)
    assert "task=phones" in str(err.value) and "converted_aligned_phones.txt" in str(err.value)


def test_a_split_file_that_matches_no_audio_falls_back_with_a_warning(libri_tree, tmp_path):
    (libri_tree / "test_split.txt").write_text("9-9-0001\n9-9-0002\n")
    with pytest.warns(AudioDataWarning, match="test split file .*falls back to data.test_fraction"):
        dm = LibriSpeechDataModule(root=str(libri_tree), cache_dir=str(tmp_path), window=3200)
        dm.setup()
    assert dm.items("test") and dm.items("train")
