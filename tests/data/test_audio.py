"""Audio data: manifests and caches, windows, augmentations, DataModules (the batch samplers on
their own: ``test_audio_samplers.py``)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import hydra
import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import CONF, compose_entry, write_tone
from lightning_fabric.utilities.data import _set_sampler_epoch

from cpc_lightning.data.audio import probe
from cpc_lightning.data.audio.augment import AUGMENTATIONS, build_augment
from cpc_lightning.data.audio.datamodules import (
    AudioFolderDataModule,
    LibriSpeechDataModule,
)
from cpc_lightning.data.audio.frames import expected_phone_frames
from cpc_lightning.data.audio.labels import SplitRule
from cpc_lightning.data.audio.layouts import LibriSpeechLayout
from cpc_lightning.data.audio.manifest import AudioDataWarning, build_manifest
from cpc_lightning.data.audio.reader import AudioReader

CONF_DATA = CONF / "data"
CONTRACT = {"x", "mask", "speaker", "phones", "label", "index"}


def libri(root: Path, cache: Path, **kw) -> LibriSpeechDataModule:
    dm = LibriSpeechDataModule(root=str(root), cache_dir=str(cache), **kw)
    dm.prepare_data()
    dm.setup()
    return dm


def check_batch(batch: dict, window: int) -> None:
    assert set(batch) == CONTRACT
    b = batch["x"].shape[0]
    assert batch["x"].shape == (b, 1, window) and batch["x"].dtype == torch.float32
    assert batch["mask"].shape == (b, window) and batch["mask"].dtype == torch.bool
    assert batch["phones"].shape == (b, window // 160) and batch["phones"].dtype == torch.int64
    for k in ("speaker", "label", "index"):
        assert batch[k].shape == (b,) and batch[k].dtype == torch.int64
    assert torch.isfinite(batch["x"]).all() and batch["x"].abs().max() <= 1.0
    assert (batch["x"][:, 0][~batch["mask"]] == 0).all()


def compose_preset(name: str, shared: Path, cache: Path):
    """``data=<name>`` as the train entry composes it, caching under ``cache``."""
    cfg = compose_entry("train", [f"data={name}", f"data_dir={shared}", "seed=3"], hydra=True)
    cfg.data.cache_dir = str(cache)
    return cfg.data


# --------------------------------------------------------------------------------------------
# Real data (shared example datasets)
# --------------------------------------------------------------------------------------------


def test_librispeech_sample_phones_and_batches(shared_data, tmp_path):
    dm = libri(shared_data / "librispeech_sample", tmp_path, batch_size=4)
    recs = {r.uid: r for r in dm.items("train") + dm.items("test")}
    assert len(recs) == 9 and len(dm.speakers) == 6
    for uid, frames in (("4051-11218-0044", 1119), ("2911-12359-0007", 508)):
        r = recs[uid]
        assert len(r.phones) == frames == (r.num_samples - 400) // 160 + 1
        assert r.num_samples == sf.info(r.path).frames
    assert sum(r.phones is not None for r in recs.values()) == 2
    assert dm.stats["label_ids_without_audio"] == 4
    assert dm.num_phones == 41 and dm.provides_speakers and dm.classes == []
    batch = next(iter(dm.train_dataloader()))
    check_batch(batch, 20480)
    # windows align with the label frames: frame j = label frame start // 160 + j
    ds = dm.train_set
    i = next(i for i, r in enumerate(ds.records) if r.uid == "4051-11218-0044")
    item = ds[i]
    start = ds.start_of(i)
    assert start % 160 == 0
    assert np.array_equal(
        item["phones"].numpy(), recs["4051-11218-0044"].phones[start // 160 :][:128]
    )
    full = dm.load(recs["4051-11218-0044"])
    assert torch.equal(item["x"][0], full[start : start + 20480])


def test_fsdd_preset_resamples_and_splits(shared_data, tmp_path):
    cfg = compose_preset("fsdd", shared_data, tmp_path)
    dm = hydra.utils.instantiate(cfg, batch_size=6)
    dm.prepare_data()
    dm.setup()
    assert dm.root == (shared_data / "fsdd").resolve()
    assert dm.speakers == ["george", "jackson", "lucas", "nicolas", "theo", "yweweler"]
    assert dm.classes == [str(d) for d in range(10)]
    test, train = dm.items("test"), dm.items("train")
    assert len(test) == 300 and len(train) == 2700
    assert all(re.search(r"_[0-4]\.wav$", r.path) for r in test)
    r = train[0]
    assert r.file_sample_rate == 8000 and r.num_samples == 2 * r.file_frames
    assert dm.load(r).shape == (2 * r.file_frames,)
    assert r.label == Path(r.path).name[0] and r.speaker in Path(r.path).name
    check_batch(next(iter(dm.val_dataloader())), cfg.window)


def test_speech_commands_preset_is_speaker_disjoint(shared_data, tmp_path):
    cfg = compose_preset("speech_commands", shared_data, tmp_path)
    dm = hydra.utils.instantiate(cfg)
    dm.setup()  # no prepare_data: builds the manifest in memory, writes nothing
    assert not list(tmp_path.iterdir())
    assert len(dm.speakers) == 12 and len(dm.classes) == 10
    held = {r.speaker for r in dm.items("test")}
    assert held == {"b97c9f77", "beb458a4", "c22d3f18"}
    assert held.isdisjoint(r.speaker for r in dm.items("train"))
    assert len(dm.items("test")) == 120 and all(r.num_samples == 16000 for r in dm.items("test"))
    assert all(Path(r.path).parent.name == r.label for r in dm.items("train"))


def test_presets_compose_with_hydra_defaults(tmp_path):
    """The presets' defaults lists resolve under Hydra (a throwaway primary config)."""
    from hydra import compose, initialize_config_dir

    (tmp_path / "main.yaml").write_text(
        "defaults:\n  - data: fsdd\n  - _self_\n"
        f"hydra:\n  searchpath: ['file://{CONF_DATA.parent}']\n"
        "data_dir: /data\npaths:\n  cache_dir: /c\n"
    )
    with initialize_config_dir(str(tmp_path), version_base="1.3"):
        cfg = compose("main", overrides=["data.batch_size=3"])
    assert cfg.data._target_.endswith("AudioFolderDataModule")
    assert cfg.data.root == "/data/fsdd" and cfg.data.batch_size == 3
    assert cfg.data.test_pattern == r"_[0-4]\.wav$" and cfg.data.cache_dir == "/c"


