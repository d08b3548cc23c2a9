"""Audio data throughput: loader windows/s (0 and 2 workers) and manifest build vs cached start.

    python benchmarks/data.py [--data-dir ../shared/data] [--files 5000] [--epochs 2]

Loader figures: the first row of a corpus pays the cold manifest build and (fsdd) the one-time
8 -> 16 kHz resampling into the cache in "prepare+setup"; epoch 1 includes worker start-up.
Manifest figures use a generated tree of tiny wav files in a temp dir.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from cpc_lightning.data.audio.datamodules import AudioFolderDataModule, LibriSpeechDataModule
from cpc_lightning.data.audio.layouts import FolderLayout
from cpc_lightning.data.audio.manifest import build_manifest

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def loader_rate(make, workers: int, epochs: int) -> tuple[float, list[float]]:
    """Seconds of prepare_data + setup, and windows per second for each epoch of the loader."""
    dm = make(workers)
    t = time.perf_counter()
    dm.prepare_data()
    dm.setup()
    prep = time.perf_counter() - t
    loader = dm.train_dataloader()
    rates = []
    for e in range(epochs):
        loader.batch_sampler.set_epoch(e)
        t, n = time.perf_counter(), 0
        for batch in loader:
            n += batch["x"].shape[0]
        rates.append(n / (time.perf_counter() - t))
    del loader
    return prep, rates


def make_tree(root: Path, n: int) -> None:
    """``n`` tiny 16 kHz wav files in ``spk<k>/<label>_<i>.wav``."""
    data = (np.random.default_rng(0).standard_normal(800) * 0.1).astype(np.float32)
    for i in range(n):
        d = root / f"spk{i % 50:02d}"
        d.mkdir(parents=True, exist_ok=True)
        sf.write(str(d / f"{i % 10}_{i}.wav"), data, 16000, subtype="PCM_16")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--files", type=int, default=5000, help="files in the generated tree")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = ap.parse_args()
    data = args.data_dir.resolve()

    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        rows = []
        corpora = {
            "fsdd (8k->16k, L=8000, B=16)": lambda w: AudioFolderDataModule(
                root=str(data / "fsdd"),
                pattern=r"(?P<label>\d)_(?P<speaker>[a-z]+)_\d+\.wav$",
                test_pattern=r"_[0-4]\.wav$",
                window=8000,
                batch_size=16,
                num_workers=w,
                cache_dir=str(cache),
            ),
            "librispeech_sample (L=20480, B=8, 64 win/utt)": lambda w: LibriSpeechDataModule(
                root=str(data / "librispeech_sample"),
                window=20480,
                windows_per_utterance=64,
                batch_size=8,
                num_workers=w,
                cache_dir=str(cache),
            ),
        }
        if not data.is_dir():
            print(f"shared data absent ({data}); skipping loader figures")
            corpora = {}
        for name, make in corpora.items():
            for w in args.workers:
                prep, rates = loader_rate(make, w, args.epochs)
                rows.append((name, w, prep, rates))
        if rows:
            head = " | ".join(f"epoch {e + 1} win/s" for e in range(args.epochs))
            print(f"| corpus | workers | prepare+setup s | {head} |")
            print("|---|---|---|" + "---|" * args.epochs)
            for name, w, prep, rates in rows:
                cells = " | ".join(f"{r:,.0f}" for r in rates)
                print(f"| {name} | {w} | {prep:.2f} | {cells} |")
            print()

        root = Path(tmp) / "tree"
        t = time.perf_counter()
        make_tree(root, args.files)
        gen = time.perf_counter() - t
        layout = FolderLayout(pattern=r"(?P<speaker>spk\d+)/")
        timings = []
        t = time.perf_counter()
        m = build_manifest(layout, root, 16000, cache, write=True)
        timings.append(("first build (probe every file, write cache)", time.perf_counter() - t, m))
        t = time.perf_counter()
        m = build_manifest(layout, root, 16000, cache, write=True)
        timings.append(("cached start (stat scan, read cache)", time.perf_counter() - t, m))
        t = time.perf_counter()
        m = build_manifest(layout, root, 16000, cache, write=False)
        timings.append(("cached start, read-only (setup)", time.perf_counter() - t, m))
        touched = next(root.glob("spk00/*.wav"))
        os.utime(touched, ns=(1, 1))
        t = time.perf_counter()
        m = build_manifest(layout, root, 16000, cache, write=True)
        timings.append(("one file touched (re-probe 1, rewrite)", time.perf_counter() - t, m))
        print(f"manifest of {args.files} files (tree written in {gen:.1f} s)")
        print("| step | seconds | files probed |")
        print("|---|---|---|")
        for name, sec, m in timings:
            print(f"| {name} | {sec:.3f} | {m.probed} |")
        print(f"speed-up cached vs first: {timings[0][1] / timings[1][1]:.0f}x")


if __name__ == "__main__":
    main()
