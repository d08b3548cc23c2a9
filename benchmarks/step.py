"""Training-step and InfoNCE benchmarks at the CPC paper's audio configuration.

Prints, all measured in this one run on this machine:
- the fp32 GEMM rate (GFLOP/s) as a yardstick,
- one full training step (batch 8 x 20480 samples, 512 channels, GRU 256, K = 12, N = 128,
  Adam): median seconds per step and audio-seconds per second, in ``32-true`` and under CPU
  bf16 autocast (``bf16-mixed``), passes interleaved, and the ratio,
- the InfoNCE alone, "score first, gather second" vs. a reference that gathers the negative
  vectors ``(M, N, D)`` before scoring: time and peak-memory ratios,
- the profiler's top operators of one step.

Usage: ``python benchmarks/step.py [--threads 2] [--repeats 3] [--passes 5] [--channels 512]``
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time

import torch

from cpc_lightning.model.context.sequence import GRUContext
from cpc_lightning.model.encoders.audio import Conv1dEncoder
from cpc_lightning.model.heads import PredictionHeads
from cpc_lightning.model.infonce import info_nce
from cpc_lightning.model.module import CPCModule
from cpc_lightning.model.negatives import NegativeSampler
from cpc_lightning.training.environment import native_bf16_cpu


def gemm_rate(n: int = 2048, repeats: int = 5) -> float:
    """fp32 matmul GFLOP/s on an n x n problem."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def paper_model(channels: int, k: int = 12, n: int = 128) -> CPCModule:
    enc = Conv1dEncoder(hidden_dim=channels, out_dim=channels, norm="layer")
    return CPCModule(
        enc,
        GRUContext(channels, 256),
        PredictionHeads(256, channels, k),
        NegativeSampler("batch", n),
        prediction_steps=k,
    )


def make_step(model: CPCModule, batch: dict, bf16: bool = False):
    """One optimiser step as Lightning runs it (``bf16``: under CPU bf16 autocast, as
    ``trainer.precision=bf16-mixed`` does; parameters and Adam stay fp32)."""
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model.compute_loss(batch)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    return step


