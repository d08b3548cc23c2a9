"""Training-step throughput of the paper audio config, bf16-mixed vs. 32-true, on one CUDA GPU.

Both precisions run in this one process on the same card, one after the other, through the
Lightning ``Trainer`` (forward, InfoNCE, backward, Adam step). The input is one fixed random batch
of waveforms, so data loading is not measured. Prints steps/s per precision and the ratio.

    python benchmarks/gpu_precision.py                       # 32-true vs bf16-mixed
    python benchmarks/gpu_precision.py --precisions 32-true bf16-mixed 16-mixed --steps 100

Without a CUDA GPU it exits with status 2 and says so (``--allow-cpu`` runs the same code on the
CPU as a smoke test: its numbers say nothing about GPUs).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import cpc_lightning

# The paper's audio setup (CPC, van den Oord et al. 2018): 512-channel strided conv encoder,
# GRU(256), 12 steps, 20480-sample windows, 8 windows per GPU, 128 negatives.
PAPER_AUDIO = [
    "encoder.hidden_dim=512",
    "context.out_dim=256",
    "data.window=20480",
    "data.batch_size=8",
    "model.prediction_steps=12",
    "negatives.num_negatives=128",
]


def paper_config(overrides: list[str]) -> Any:
    """The composed training config: ``experiment=cpc_audio_paper`` if present, else
    :data:`PAPER_AUDIO`, plus ``overrides``."""
    from hydra import compose, initialize_config_dir

    conf = Path(cpc_lightning.__file__).parent / "conf"
    base = (
        ["experiment=cpc_audio_paper"]
        if (conf / "experiment" / "cpc_audio_paper.yaml").is_file()
        else PAPER_AUDIO
    )
    with initialize_config_dir(str(conf), version_base="1.3"):
        return compose("train", overrides=[*base, *overrides])


def measure(cfg: Any, precision: str, steps: int, warmup: int, accelerator: str) -> float:
    """Mean training steps per second after ``warmup`` steps."""
    import pytorch_lightning as pl
    import torch
    from torch.utils.data import DataLoader, IterableDataset

    from cpc_lightning.build import build_model

    batch = {"x": torch.randn(int(cfg.data.batch_size), 1, int(cfg.data.window))}

    class Repeat(IterableDataset):
        def __iter__(self):
            while True:
                yield batch

    class Timer(pl.Callback):
        def __init__(self) -> None:
            self.start = 0.0
            self.seconds = 0.0

        def _sync(self) -> None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if trainer.global_step == warmup:
                self._sync()
                self.start = time.perf_counter()

        def on_train_end(self, trainer, pl_module) -> None:
            self._sync()
            self.seconds = time.perf_counter() - self.start

    pl.seed_everything(0, verbose=False)
    model = build_model(cfg)
    if cfg.model.get("compile", False):
        model.encoder = torch.compile(model.encoder)
        model.context = torch.compile(model.context)
    timer = Timer()
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        max_steps=warmup + steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(model, DataLoader(Repeat(), batch_size=None, pin_memory=accelerator == "gpu"))
    return steps / timer.seconds


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run each precision, print the table and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"])
    parser.add_argument("--steps", type=int, default=50, help="timed steps per precision")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    parser.add_argument(
        "--tf32", action="store_true", help="allow TF32 matmuls for 32-true (default: off)"
    )
    parser.add_argument("--allow-cpu", action="store_true", help="smoke test on the CPU")
    parser.add_argument("overrides", nargs="*", help="extra config overrides (key=value)")
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        if not args.allow_cpu:
            print(
                "gpu_precision: no CUDA GPU is available, so there is nothing to measure. Run "
                "this on a machine with one NVIDIA GPU (or pass --allow-cpu for a smoke test).",
                file=sys.stderr,
            )
            return 2
        accelerator, device = "cpu", "CPU (smoke test: not a GPU measurement)"
    else:
        accelerator, device = "gpu", torch.cuda.get_device_name(0)
    torch.set_float32_matmul_precision("high" if args.tf32 else "highest")

    cfg = paper_config(args.overrides)
    rates = {}
    for precision in args.precisions:
        rates[precision] = measure(cfg, precision, args.steps, args.warmup, accelerator)
    batch = int(cfg.data.batch_size)
    tf32 = "on" if args.tf32 else "off"
    print(
        f"\ndevice: {device}; batch {batch} x {cfg.data.window} samples; "
        f"K={cfg.model.prediction_steps}, N={cfg.negatives.num_negatives}; "
        f"{args.steps} timed steps after {args.warmup}; TF32 {tf32}"
    )
    print("| precision | steps/s | windows/s |\n|---|---|---|")
    for precision, rate in rates.items():
        print(f"| {precision} | {rate:.2f} | {rate * batch:.1f} |")
    base = rates.get("32-true")
    for precision, rate in rates.items():
        if base and precision != "32-true":
            print(f"{precision} / 32-true step throughput: {rate / base:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
