"""The printed report of ``image_step.py``: what was matched, the table, the verdicts."""

from __future__ import annotations

import argparse
import statistics

import torch
from image_step_bolts import (
    BOLTS_EXPANSION,
    BOLTS_PLANES,
    PIXELCNN_BLOCKS,
    PIXELCNN_HIDDEN,
    TARGET_DIM,
)

from cpc_lightning.training.environment import native_bf16_cpu


def describe_match(args: argparse.Namespace, available: dict[str, bool], z: int) -> list[str]:
    """What the two sides share and where they differ (printed with the results)."""
    ours = [f"{w}->{e * w}" for w, e in zip(args.our_widths, args.our_expansion, strict=True)]
    theirs = [f"{p}->{p * e}" for p, e in zip(BOLTS_PLANES, BOLTS_EXPANSION, strict=True)]
    same = [i + 1 for i in range(4) if ours[i] == theirs[i]]
    differ = [i + 1 for i in range(4) if ours[i] != theirs[i]]
    g = args.grid
    loss = ", ".join(
        text
        for key, text in (
            ("all_anchors", "every anchor whose target exists"),
            ("num_negatives_all", "every other position of the batch a negative"),
        )
        if available[key]
    )
    widths = f"ours {ours}, bolts {theirs}" + (f" (differ in stages {differ})" if differ else "")
    out = theirs[-1].split("->")[1]
    return [
        "matched: the batch (same tensor), stem 7x7/2 conv (64) + 3x3/2 max-pool, bottleneck "
        f"blocks per stage {args.layers}, stride 2 in stages 2-4, stage widths (inner->out) "
        f"equal in stages {same or 'none'}, per-sample LayerNorm statistics over (C, H, W), a "
        f"{PIXELCNN_BLOCKS}-block PixelCNN-style context of width {PIXELCNN_HIDDEN} on the "
        f"encoder output (ours: z = {z}-d; bolts: the {out}-d map), one direction (down), rows "
        f"i+2..i+{g - 1} predicted from row i, {loss or 'our loss defaults'}, Adam, no scheduler",
        f"stage widths (inner->out): {widths}",
        "differs: pre-activation blocks with GroupNorm(1, C) (bolts: post-activation LayerNorm "
        "with a per-(C, H, W) affine), our final norm + ReLU + mean pool (bolts: 1x1 spatial "
        f"map); we score in z ({z}-d), bolts in {TARGET_DIM}-d targets (a 1x1 conv of the map); "
        "our context has 2x3 row-causal kernels and per-position LayerNorm, theirs 1x3 + 2x1 "
        "kernels; ours has one W_k per step, theirs one 1x1 prediction conv shared by all steps "
        f"(x0.1); their CPCTask scores offset i+1 once per i' <= i ({(g - 2) * (g - 1) // 2} "
        f"score matmuls for {g - 2} offsets, plus {g - 1} empty ones) and sums the losses, ours "
        "scores each step once and averages; Adam lr/betas/decay of their configure_optimizers "
        "vs our config's; ours runs convolutions whose output or kernel is 1x1 as exact matrix "
        "products (same sums, fewer FLOPs executed: the taps on zero padding are skipped)",
    ]


def print_setup(
    args: argparse.Namespace, device: torch.device, r: dict, available: dict, z: int
) -> None:
    """What was run and matched: setup, sides, FLOPs (as convolutions and executed)."""
    g, b = args.grid, args.batch
    native = (native_bf16_cpu() or "none") if device.type == "cpu" else torch.cuda.get_device_name()
    print(
        f"# cpc_lightning image step benchmark: torch {torch.__version__}, {args.threads} "
        f"threads, device {device.type} ({'CPU native bf16: ' if device.type == 'cpu' else ''}"
        f"{native})"
    )
    print(
        f"batch: {b} images as a {g}x{g} grid of 3x{args.patch}x{args.patch} patches "
        f"({b * g * g} patches per step), synthetic N(0, 1)"
    )
    for n, s in r["sides"].items():
        params = sum(p.numel() for p in s.model.parameters())
        print(f"{n:<5}: {s.description}")
        print(
            f"       {params / 1e6:.2f} M parameters, {r['work'][n] / 1e9:.2f} GFLOP per forward + "
            f"backward as convolutions ({r['executed'][n] / 1e9:.2f} GFLOP executed; "
            "torch.utils.flop_counter: matmuls and convolutions)"
        )
    if "bolts" in r["sides"]:
        for line in describe_match(args, available, z):
            print(line)
        work = r["work"]["bolts"] / r["work"]["ours"]
        print(f"work ratio bolts / ours (FLOPs of the convolutions and matmuls): x{work:.3f}")
    print(
        f"step time: median of {args.steps} timed steps per side and precision, interleaved "
        f"(one step of each in turn), after {args.warmup} warm-up steps of each"
    )
    if r["memory"]:
        how = (
            "max_memory_allocated above the allocated model and batch"
            if device.type == "cuda"
            else "peak resident set size (VmHWM) above the resident size with model and batch built"
        )
        print(f"peak memory: a fresh process per side and precision, two steps; {how} "
              "(gradients, Adam state, activations)")  # fmt: skip


