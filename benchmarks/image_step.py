"""Image training step: our CPC image model against lightning-bolts' CPC v2, at equal work.

Times one training step (forward, InfoNCE, backward, Adam step) on the same synthetic patch-grid
batch ``(B, G, G, 3, P, P)``, in ``32-true`` and ``bf16-mixed`` (bf16 autocast on the CPU, or on
CUDA when there is one; by default bf16 only where ``trainer.precision=auto`` would pick it), for

- ours: the ``CPCModule`` composed from the ``train`` config as a user composes it
  (``data=cifar10_patches`` selects ``encoder=resnet``, ``context=masked_conv``,
  ``model=cpc_images``), set to bolts' encoder architecture: by default the same bottleneck
  widths and expansions per stage (64/128/512/512, x4/x4/x8/x4, through ``encoder.expansion``),
  so both encoders have the same convolutions (printed), and
- theirs: lightning-bolts' CPC v2 encoder (``CPCResNet`` with ``LNBottleneck`` blocks) and loss
  (``CPCTask``: PixelCNN context, 1x1 target/prediction convs, every other position of the batch
  a negative), loaded from a bolts checkout (``--bolts`` or ``$BOLTS_DIR``; no bolts code lives
  in this repository: ``image_step_bolts.py`` imports it from the checkout).

The two are timed interleaved in one run (one step of each in turn per repetition, warm-up steps
excluded): median seconds per step, the ratio (their time / our time), the FLOPs each step does
(``torch.utils.flop_counter``; ours counted as plain convolutions, the architecture's work, and
as executed by our exact 1x1-map matmul paths), and the peak memory of each side in a fresh
process. ``--plain`` also times our model with those paths off. Without a bolts checkout it times
our side alone and says how to add theirs (``make bench`` runs it so).

Usage: ``python benchmarks/image_step.py [--bolts /path/to/lightning-bolts] [--threads 2]
[--steps 5] [--warmup 2] [--batch 4] [--grid 7] [--patch 8] [--layers 1,1,1,1]
[--our-widths 64,128,512,512] [--our-expansion 4,4,8,4] [--our-z-dim N] [--plain]
[--precisions auto|32-true,bf16-mixed] [--quick]``
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue as queue_module
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from image_step_bolts import (
    BOLTS_EXPANSION,
    BOLTS_PLANES,
    PIXELCNN_BLOCKS,
    PIXELCNN_HIDDEN,
    TARGET_DIM,
    BoltsCPC,
    bolts_adam,
    bolts_commit,
    load_bolts,
)
from image_step_report import print_profile, print_setup, print_table, print_verdicts
from step import read_status_kib  # benchmarks/step.py: the same /proc reader
from torch import nn

import cpc_lightning
from cpc_lightning.model import negatives
from cpc_lightning.model.encoders.patch import fast_paths
from cpc_lightning.training.environment import choose_precision

PRECISIONS = ("32-true", "bf16-mixed")
CONF_DIR = Path(cpc_lightning.__file__).resolve().parent / "conf"
#: Our default stage widths and expansions: bolts' (its stage 3 is 512 wide, expansion 8).
OUR_WIDTHS = BOLTS_PLANES
OUR_EXPANSION = BOLTS_EXPANSION


@dataclass
class Side:
    """One side of the comparison: a model, a batch, and its loss."""

    name: str
    model: nn.Module
    loss: Callable[[], torch.Tensor]
    make_optimizer: Callable[[], torch.optim.Optimizer]
    description: str


# ---------------------------------------------------------------------------------- ours
def our_overrides(args: argparse.Namespace, available: dict[str, bool]) -> list[str]:
    """Hydra overrides of the ``train`` config that give our image model bolts' shapes."""
    layers = ",".join(str(n) for n in args.layers)
    widths = ",".join(str(w) for w in args.our_widths)
    stride = args.patch // 2
    out = [
        "data=cifar10_patches",  # selects encoder=resnet, context=masked_conv, model=cpc_images
        f"data.batch_size={args.batch}",
        f"data.patch_size={args.patch}",
        f"data.stride={stride}",
        f"data.image_size={(args.grid - 1) * stride + args.patch}",
        "encoder.stem=standard",  # 7x7 stride-2 conv + 3x3 max-pool, as bolts
        "encoder.bottleneck=true",
        f"encoder.blocks=[{layers}]",
        f"encoder.widths=[{widths}]",
        f"encoder.expansion=[{','.join(map(str, args.our_expansion))}]",
        "encoder.norm=layer",
        f"encoder.out_dim={z_dim(args)}",  # z: the context's input, as bolts' encoder output
        f"context.hidden_dim={PIXELCNN_HIDDEN}",
        f"context.out_dim={PIXELCNN_HIDDEN}",
        f"context.num_layers={PIXELCNN_BLOCKS}",
        "context.kernel_size=3",
        f"model.prediction_steps={args.grid - 2}",  # rows i+2 .. i+G-1, as bolts' CPCTask
        "model.step_offset=1",
        "model.directions=[down]",
    ]
    if available["num_negatives_all"]:
        out.append("negatives.num_negatives=all")
    if available["all_anchors"]:
        out.append("model.all_anchors=true")
    return out