# --------------------------------------------------------------------------------------------
# Manifest, cache, windows on a generated tree
# --------------------------------------------------------------------------------------------


def test_manifest_fields_and_multichannel_resampling(libri_tree, tmp_path):
    dm = libri(libri_tree, tmp_path / "cache", window=16000, test_fraction=0.25)
    recs = {r.uid: r for r in dm.items("train") + dm.items("test")}
    assert len(recs) == 14 and dm.speakers == ["11", "22", "33", "44"]
    assert len(dm.items("test")) == round(14 * 0.25)
    st = recs["44-200-0000"]
    assert (st.channels, st.file_sample_rate, st.num_samples) == (2, 8000, 16000)
    wav = dm.load(st)
    assert wav.shape == (16000,) and wav.dtype == torch.float32
    # mono mix of (x/2, x): its level is 3/4 of channel 2
    data, _ = sf.read(st.path, dtype="float32")
    assert abs(wav.abs().max().item() - 0.75 * np.abs(data[:, 1]).max()) < 0.05
    assert recs["11-100-0000"].speaker == "11" and recs["11-100-0000"].phones is not None
    assert recs["33-100-0000"].phones is None and recs["33-100-0000"].speaker_index == 2
    assert dm.stats["label_ids_without_audio"] == 1
    cached = list((tmp_path / "cache").glob("manifest-*.json"))
    assert len(cached) == 1 and '"phones_present": true' in cached[0].read_text()
    # the 8 kHz file was resampled once into the cache; it serves the same samples
    assert dm.reader.pack_path is not None and dm.reader.pack_path.exists()
    fresh = AudioReader(16000, memory_cache_mb=0)
    assert torch.equal(wav, fresh.load(st))
    assert torch.equal(dm.reader.window(st, 160, 800), fresh.load(st)[160:960])


def test_manifest_cache_reuse_and_invalidation(libri_tree, tmp_path, monkeypatch):
    layout = LibriSpeechLayout()
    calls = []
    real_info = probe.sf.info
    monkeypatch.setattr(probe.sf, "info", lambda p: calls.append(os.fsdecode(p)) or real_info(p))
    first = build_manifest(layout, libri_tree, 16000, tmp_path, write=True)
    assert first.probed == 14 and len(calls) == 14
    calls.clear()
    second = build_manifest(layout, libri_tree, 16000, tmp_path, write=True)
    assert second.from_cache and second.probed == 0 and calls == []
    assert [r.to_json() for r in second.records] == [r.to_json() for r in first.records]
    changed = libri_tree / "train-clean-100" / "22" / "100" / "22-100-0003.flac"
    write_tone(changed, 1.0, seed=42)
    os.utime(changed, ns=(1, 1))  # new size and mtime
    third = build_manifest(layout, libri_tree, 16000, tmp_path, write=True)
    assert third.probed == 1 and calls == [str(changed)]
    assert {r.uid: r.num_samples for r in third.records}["22-100-0003"] == 16000
    # another config is another cache entry
    calls.clear()
    other = LibriSpeechLayout(split=SplitRule(seed=5))
    build_manifest(other, libri_tree, 16000, tmp_path, write=True)
    assert len(calls) == 14