def print_table(args: argparse.Namespace, r: dict) -> list[tuple[str, float, bool | None]]:
    """The timing table; returns (precision, speed x, memory ok) per precision with bolts."""
    names, times, memory = list(r["sides"]), r["times"], r["memory"]
    others = [n for n in names if n != "ours"]
    header = f"  {'precision':<11} {'ours s/step':>12} {'ours MiB':>9}"
    for n in others:
        header += f" {n + ' s/step':>13} {n + ' MiB':>10} {'speed x':>8} {'memory x':>9}"
    print(header)
    verdicts = []
    for p in args.precisions:
        ours_t = statistics.median(times[("ours", p)])
        row = f"  {p:<11} {ours_t:12.3f} {_mib(memory, 'ours', p):>9}"
        for n in others:
            t = statistics.median(times[(n, p)])
            mem, mem_ok = "", None
            if memory:
                mem = f"x{memory[(n, p)][0] / max(memory[('ours', p)][0], 1e-9):.2f}"
                mem_ok = memory[("ours", p)][0] <= memory[(n, p)][0]
            if n == "bolts":
                verdicts.append((p, t / ours_t, mem_ok))
            row += f" {t:13.3f} {_mib(memory, n, p):>10} {f'x{t / ours_t:.2f}':>8} {mem:>9}"
        print(row)
    for p in args.skipped:
        print(
            f"  {p:<11} skipped: trainer.precision=auto would not pick it here (no native bf16 "
            "on this CPU: its bf16 convolution backward is emulated); --precisions "
            "32-true,bf16-mixed forces it"
        )
    if others:
        print("  speed x = other s/step / ours s/step; memory x = other MiB / ours MiB")
    return verdicts


def print_verdicts(args: argparse.Namespace, r: dict, verdicts: list) -> None:
    if "bolts" not in r["sides"]:
        print(
            "lightning-bolts not given: add --bolts /path/to/lightning-bolts (or BOLTS_DIR=...) "
            "to time its CPC v2 step beside ours "
            "(git clone https://github.com/Lightning-Universe/lightning-bolts)"
        )
        return
    for p in args.precisions:
        rate = {n: r["work"][n] / statistics.median(r["times"][(n, p)]) / 1e9 for n in r["sides"]}
        print(
            f"  {p}: {rate['ours']:.1f} GFLOP/s ours, {rate['bolts']:.1f} bolts (convolution "
            f"FLOPs per second; ours / bolts: x{rate['ours'] / rate['bolts']:.2f})"
        )
    for p, speed, mem_ok in verdicts:
        if mem_ok is None:
            ok, mem_text = speed >= 2, "memory not measured"
        else:
            ok, mem_text = speed >= 2 and mem_ok, f"{'no more' if mem_ok else 'more'} memory"
        print(
            f"goal (>= 2x their speed at no more memory, equal work), {p}: "
            f"{'holds' if ok else 'does not hold'} (x{speed:.2f}, {mem_text})"
        )


def print_profile(args: argparse.Namespace, device: torch.device, r: dict) -> None:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    for p in args.precisions:
        with profile(activities=activities) as prof:
            r["steps"][("ours", p)]()
        print(f"profiler, one of our {p} steps, top ops by self time:")
        print(prof.key_averages().table(sort_by=sort, row_limit=12))


def _mib(memory: dict, name: str, precision: str) -> str:
    return f"{memory[(name, precision)][0]:.0f}" if memory else "-"
