"""Streaming shards: the same windows and labels as the file loader, DDP sharding, mid-epoch
resume of the loader state (the Lightning-level resume is in tests/training/test_resume.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from helpers import SHARED_DATA

pytest.importorskip("litdata", reason="litdata not installed: pip install -e '.[streaming]'")

from cpc_lightning.data.audio.datamodules import AudioFolderDataModule  # noqa: E402
from cpc_lightning.data.audio.shards import MANIFEST, write_shards  # noqa: E402
from cpc_lightning.data.audio.streaming import StreamingAudioDataModule  # noqa: E402
from cpc_lightning.errors import UserError  # noqa: E402

CORPUS = SHARED_DATA / "speechocean762_subset"
#: 4 speakers x 10 utterances (2-5 s, 16-bit FLAC at 16 kHz); the held-out split: 1 speaker.
PATTERN = r"(?P<speaker>00[0-2]\d)/\d{9}\.flac"
#: 3 s windows: the shorter utterances are padded, so masks are compared too.
COMMON = {"window": 48000, "batch_size": 4, "seed": 3, "drop_last": False}

pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"{CORPUS} absent")


def file_module(cache: Path, **kw) -> AudioFolderDataModule:
    dm = AudioFolderDataModule(
        root=str(CORPUS), pattern=PATTERN, num_test_speakers=1, cache_dir=str(cache),
        **{**COMMON, **kw},
    )  # fmt: skip
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shards")
    dm = file_module(root / "cache")
    write_shards(dm, str(root / "out"), num_workers=1, chunk_bytes="2MB", start_method="fork")
    return root


def stream_module(shards: Path, **kw) -> StreamingAudioDataModule:
    dm = StreamingAudioDataModule(root=str(shards / "out"), **{**COMMON, **kw})
    dm.setup("fit")
    return dm


def by_index(batches) -> dict[int, dict[str, torch.Tensor]]:
    out = {}
    for b in batches:
        for j, i in enumerate(b["index"].tolist()):
            assert i not in out, f"utterance {i} twice in one epoch"
            out[i] = {k: b[k][j] for k in ("x", "mask", "speaker", "label", "phones")}
    return out


def assert_same_windows(a, b) -> None:
    assert sorted(a) == sorted(b)
    for i in a:
        for key in a[i]:
            torch.testing.assert_close(a[i][key], b[i][key], rtol=0, atol=0, msg=f"{i} {key}")


def test_manifest_keeps_labels_split_and_counts(shards):
    manifest = json.loads((shards / "out" / MANIFEST).read_text())
    assert len(manifest["splits"]["train"]) == 30 and len(manifest["splits"]["test"]) == 10
    assert len(manifest["speakers"]) == 4 and manifest["sample_rate"] == 16000
    dm = stream_module(shards)
    assert dm.labels == ["speakers"] and dm.provides_speakers
    assert {r.speaker for r in dm.items("test")}.isdisjoint(r.speaker for r in dm.items("train"))


def test_streaming_gives_the_file_loaders_windows_and_labels(shards):
    files = file_module(shards / "cache")
    stream = stream_module(shards)
    loader = stream.train_dataloader()
    for epoch in range(2):  # litdata's epoch e+1 is the file loader's epoch e
        file_loader = files.train_dataloader()
        file_loader.batch_sampler.set_epoch(epoch)
        streamed = by_index(loader)
        assert_same_windows(by_index(file_loader), streamed)
        assert len(streamed) == 30
    assert_same_windows(by_index(files.val_dataloader()), by_index(stream.val_dataloader()))
    rec = stream.items("test")[3]
    ref = next(r for r in files.items("test") if r.uid == rec.uid)
    torch.testing.assert_close(stream.load(rec), files.load(ref), rtol=0, atol=0)


def test_loader_state_resumes_mid_epoch(shards):
    from litdata import StreamingDataLoader

    dm = stream_module(shards, drop_last=True, num_workers=2)  # the state of every worker
    full = [b["index"].tolist() for b in dm.train_dataloader()]
    first = dm.train_dataloader()
    head = []
    for b in first:
        head.append(b["index"].tolist())
        if len(head) == 3:
            break
    state = first.state_dict()
    resumed = dm.train_dataloader()
    assert isinstance(resumed, StreamingDataLoader)
    resumed.load_state_dict(state)
    tail = [b["index"].tolist() for b in resumed]
    assert head + tail == full and len(full) == 30 // 4


def _rank_indices(rank: int, world: int, shards: str, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        dm = StreamingAudioDataModule(root=shards, **{**COMMON, "drop_last": True})
        seen = [i for b in dm.train_dataloader() for i in b["index"].tolist()]
        Path(out, f"rank{rank}.json").write_text(json.dumps(seen))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow  # two spawned processes: ~30 s here
def test_two_gloo_ranks_get_disjoint_equal_shards(shards, tmp_path):
    port = 29500 + os.getpid() % 1000
    mp.spawn(_rank_indices, args=(2, str(shards / "out"), port, str(tmp_path)), nprocs=2)
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert len(seen[0]) == len(seen[1]) > 0  # equal batch counts: DDP never waits on a rank
    assert set(seen[0]).isdisjoint(seen[1])
    assert len(seen[0]) + len(seen[1]) >= 30 - 2 * 4  # at most one short batch per rank dropped


def test_streaming_refuses_what_shards_cannot_do(shards, tmp_path):
    with pytest.raises(UserError, match="windows_per_utterance=4"):
        StreamingAudioDataModule(root=str(shards / "out"), windows_per_utterance=4)
    with pytest.raises(UserError, match="data.sampler=speaker_groups"):
        StreamingAudioDataModule(root=str(shards / "out"), sampler="speaker_groups")
    with pytest.raises(UserError, match=f"no {MANIFEST}"):
        StreamingAudioDataModule(root=str(tmp_path)).setup()
    with pytest.raises(UserError, match="data.sample_rate=8000"):
        StreamingAudioDataModule(root=str(shards / "out"), sample_rate=8000).setup()
    with pytest.raises(UserError, match="short=skip"):
        StreamingAudioDataModule(root=str(shards / "out"), short="skip", window=48000).setup()