def test_short_utterances_pad_or_skip(libri_tree, tmp_path):
    pad = libri(libri_tree, tmp_path, window=27200, test_fraction=0.0)
    assert pad.stats["short_padded"] == 5  # the three 1.5 s files and the two 44-* files
    i = next(i for i, r in enumerate(pad.train_set.records) if r.uid == "44-200-0001")
    item = pad.train_set[i]
    assert item["mask"].sum() == 8000 and item["mask"][:8000].all()
    assert (item["x"][0, 8000:] == 0).all()
    assert (item["phones"] == -100).all()
    j = next(i for i, r in enumerate(pad.train_set.records) if r.uid == "11-100-0000")
    ph = pad.train_set[j]["phones"]
    frames = expected_phone_frames(24000)
    assert (ph[:frames] >= 0).all() and (ph[frames:] == -100).all()
    skip = libri(libri_tree, tmp_path, window=27200, test_fraction=0.0, short="skip")
    assert skip.stats["short_skipped"] == 5 and len(skip.train_set) == 14 - 5
    assert all(r.num_samples >= 27200 for r in skip.train_set.records)
    assert len(skip.items("train")) == 14  # evaluation still sees every utterance


def test_windows_reseed_per_epoch_and_validation_is_fixed(libri_tree, tmp_path):
    dm = libri(libri_tree, tmp_path, window=3200, windows_per_utterance=2, test_fraction=0.25)
    ds = dm.train_set
    assert len(ds) == 2 * len(dm.items("train"))
    e0 = [ds.start_of(i) for i in range(len(ds))]
    ds.set_epoch(1)
    e1 = [ds.start_of(i) for i in range(len(ds))]
    assert e0 != e1 and all(s % 160 == 0 for s in e0 + e1)
    ds.set_epoch(0)
    assert [ds.start_of(i) for i in range(len(ds))] == e0
    val = dm.val_set
    before = [val.start_of(i) for i in range(len(val))]
    val.set_epoch(5)
    assert [val.start_of(i) for i in range(len(val))] == before


def test_worker_processes_follow_set_epoch(libri_tree, tmp_path):
    dm = libri(libri_tree, tmp_path, window=3200, batch_size=4, num_workers=2, test_fraction=0.0)
    loader = dm.train_dataloader()
    assert loader.persistent_workers

    def epoch(e):
        _set_sampler_epoch(loader, e)  # what Lightning's fit loop calls
        assert loader.batch_sampler.epoch == e
        return torch.cat([b["x"] for b in loader])

    a, b, a2 = epoch(0), epoch(1), epoch(0)
    check_batch(next(iter(loader)), 3200)
    assert torch.equal(a, a2) and not torch.equal(a, b)


def test_speaker_samplers_in_the_datamodule(libri_tree, tmp_path):
    dm = libri(
        libri_tree,
        tmp_path,
        window=3200,
        sampler="speaker_groups",
        speakers_per_batch=2,
        windows_per_speaker=2,
        test_fraction=0.0,
    )
    assert dm.batch_size == 4 and dm.sampler_name == "speaker_groups" and dm.handles_distributed
    for b in dm.train_dataloader():
        check_batch(b, 3200)
        spk = b["speaker"].tolist()
        assert len(set(spk)) == 2 and all(spk.count(s) == 2 for s in spk)
    dm = libri(libri_tree, tmp_path, window=3200, sampler="same_speaker", batch_size=3)
    assert all(len(set(b["speaker"].tolist())) == 1 for b in dm.train_dataloader())


# --------------------------------------------------------------------------------------------
# Augmentation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_augmentation_shape_finite_deterministic(name):
    x = torch.sin(torch.arange(8000) / 8.0) * 0.5
    aug = build_augment([name])

    def run(seed):
        return aug(x.clone(), torch.Generator().manual_seed(seed))

    y = run(1)
    assert y.shape == x.shape and y.dtype == torch.float32 and torch.isfinite(y).all()
    assert torch.equal(y, run(1))
    assert not torch.equal(y, x) or not torch.equal(run(2), x)


