"""``python -m cpc_lightning.extract run_dir=<dir> out=<folder> [data=...] [format=npy|pt]``.

Rebuilds a trained audio model from its run dir and writes its frozen features for other tools:
one file per input audio file, at the input's path relative to ``data.root`` with the suffix
``.npy`` (float32 ``(T, D)``) or ``.pt``, plus ``features.json`` (frame rate, feature kind,
dimension, model). Frame ``t`` covers samples ``[hop t, hop t + hop)`` with ``hop`` the encoder's
downsampling (160 samples = 10 ms at 16 kHz).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from cpc_lightning.builder import UserError, user_errors
from cpc_lightning.probe import (
    EvalSettings,
    data_config,
    device_of,
    frame_features,
    is_image_data,
    length_batches,
    load_run,
    weights_tag,
)

log = logging.getLogger("cpc_lightning.extract")


def extract(cfg: DictConfig) -> dict[str, Any]:
    """Write one feature file per input file and ``features.json``; return that summary."""
    if not cfg.get("out"):
        raise UserError("out=<folder> is required (where the feature files go)")
    if cfg.format not in ("npy", "pt"):
        raise UserError(f"format={cfg.format} must be npy or pt")
    if cfg.split not in ("all", "train", "test"):
        raise UserError(f"split={cfg.split} must be all, train or test")
    run_dir, ckpt, run_cfg, model = load_run(cfg)
    with user_errors("data"):
        datamodule = instantiate(data_config(cfg, run_cfg))
        datamodule.prepare_data()
        datamodule.setup("fit")
    if is_image_data(datamodule):
        raise UserError("extract writes per-file audio features; this is an image dataset")
    with user_errors("settings"):
        settings = EvalSettings.from_mapping(
            {"feature": cfg.feature, "layer": cfg.layer, "precision": cfg.precision}
        )
    out = Path(cfg.out).expanduser().resolve()
    root = Path(datamodule.root).resolve()
    splits = ["train", "test"] if cfg.split == "all" else [cfg.split]
    records = [r for s in splits for r in datamodule.items(s)]
    device = device_of(cfg.device)
    enc, ctx = model.encoder.to(device).eval(), model.context.to(device).eval()
    autocast = settings.precision == "bf16" and device.type == "cuda"
    hop = int(getattr(enc, "downsampling", 160))
    rate = datamodule.sample_rate / hop
    start = time.perf_counter()
    files: list[str] = []
    dim = 0
    with torch.no_grad():
        for idx, wav in length_batches(records, datamodule.load, int(cfg.batch_size)):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                feats = frame_features(enc, ctx, wav.to(device), settings.feature, settings.layer)
            feats = feats.float().cpu()
            dim = int(feats.shape[-1])
            for j, i in enumerate(idx):
                rel = (
                    Path(records[i].path).resolve().relative_to(root).with_suffix("." + cfg.format)
                )
                dest = out / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                if cfg.format == "npy":
                    np.save(dest, feats[j].numpy())
                else:
                    torch.save(feats[j].clone(), dest)
                files.append(str(rel))
    summary = {
        "frame_rate_hz": rate,
        "hop_samples": hop,
        "sample_rate": int(datamodule.sample_rate),
        "alignment": f"frame t covers samples [{hop} t, {hop} t + {hop}) of the input",
        "feature": settings.feature,
        "layer": settings.layer,
        "dim": dim,
        "format": cfg.format,
        "dtype": "float32",
        "shape": "(T, dim) per file",
        "num_files": len(files),
        "split": cfg.split,
        "data_root": str(root),
        "model": {
            "run_dir": str(run_dir),
            "checkpoint": str(ckpt),
            "checkpoint_tag": weights_tag(ckpt),
            "encoder": run_cfg.encoder.get("_target_"),
            "context": run_cfg.context.get("_target_"),
            "encoder_out_dim": run_cfg.encoder.get("out_dim"),
            "context_out_dim": run_cfg.context.get("out_dim"),
        },
        "seconds": time.perf_counter() - start,
        "files": sorted(files),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "features.json").write_text(json.dumps(summary, indent=2))
    log.info(
        "wrote %d feature files (%s, %d-d, %.0f Hz) to %s", len(files), cfg.format, dim, rate, out
    )
    print(f"{len(files)} feature files ({settings.feature}, {dim}-d, {rate:g} Hz) in {out}")
    return summary


@hydra.main(config_path="conf", config_name="extract", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    try:
        extract(cfg)
    except UserError as exc:
        print(f"cpc_lightning.extract: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