def z_dim(args: argparse.Namespace) -> int:
    """Our z width: ``--our-z-dim``, by default the encoder's output width (bolts' context runs on
    its 2048-d encoder output; a projection to 64-d z would leave our context 1/32 of the work)."""
    return args.our_z_dim or args.our_widths[-1] * args.our_expansion[-1]


def our_options() -> dict[str, bool]:
    """Which CPC v2 loss options this checkout's config has."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["data=cifar10_patches"])
    return {
        "all_anchors": "all_anchors" in cfg.model,
        "num_negatives_all": hasattr(negatives, "ALL"),
    }


def build_ours(args: argparse.Namespace, batch: torch.Tensor, device: torch.device) -> Side:
    """Our ``CPCModule`` from the composed ``train`` config, with its configured optimiser."""
    from hydra import compose, initialize_config_dir

    from cpc_lightning.build import build_model

    available = our_options()
    overrides = our_overrides(args, available)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    model = build_model(cfg).to(device)
    data = {"x": batch}
    missing = [k for k, ok in available.items() if not ok]
    note = f" (absent in this checkout, defaults used: {missing})" if missing else ""
    return Side(
        "ours",
        model,
        lambda: model.compute_loss(data).loss,
        lambda: model.optimizer_factory(model.parameters()),
        "train " + " ".join(overrides) + note,
    )


# ---------------------------------------------------------------------------------- bolts
def build_bolts(args: argparse.Namespace, batch: torch.Tensor, device: torch.device) -> Side:
    """Bolts' CPC v2 networks and loss, with the Adam settings of their ``configure_optimizers``."""
    root = Path(args.bolts)
    bolts, how = load_bolts(root)
    model = BoltsCPC(bolts, args.layers, batch.shape[3], args.patch).to(device)
    desc = (
        f"{root} @ {bolts_commit(root)} ({how}): CPCResNet(LNBottleneck, layers={args.layers}) "
        f"+ CPCTask(target_dim={TARGET_DIM}, embed_scale=0.1)"
    )
    return Side("bolts", model, lambda: model(batch), lambda: bolts_adam(model), desc)


# ---------------------------------------------------------------------------------- steps
def make_batch(args: argparse.Namespace, device: torch.device) -> torch.Tensor:
    """A synthetic standardised patch grid ``(B, G, G, 3, P, P)``."""
    g = torch.Generator().manual_seed(0)
    shape = (args.batch, args.grid, args.grid, 3, args.patch, args.patch)
    return torch.randn(shape, generator=g).to(device)


def build_side(name: str, args: argparse.Namespace, device: torch.device) -> Side:
    """``ours``, ``plain`` (ours, exact matmul paths off: plain convolutions) or ``bolts``."""
    torch.manual_seed(0)
    batch = make_batch(args, device)
    side = (build_bolts if name == "bolts" else build_ours)(args, batch, device)
    if name == "plain":
        fast_paths(side.model, False)
        side.name, side.description = "plain", "ours, matmul paths off (plain convolutions)"
    return side


def make_step(side: Side, precision: str, device: torch.device) -> Callable[[], None]:
    """One optimiser step as Lightning runs it (``bf16-mixed``: under bf16 autocast; parameters
    and Adam stay fp32). Its own optimiser, so both precisions time the same update."""
    opt = side.make_optimizer()
    bf16 = precision == "bf16-mixed"

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = side.loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step


def step_flops(side: Side, fast: bool = True) -> float:
    """FLOPs of one forward + backward (``torch.utils.flop_counter``: matmuls and convolutions);
    ``fast=False``: with our matmul paths off, i.e. every convolution counted as one."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    fast_paths(side.model, fast)
    try:
        with counter:
            side.loss().backward()
    finally:
        fast_paths(side.model, side.name != "plain")
    side.model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def interleaved_times(
    steps: dict[tuple[str, str], Callable[[], None]], repeats: int, warmup: int
) -> dict[tuple[str, str], list[float]]:
    """Seconds per step of each (side, precision): after ``warmup`` steps of each, ``repeats``
    rounds in which every step runs once in turn (the machine's load drifts: interleaving gives
    all of them the same conditions)."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[tuple[str, str], list[float]] = {k: [] for k in steps}
    for _ in range(repeats):
        for key, step in steps.items():
            t = time.perf_counter()
            step()
            times[key].append(time.perf_counter() - t)
    return times


# ---------------------------------------------------------------------------------- memory
def _memory_child(name: str, precision: str, args: argparse.Namespace, queue) -> None:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    side = build_side(name, args, device)
    step = make_step(side, precision, device)
    params = sum(p.numel() for p in side.model.parameters())
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        for _ in range(2):
            step()
        peak = torch.cuda.max_memory_allocated()
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak resident set size to the current one
        base = read_status_kib("VmRSS") * 1024
        for _ in range(2):
            step()
        peak = read_status_kib("VmHWM") * 1024
    queue.put(((peak - base) / 2**20, params))