def time_steps(step, repeats: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return times


def precision_passes(model: CPCModule, batch: dict, repeats: int, passes: int):
    """Seconds per step for 32-true and bf16-mixed, ``passes`` interleaved passes of each (the
    machine's load drifts: interleaving gives both the same conditions)."""
    steps = {"32-true": make_step(model, batch), "bf16-mixed": make_step(model, batch, True)}
    for step in steps.values():
        time_steps(step, 0, warmup=2)
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(passes):
        for name, step in steps.items():
            times[name] += time_steps(step, repeats, warmup=1)
    return times


def gather_vectors_reference(pred, cand, pos_idx, neg_idx):
    """The common slow way: gather (M, N, D) negative vectors, then score them."""
    k, m, _ = pred.shape
    pos = cand[pos_idx]  # (K, M, D)
    neg = cand[neg_idx[0]]  # (M, N, D), shared across k
    s_pos = (pred * pos).sum(-1, keepdim=True)  # (K, M, 1)
    s_neg = torch.einsum("kmd,mnd->kmn", pred, neg)
    logits = torch.cat([s_pos, s_neg], -1)
    return (torch.logsumexp(logits, -1) - logits[..., 0]).mean()


def infonce_case(batch: int, t: int, d: int, k: int, n: int):
    g = torch.Generator().manual_seed(0)
    ta = t - k
    # scaled so that scores have unit variance, as in training (huge random logits would make
    # the softmax gradients denormal floats, which slow every GEMM down and skew the ratio)
    pred = (torch.randn(k, batch * ta, d, generator=g) / d**0.5).requires_grad_()
    cand = torch.randn(batch * t, d, generator=g, requires_grad=True)
    seq = torch.arange(batch).repeat_interleave(ta)
    tt = torch.arange(ta).repeat(batch)
    pos = torch.stack([seq * t + tt + s for s in range(1, k + 1)])
    neg = torch.randint(0, batch * t, (1, batch * ta, n), generator=g)
    return pred, cand, pos, neg


def read_status_kib(field: str) -> int:
    """A ``/proc/self/status`` memory field in KiB (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> int:
    """Reset the process's peak resident set size (Linux ``clear_refs`` 5); return current RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return read_status_kib("VmRSS")


def _run_infonce(kind: str, args, queue) -> None:
    torch.set_num_threads(args.threads)
    pred, cand, pos, neg = infonce_case(args.batch, 128, args.channels, 12, 128)

    def once() -> None:
        if kind == "fast":
            loss = info_nce(pred, cand, pos, neg).loss
        else:
            loss = gather_vectors_reference(pred, cand, pos, neg)
        loss.backward()
        pred.grad = cand.grad = None

    base = reset_peak_rss()  # inputs allocated, nothing else
    once()
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        once()
        times.append(time.perf_counter() - t)
    peak = read_status_kib("VmHWM")
    queue.put((statistics.median(times), peak, base))


def infonce_in_subprocess(kind: str, args) -> tuple[float, float]:
    """Median seconds (forward + backward) and peak memory (MiB) above the inputs, in a fresh
    process: the peak resident set size during the calls minus the resident size before them."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_run_infonce, args=(kind, args, queue))
    proc.start()
    seconds, peak, base = queue.get()
    proc.join()
    return seconds, (peak - base) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--passes", type=int, default=5, help="interleaved fp32/bf16 passes")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--window", type=int, default=20480)
    parser.add_argument("--channels", type=int, default=512)
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    rate = gemm_rate()
    model = paper_model(args.channels)
    batch = {
        "x": torch.randn(args.batch, 1, args.window),
        "mask": torch.ones(args.batch, args.window, dtype=torch.bool),
    }
    by_precision = precision_passes(model, batch, args.repeats, args.passes)
    times = by_precision["32-true"]
    med = statistics.median(times)
    audio_s = args.batch * args.window / 16000
    flops = step_flops(args.channels, args.batch, args.window)

    print(f"# cpc_lightning benchmark: torch {torch.__version__}, {args.threads} threads")
    print(f"fp32 GEMM (2048^3)            : {rate:8.1f} GFLOP/s")
    print(
        f"train step (B={args.batch}, L={args.window}, C={args.channels}, GRU 256, K=12, N=128, "
        "Adam)"
    )
    print(
        f"  median seconds / step       : {med:8.3f}  (min {min(times):.3f}, max {max(times):.3f})"
    )
    print(f"  audio-seconds / second      : {audio_s / med:8.2f}")
    print(
        f"  model GFLOP / step (approx.): {flops / 1e9:8.1f} -> {flops / med / 1e9:.1f} GFLOP/s "
        f"= {100 * flops / med / 1e9 / rate:.0f} % of the GEMM rate"
    )
    bf16 = statistics.median(by_precision["bf16-mixed"])
    print(
        f"precision, same step, {args.passes} interleaved passes x {args.repeats} steps "
        f"(CPU native bf16: {native_bf16_cpu() or 'none'}):"
    )
    for name, ts in by_precision.items():
        m = statistics.median(ts)
        print(f"  {name:<12}: median {m:.3f} s/step, {audio_s / m:6.2f} audio-s/s")
    print(f"  bf16-mixed speed-up over 32-true: x{med / bf16:.2f}")

    fast_t, fast_m = infonce_in_subprocess("fast", args)
    ref_t, ref_m = infonce_in_subprocess("gather", args)
    print("InfoNCE alone, forward + backward (K=12, M=B*(T-K), N=128, D=C), fresh process each:")
    print(
        f"  score-first (ours)          : {1000 * fast_t:8.1f} ms   "
        f"peak extra memory {fast_m:7.0f} MiB"
    )
    print(
        f"  gather (M,N,D) then score   : {1000 * ref_t:8.1f} ms   "
        f"peak extra memory {ref_m:7.0f} MiB"
    )
    print(
        f"  ratio reference / ours      : time x{ref_t / fast_t:.2f}, "
        f"peak memory x{ref_m / max(fast_m, 1e-9):.2f}"
    )

    if not args.no_profile:
        from torch.profiler import ProfilerActivity, profile

        for name, bf in (("32-true", False), ("bf16-mixed", True)):
            one_step = make_step(model, batch, bf)
            one_step()  # Adam creates its state on the first step: profile a steady-state one
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                one_step()
            print(f"profiler, one {name} step, top ops by self CPU time:")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))


def step_flops(c: int, b: int, length: int) -> float:
    """Forward + backward FLOPs of the conv stack, GRU and InfoNCE scores (3x forward)."""
    enc = Conv1dEncoder(hidden_dim=c, out_dim=c)
    total, n, cin = 0.0, length, 1
    for k, s, p in zip(enc.kernels, enc.strides, enc.paddings, strict=True):
        n = (n + 2 * p - k) // s + 1
        total += 2 * n * cin * c * k
        cin = c
    t = n
    total += 2 * t * 3 * (c * 256 + 256 * 256)  # GRU gates
    total += 2 * 12 * (t - 12) * 256 * c  # heads
    scores = 2 * 12 * b * (t - 12) * b * t * c  # every anchor vs. all B*T candidates
    return 3 * (b * total + scores)


if __name__ == "__main__":
    main()