def test_augmented_windows_are_seeded_per_epoch_and_index(libri_tree, tmp_path):
    dm = libri(
        libri_tree,
        tmp_path,
        window=3200,
        augment=["noise", "reverb", "time_mask"],
        augment_params={"noise": {"snr_db": [10, 10]}},
        test_fraction=0.0,
    )
    ds = dm.train_set
    a = ds[0]["x"]
    assert torch.equal(a, ds[0]["x"])
    ds.set_epoch(1)
    assert not torch.equal(a, ds[0]["x"])
    with pytest.raises(ValueError, match="unknown augmentation"):
        build_augment(["echo"])


# --------------------------------------------------------------------------------------------
# Bad input: one clear error (or one warning) naming the path
# --------------------------------------------------------------------------------------------


def test_missing_root_is_named(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        libri(missing, tmp_path)


def test_root_without_the_layout_names_it(tmp_path):
    write_tone(tmp_path / "data" / "a.flac", 0.2)  # flac, but not <subset>/<spk>/<chap>/
    with pytest.raises(FileNotFoundError, match=r"no audio found under .*<speaker>-<chapter>"):
        libri(tmp_path / "data", tmp_path / "cache")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty.*wav,flac,ogg"):
        AudioFolderDataModule(root=str(tmp_path / "empty"), cache_dir=str(tmp_path)).setup()


def test_corrupt_file_is_skipped_with_one_warning(libri_tree, tmp_path):
    bad = libri_tree / "train-clean-100" / "33" / "100" / "33-100-0001.flac"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])  # truncated
    junk = libri_tree / "train-clean-100" / "33" / "100" / "33-100-0002.flac"
    junk.write_bytes(b"not audio at all")
    with pytest.warns(AudioDataWarning) as rec:
        dm = LibriSpeechDataModule(root=str(libri_tree), cache_dir=str(tmp_path), window=3200)
        dm.prepare_data()
        dm.setup()
    named = [str(w.message) for w in rec if "unreadable" in str(w.message)]
    assert len(named) == 2 and any(str(bad) in m for m in named)
    assert any(str(junk) in m for m in named)
    assert dm.stats["corrupt"] == 2 and dm.stats["utterances"] == 12
    check_batch(next(iter(dm.train_dataloader())), 3200)


def test_phone_frame_mismatch_names_the_utterance(libri_tree, tmp_path):
    f = libri_tree / "converted_aligned_phones.txt"
    f.write_text(f.read_text().replace("22-100-0001 0 1 2 ", "22-100-0001 "))
    with pytest.raises(ValueError, match=r"22-100-0001 have 165 frames .* gives 168"):
        libri(libri_tree, tmp_path)


def test_pattern_errors(tmp_path):
    for name in ("x_a.wav", "y_b.wav"):
        write_tone(tmp_path / "d" / name, 0.2)
    kw = {"root": str(tmp_path / "d"), "cache_dir": str(tmp_path / "c"), "window": 1600}
    with pytest.raises(ValueError, match="no named group 'label' or 'speaker'"):
        AudioFolderDataModule(pattern=r"(\w)_", **kw).setup()
    with pytest.raises(ValueError, match=r"matches 0 of 2"):
        AudioFolderDataModule(test_pattern="zzz", **kw).setup()
    with pytest.raises(ValueError, match=r"matches 2 of 2"):
        AudioFolderDataModule(test_pattern=r"\.wav", **kw).setup()
    with pytest.raises(ValueError, match="needs a speaker"):
        AudioFolderDataModule(pattern=r"(?P<label>\w)_", sampler="same_speaker", **kw).setup()
    dm = AudioFolderDataModule(pattern=r"(?P<label>\w)_(?P<speaker>\w)", test_pattern="y_", **kw)
    dm.setup()
    assert dm.classes == ["x", "y"] and dm.speakers == ["a", "b"]


# --------------------------------------------------------------------------------------------
# Synthetic corpus (another module's generator, read as LibriSpeech)
# --------------------------------------------------------------------------------------------


def test_synthetic_speech_datamodule(tmp_path):
    cfg = compose_preset("synthetic_speech", tmp_path, tmp_path)
    cfg.synthetic.update(num_speakers=2, utterances_per_speaker=3, min_seconds=1.5, max_seconds=2.0)
    dm = hydra.utils.instantiate(cfg, window=8000, batch_size=2)
    dm.prepare_data()
    dm.setup()
    assert len(dm.speakers) == 2 and dm.num_phones == cfg.synthetic.num_phones
    assert all(r.phones is not None for r in dm.items("train"))
    check_batch(next(iter(dm.train_dataloader())), 8000)
