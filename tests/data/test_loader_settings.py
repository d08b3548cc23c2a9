"""Loader settings: one typed home for the audio loader keys, shared by the file and the streaming
DataModule; a key streaming does not implement is refused at start-up, never dropped."""

from __future__ import annotations

import inspect
from dataclasses import field, fields, make_dataclass

import pytest
import yaml
from helpers import CONF, make_cfg

from cpc_lightning.build import build_datamodule
from cpc_lightning.data.audio import settings
from cpc_lightning.data.audio.datamodules import AudioDataModule, AudioFolderDataModule
from cpc_lightning.data.audio.settings import (
    FILES_ONLY,
    SPEAKER_SAMPLER,
    STREAMED,
    STREAMING_TAGS,
    LoaderSettings,
    check_streaming,
    loader_key,
    loader_keys,
)
from cpc_lightning.data.audio.streaming import StreamingAudioDataModule
from cpc_lightning.errors import UserError

BASE_AUDIO = yaml.safe_load((CONF / "data" / "base" / "audio.yaml").read_text())


def test_every_loader_key_is_a_commented_base_audio_key_with_a_streaming_tag():
    assert set(loader_keys()) <= set(BASE_AUDIO)  # its comment: test_every_config_key_is_documented
    assert all(f.metadata.get("streaming") in STREAMING_TAGS for f in fields(LoaderSettings))


def test_every_base_audio_key_has_one_home():
    """A base key is a loader setting, a corpus key of AudioDataModule, or `streaming` (read by
    build.build_datamodule): none can be added where the streaming path would not see it."""
    corpus = set(inspect.signature(AudioDataModule.__init__).parameters) - {"self", "loader"}
    assert corpus.isdisjoint(loader_keys())
    assert set(BASE_AUDIO) == set(loader_keys()) | corpus


def test_settings_normalise_and_check_their_values():
    s = settings.loader_settings({"window": "3200", "drop_last": 0, "seed": 2.0})
    assert (s.window, s.drop_last, s.seed) == (3200, False, 2)
    assert s.cache_path.name == ".cache"
    with pytest.raises(ValueError, match="data.short must be 'pad' or 'skip'"):
        settings.loader_settings({"short": "crop"})
    with pytest.raises(TypeError, match="'windw'"):
        settings.loader_settings({"windw": 3200})


def test_streaming_refuses_what_only_the_file_loader_does(tmp_path):
    with pytest.raises(UserError, match="data.windows_per_utterance=4 with data.streaming=true"):
        StreamingAudioDataModule(root=str(tmp_path), windows_per_utterance=4)
    with pytest.raises(UserError, match="data.sampler=speaker_groups with data.streaming=true"):
        StreamingAudioDataModule(root=str(tmp_path), sampler="speaker_groups")
    # sizes of the speaker samplers are base/audio.yaml values: harmless with the uniform one
    dm = StreamingAudioDataModule(root=str(tmp_path), speakers_per_batch=4, windows_per_speaker=2)
    assert dm.settings.speakers_per_batch == 4


def test_an_untagged_key_is_refused_unless_at_its_default():
    untagged = make_dataclass(
        "S",
        [("extra", int, field(default=0)), ("listed", list, field(default_factory=list))],
        bases=(LoaderSettings,),
    )
    check_streaming(untagged())
    with pytest.raises(UserError, match="data.extra=3 with data.streaming=true"):
        check_streaming(untagged(extra=3))
    with pytest.raises(UserError, match=r"data.listed=\['a'\] with data.streaming=true"):
        check_streaming(untagged(listed=["a"]))


@pytest.mark.parametrize("tag", [STREAMED, FILES_ONLY, SPEAKER_SAMPLER])
def test_a_new_loader_key_reaches_both_datamodules_or_is_refused_under_streaming(
    tag, tmp_path, monkeypatch
):
    """Adding a loader key = a LoaderSettings field (plus its base/audio.yaml line and the code
    that reads it); build.build_datamodule and both DataModules then carry it unchanged."""
    extended = make_dataclass(
        "LoaderSettings", [("new_key", int, loader_key(0, streaming=tag))], bases=(LoaderSettings,)
    )
    monkeypatch.setattr(settings, "LoaderSettings", extended)
    root = tmp_path / "corpus"
    cfg = make_cfg(["data=audio_folder", f"data.root={root}", "+data.new_key=5"], tmp_path)
    files = build_datamodule(cfg.data)
    assert isinstance(files, AudioFolderDataModule) and files.settings.new_key == 5
    cfg.data.streaming = True
    if tag == FILES_ONLY:
        with pytest.raises(UserError, match="data.new_key=5 with data.streaming=true"):
            build_datamodule(cfg.data)
        cfg.data.new_key = 0  # its default: nothing to refuse
    shards = build_datamodule(cfg.data)
    assert isinstance(shards, StreamingAudioDataModule)
    assert shards.settings.new_key == cfg.data.new_key
    assert shards.settings.window == files.settings.window == cfg.data.window
