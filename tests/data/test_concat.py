"""data=speech_mix: several corpora as one unlabelled pre-training corpus."""

from __future__ import annotations

from helpers import make_cfg
from hydra.utils import instantiate


def test_speech_mix_unions_the_parts_with_corpus_prefixed_speakers(shared_data, tmp_path):
    cfg = make_cfg(["data=speech_mix", f"data_dir={shared_data}"], tmp_path)
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup()
    parts = {"speechocean762": (1000, 250), "speech_commands": (360, 120), "fsdd": (2700, 300)}
    for name, (train, test) in parts.items():
        assert sum(r.uid.startswith(f"{name}/") for r in dm.items("train")) == train
        assert sum(r.uid.startswith(f"{name}/") for r in dm.items("test")) == test
    assert len(dm.speakers) == 125 + 12 + 6
    assert all("/" in s for s in dm.speakers) and dm.labels == ["speakers"]
    assert dm.num_phones == 0 and dm.classes == []
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (dm.batch_size, 1, dm.window) and (batch["phones"] < 0).all()
    # fsdd is 8 kHz: resampled once like in its own option
    fsdd = next(r for r in dm.items("train") if r.uid.startswith("fsdd/"))
    assert fsdd.file_sample_rate == 8000 and dm.load(fsdd).shape == (2 * fsdd.file_frames,)