def peak_memory(name: str, precision: str, args: argparse.Namespace) -> tuple[float, int]:
    """Peak memory (MiB) of two training steps above what the built model and batch hold, and
    the parameter count, in a fresh process. CPU: peak resident set size (``VmHWM``) minus the
    resident size before the steps; CUDA: ``max_memory_allocated`` minus ``memory_allocated``.
    Both include gradients, Adam's state (created by the first step) and saved activations."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_memory_child, args=(name, precision, args, queue))
    proc.start()
    while True:
        try:
            result = queue.get(timeout=5)
            break
        except queue_module.Empty:
            if not proc.is_alive():
                raise SystemExit(
                    f"the peak-memory process of {name}, {precision} failed (exit code "
                    f"{proc.exitcode}; its error is above); --no-memory skips it"
                ) from None
    proc.join()
    return result


# ---------------------------------------------------------------------------------- main
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--bolts", default=os.environ.get("BOLTS_DIR"),
        help="lightning-bolts checkout (default: $BOLTS_DIR; none: our side alone)")  # fmt: skip
    add("--threads", type=int, default=2)
    add("--steps", type=int, default=5, help="timed steps per side and precision")
    add("--warmup", type=int, default=2, help="untimed steps of each first")
    add("--batch", type=int, default=4, help="images per batch")
    add("--grid", type=int, default=7, help="patches per side (G)")
    add("--patch", type=int, default=8, help="patch side in pixels (P)")
    add("--layers", default="1,1,1,1", help="bottleneck blocks per stage, both sides (4 stages)")
    add("--our-widths", default=",".join(map(str, OUR_WIDTHS)),
        help="our inner bottleneck width per stage (default: bolts')")  # fmt: skip
    add("--our-expansion", default=",".join(map(str, OUR_EXPANSION)),
        help="our bottleneck output width / inner width per stage (default: bolts')")  # fmt: skip
    add("--our-z-dim", type=int, default=None,
        help="our z width (encoder.out_dim; default: the encoder's output width)")  # fmt: skip
    add("--plain", action="store_true",
        help="also time ours with the exact matmul paths off (plain convolutions)")  # fmt: skip
    add("--precisions", default="auto",
        help="comma-separated, or auto: 32-true, and bf16-mixed where trainer.precision=auto "
        "would pick it (native bf16 CPU, or a GPU with bf16)")  # fmt: skip
    add("--device", default="auto", help="auto (cuda if available) | cpu | cuda")
    add("--no-memory", action="store_true", help="skip the peak-memory processes")
    add("--no-profile", action="store_true", help="skip our step's profile")
    add("--quick", action="store_true",
        help="smoke run: batch 1, 2 steps, 1 warm-up, no memory processes, no profile")  # fmt: skip
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.steps, args.warmup = 1, min(args.steps, 2), 1
        args.no_memory = args.no_profile = True
    args.layers = [int(n) for n in args.layers.split(",")]
    args.our_widths = [int(w) for w in args.our_widths.split(",")]
    args.our_expansion = [int(e) for e in args.our_expansion.split(",")]
    if {len(args.layers), len(args.our_widths), len(args.our_expansion)} != {4}:
        parser.error("--layers, --our-widths, --our-expansion: 4 stages (bolts' CPCResNet has 4)")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.skipped = []
    if args.precisions == "auto":
        # the project's one rule (trainer.precision=auto): on a CPU without native bf16 the
        # convolutions' bf16 backward is emulated, tens of times slower than fp32
        auto = choose_precision("auto", args.device)
        args.precisions = list(PRECISIONS) if auto == "bf16-mixed" else ["32-true"]
        args.skipped = [] if auto == "bf16-mixed" else ["bf16-mixed"]
    else:
        args.precisions = [p for p in args.precisions.split(",") if p]
        if not set(args.precisions) <= set(PRECISIONS):
            parser.error(f"--precisions: choose from {PRECISIONS}")
    if args.grid < 7:
        parser.error("--grid must be >= 7: both sides predict 6 rows ahead")
    return args


def measure(args: argparse.Namespace, names: list[str], device: torch.device) -> dict:
    """Sides, FLOPs (as convolutions and as executed), interleaved times and peak memory."""
    sides = {n: build_side(n, args, device) for n in names}
    work = {n: step_flops(s, fast=False) for n, s in sides.items()}
    executed = {n: step_flops(s, fast=n != "plain") for n, s in sides.items()}
    steps = {(n, p): make_step(sides[n], p, device) for p in args.precisions for n in names}
    times = interleaved_times(steps, args.steps, args.warmup)
    memory = {}
    if not args.no_memory:
        memory = {(n, p): peak_memory(n, p, args) for n in names for p in args.precisions}
    return {"sides": sides, "work": work, "executed": executed, "steps": steps,
            "times": times, "memory": memory}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = ["ours"] + (["bolts"] if args.bolts else []) + (["plain"] if args.plain else [])
    r = measure(args, names, device)
    print_setup(args, device, r, our_options(), z_dim(args))
    verdicts = print_table(args, r)
    print_verdicts(args, r, verdicts)
    if not args.no_profile:
        print_profile(args, device, r)


if __name__ == "__main__":
    main()
