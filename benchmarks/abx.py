"""ABX throughput: the vectorised ``cpc_lightning.eval.abx`` vs. a per-triple Python reference.

Both score the same synthetic item set in this one run (CPC-sized frames, D = 256, utterance
files of 24 tokens of 4-14 frames, 2-10 tokens a cell, per-phone templates plus speaker shift
and noise), within and across speakers with the Libri-light triples and averaging. The
reference, ``cpc_lightning.eval.abx.reference.abx_reference`` (the one the tests use too),
loops over cells and triples and runs two plain DTWs (angular cost matrix, then a
cell-by-cell Python recursion with a back-tracked path length) for every triple; the
vectorised code computes each distinct token pair once, in batched anti-diagonal DTWs.

The scores may differ in the last digits: the reference works in float64 (upstream and the
vectorised code in float32), so a d(A, X) vs d(B, X) near-tie within a float32 ulp can flip.

Prints triples/s both ways (``torch.set_num_threads(2)``; ``abx`` by default runs its CPU ops
on one intra-op thread, and is also timed with ``num_threads=None``, i.e. on torch's two), the
ratio, and both scores.

Usage: ``python benchmarks/abx.py [--contexts 4] [--speakers 3] [--phones 4] [--cell 2 10]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from cpc_lightning.eval.abx import ABXResult, ItemSet, abx
from cpc_lightning.eval.abx.reference import abx_reference


def make_set(
    contexts: int,
    speakers: int,
    phones: int,
    cell_sizes: tuple[int, int],
    dim: int = 256,
    per_file: int = 24,
    seed: int = 0,
) -> tuple[dict[str, torch.Tensor], ItemSet]:
    """Utterance files of ``per_file`` tokens (one speaker each) at 100 Hz; ``cell_sizes``: the
    range of tokens per (context, speaker, phone) cell (upstream caps cells at 10 by default).
    A token on frames ``[a, b)`` gets onset ``a / 100`` and offset ``(b + 1) / 100``, which
    Libri-light's mapping reads back as exactly ``[a, b)``."""
    rng = np.random.default_rng(seed)
    temps = rng.standard_normal((phones, dim))
    shift = rng.standard_normal((speakers, dim))
    feats, items = {}, ItemSet()
    for s in range(speakers):
        tokens = [
            (c, p)
            for c in range(contexts)
            for p in range(phones)
            for _ in range(int(rng.integers(cell_sizes[0], cell_sizes[1] + 1)))
        ]
        rng.shuffle(tokens)
        for f in range(0, len(tokens), per_file):
            name, frames, t = f"s{s}u{f // per_file}", [], 0
            for c, p in tokens[f : f + per_file]:
                n = int(rng.integers(4, 15))
                frames.append(temps[p] + shift[s] + 6.0 * rng.standard_normal((n, dim)))
                items.append(name, t / 100, (t + n + 1) / 100, f"p{p}", f"l{c}", f"r{c}", f"s{s}")
                t += n
            feats[name] = torch.as_tensor(np.concatenate(frames), dtype=torch.float32)
    return feats, items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contexts", type=int, default=4)
    parser.add_argument("--speakers", type=int, default=3)
    parser.add_argument("--phones", type=int, default=4)
    parser.add_argument("--cell", type=int, nargs=2, default=(2, 10), metavar=("MIN", "MAX"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    feats, items = make_set(args.contexts, args.speakers, args.phones, tuple(args.cell))
    print(
        f"{len(items)} tokens of 4-14 frames in {len(feats)} files, D = 256: {args.contexts} "
        f"contexts x {args.speakers} speakers x {args.phones} phones, {args.cell[0]}-"
        f"{args.cell[1]} tokens a cell; torch.set_num_threads({args.threads})"
    )

    abx(feats, items.select(range(64)), frame_rate=100.0)  # warm-up

    def timed(**kwargs) -> tuple[float, ABXResult]:
        """Median wall time of 3 runs, and the result."""
        times = []
        for _ in range(3):
            t = time.perf_counter()
            res = abx(feats, items, frame_rate=100.0, **kwargs)
            times.append(time.perf_counter() - t)
        return statistics.median(times), res

    fast_s, res = timed()  # default: one intra-op thread during the call
    pool_s, pool = timed(num_threads=None)  # torch's threads (set above)
    fast_n = res.num_triples["within"] + res.num_triples["across"]
    assert pool.to_dict() == res.to_dict()

    t = time.perf_counter()
    ref = abx_reference(feats, items, frame_rate=100.0)
    ref_s = time.perf_counter() - t
    ref_n = ref.num_triples["within"] + ref.num_triples["across"]
    assert ref_n == fast_n, (ref_n, fast_n)

    print(f"triples: {res.num_triples} (distinct DTWs: {res.num_distances})")
    print(f"vectorised:            {fast_s:8.3f} s {fast_n / fast_s:10.0f} triples/s (median of 3)")
    print(f"  num_threads=None:    {pool_s:8.3f} s {fast_n / pool_s:10.0f} triples/s "
          f"({args.threads} intra-op threads)")  # fmt: skip
    print(f"reference (per triple): {ref_s:7.3f} s {ref_n / ref_s:10.0f} triples/s")
    print(f"ratio: {ref_s / fast_s:.1f}x (num_threads=None: {ref_s / pool_s:.1f}x)")
    print(f"within %: vectorised {res.within:.4f}  reference {ref.within:.4f}")
    print(f"across %: vectorised {res.across:.4f}  reference {ref.across:.4f}")


if __name__ == "__main__":
    main()
