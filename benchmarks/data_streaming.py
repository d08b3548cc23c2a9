"""File-based FLAC vs litdata shards on the same corpus: audio-seconds per second per worker.

    python benchmarks/data_streaming.py [--data-dir ../shared/data] [--workers 1 2]

speechocean762_subset (1,250 16-bit FLAC files, 73 min at 16 kHz), 1.28 s windows, batches of
8. The file loader runs with ``memory_cache_mb=0`` (each window decoded from its FLAC file, as
for a corpus larger than memory); the shards are written once by ``write_shards`` (int16) into
a temp dir. Each loader runs two epochs; the second (workers started, page cache warm for both)
is reported, as audio-seconds of windows delivered per wall second, divided by the workers.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from cpc_lightning.data.audio.datamodules import AudioFolderDataModule
from cpc_lightning.data.audio.shards import write_shards
from cpc_lightning.data.audio.streaming import StreamingAudioDataModule

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
PATTERN = r"(?P<speaker>\d{4})/\d{9}\.flac"
WINDOW, BATCH = 20480, 8


def epoch_rates(dm, epochs: int = 2) -> list[float]:
    """Audio-seconds of windows per wall second, per epoch."""
    loader = dm.train_dataloader()
    rates = []
    for e in range(epochs):
        if hasattr(loader, "batch_sampler") and hasattr(loader.batch_sampler, "set_epoch"):
            loader.batch_sampler.set_epoch(e)
        t, n = time.perf_counter(), 0
        for batch in loader:
            n += batch["x"].shape[0]
        rates.append(n * WINDOW / dm.sample_rate / (time.perf_counter() - t))
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    corpus = (args.data_dir / "speechocean762_subset").resolve()
    if not corpus.is_dir():
        print(f"{corpus} absent; skipping the streaming figures")
        return
    with tempfile.TemporaryDirectory() as tmp:

        def files(w: int) -> AudioFolderDataModule:
            dm = AudioFolderDataModule(
                root=str(corpus), pattern=PATTERN, num_test_speakers=10, window=WINDOW,
                batch_size=BATCH, num_workers=w, memory_cache_mb=0, cache_dir=f"{tmp}/cache",
            )  # fmt: skip
            dm.prepare_data()
            dm.setup()
            return dm

        t = time.perf_counter()
        write_shards(files(0), f"{tmp}/shards", num_workers=2)
        written = time.perf_counter() - t
        print(f"# file-based FLAC vs litdata shards, {corpus.name}, L={WINDOW}, B={BATCH}")
        print(f"shards written (decode once, int16, 2 writer processes): {written:.1f} s")
        print("| loader | workers | epoch 1 audio-s/s | epoch 2 audio-s/s | per worker |")
        print("|---|---|---|---|---|")
        for w in args.workers:
            for name, dm in (
                ("files (FLAC)", files(w)),
                ("shards", StreamingAudioDataModule(f"{tmp}/shards", window=WINDOW,
                                                    batch_size=BATCH, num_workers=w)),
            ):  # fmt: skip
                dm.setup()
                r = epoch_rates(dm)
                print(f"| {name} | {w} | {r[0]:,.0f} | {r[1]:,.0f} | {r[1] / w:,.0f} |")


if __name__ == "__main__":
    main()
