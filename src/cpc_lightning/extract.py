"""``python -m cpc_lightning.extract run_dir=<dir> out=<folder> [data=...] [format=npy|pt]``.

Rebuilds a trained audio model from its run dir and writes its frozen features for other tools:
one file per input audio file, at the input's path relative to ``data.root`` with the suffix
``.npy`` (float32 ``(T, D)``) or ``.pt``, plus ``features.json`` (frame rate, feature kind,
dimension, model). Frame ``t`` covers samples ``[hop t, hop t + hop)`` with ``hop`` the encoder's
downsampling (160 samples = 10 ms at 16 kHz). ``layers=all`` writes every layer from one pass:
``<out>/z/...`` (encoder) and ``<out>/layer_<i>/...`` (context layer i; the last is ``c``), each
folder mirroring the input paths, listed in ``features.json`` under ``layers``. ``out`` must be
empty (or ``overwrite=true``); every file is written to a temporary name and renamed, so none is
ever half written.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from cpc_lightning.cli import entry_point
from cpc_lightning.errors import UserError, user_errors
from cpc_lightning.eval.features import device_of, length_batches
from cpc_lightning.eval.settings import EvalSettings
from cpc_lightning.runs import Run, open_data, open_run, weights_tag

log = logging.getLogger("cpc_lightning.extract")

FORMATS = ("npy", "pt")
SPLITS = ("all", "train", "test")
LAYERS = (None, "all")
LAYOUT = "(T, dim) per file, one folder per layer: <out>/<layers[i].dir>/<input path>.<format>"


def _check(cfg: DictConfig) -> None:
    if not cfg.get("out"):
        raise UserError("out=<folder> is required (where the feature files go)")
    if cfg.format not in FORMATS:
        raise UserError(f"format={cfg.format} must be npy or pt")
    if cfg.split not in SPLITS:
        raise UserError(f"split={cfg.split} must be all, train or test")
    if cfg.get("layers") not in LAYERS:
        raise UserError(f"layers={cfg.layers} must be null (one feature) or all (every layer)")
    if cfg.get("layers") == "all" and cfg.get("layer") is not None:
        raise UserError(f"layers=all writes every layer: drop layer={cfg.layer}")
    out = Path(cfg.out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise UserError(f"out={out} is a file: give a folder for the feature files")
    entries = sorted(out.iterdir()) if out.is_dir() else []
    if entries and not cfg.get("overwrite"):
        raise UserError(
            f"out={out} is not empty ({len(entries)} entries, e.g. {entries[0].name}); nothing "
            "was written: choose a new folder, or pass overwrite=true to replace the feature "
            "files there (other files are left as they are)"
        )


def _save(feats: torch.Tensor, dest: Path, fmt: str) -> None:
    """Write ``feats`` to ``dest`` through a temporary file in the same folder."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.partial")
    try:
        with open(tmp, "wb") as fh:
            if fmt == "npy":
                np.save(fh, feats.numpy())
            else:
                torch.save(feats.clone(), fh)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _summary(run: Run, datamodule: Any, settings: EvalSettings, cfg: DictConfig, **extra: Any):
    hop = int(getattr(run.model.encoder, "downsampling", 160))
    return {
        "frame_rate_hz": datamodule.sample_rate / hop,
        "hop_samples": hop,
        "sample_rate": int(datamodule.sample_rate),
        "alignment": f"frame t covers samples [{hop} t, {hop} t + {hop}) of the input",
        "feature": settings.feature,
        "layer": settings.layer,
        "format": cfg.format,
        "dtype": "float32",
        "shape": "(T, dim) per file",
        "split": cfg.split,
        "data_root": str(datamodule.root),
        "model": {
            "run_dir": str(run.run_dir),
            "checkpoint": str(run.checkpoint),
            "checkpoint_tag": weights_tag(run.checkpoint),
            "global_step": run.global_step,
            "encoder": run.config.encoder.get("_target_"),
            "context": run.config.context.get("_target_"),
            "encoder_out_dim": run.config.encoder.get("out_dim"),
            "context_out_dim": run.config.context.get("out_dim"),
        },
        **extra,
    }


def _outputs(
    model: Any, x: torch.Tensor, settings: EvalSettings, layers: str | None
) -> dict[str, torch.Tensor]:
    """Feature tensors ``(B, T, D)`` by output folder ("": the one chosen feature)."""
    if layers != "all":
        return {"": model.features(x, settings.feature, settings.layer)}
    z, states = model.all_features(x)
    return {"z": z, **{f"layer_{i}": h for i, h in enumerate(states)}}


def _write(
    model: Any,
    records: list[Any],
    load: Any,
    cfg: DictConfig,
    settings: EvalSettings,
    out: Path,
    device: torch.device,
) -> tuple[list[str], dict[str, int]]:
    """Write every record's features; return the relative paths and the dim of each folder."""
    autocast = settings.precision == "bf16" and device.type in ("cuda", "cpu")
    files: list[str] = []
    dims: dict[str, int] = {}
    with torch.no_grad():
        for idx, wav in length_batches(records, load, int(cfg.batch_size), "extract"):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                outputs = _outputs(model, wav.unsqueeze(1).to(device), settings, cfg.get("layers"))
            for folder, feats in outputs.items():
                feats = feats.float().cpu()
                dims[folder] = int(feats.shape[-1])
                for j, i in enumerate(idx):
                    rel = Path(records[i].rel).with_suffix("." + cfg.format)
                    _save(feats[j], out / folder / rel, cfg.format)
                    if folder == next(iter(outputs)):
                        files.append(rel.as_posix())
    return files, dims


def _layer_table(dims: dict[str, int]) -> list[dict[str, Any]]:
    """``features.json``'s ``layers``: one entry per folder, the encoder then context layers."""
    last = len(dims) - 2
    table = [{"dir": "z", "feature": "z", "layer": None, "dim": dims["z"], "what": "encoder"}]
    for i in range(last + 1):
        what = "context layer" + (" (the output c)" if i == last else "")
        table.append(
            {
                "dir": f"layer_{i}",
                "feature": "c",
                "layer": i,
                "dim": dims[f"layer_{i}"],
                "what": what,
            }
        )
    return table


def extract(cfg: DictConfig) -> dict[str, Any]:
    """Write one feature file per input file and ``features.json``; return that summary."""
    _check(cfg)
    run = open_run(cfg.get("run_dir"), cfg.get("checkpoint"))
    datamodule = open_data(cfg, run.config)
    if datamodule.modality != "audio":
        raise UserError("extract writes per-file audio features; this is an image dataset")
    with user_errors("settings"):
        settings = EvalSettings.from_mapping(
            {"feature": cfg.feature, "layer": cfg.layer, "precision": cfg.precision}
        )
    out = Path(cfg.out).expanduser().resolve()
    splits = ["train", "test"] if cfg.split == "all" else [cfg.split]
    records = [r for s in splits for r in datamodule.items(s)]
    device = device_of(cfg.device)
    model = run.model.to(device)
    start = time.perf_counter()
    files, dims = _write(model, records, datamodule.load, cfg, settings, out, device)
    dim = dims.get("")
    extra: dict[str, Any] = {}
    if cfg.get("layers") == "all":
        extra = {"feature": "all", "layers": _layer_table(dims), "shape": LAYOUT}
    summary = _summary(
        run,
        datamodule,
        settings,
        cfg,
        dim=dim,
        num_files=len(files),
        seconds=time.perf_counter() - start,
        files=sorted(files),
        **extra,
    )
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".features.json.partial"
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, out / "features.json")
    rate = summary["frame_rate_hz"]
    what = f"{settings.feature}, {dim}-d" if dim is not None else f"{len(dims)} layers"
    log.info(
        "wrote %d feature files (%s, %s, %.0f Hz) to %s", len(files), cfg.format, what, rate, out
    )
    print(f"{len(files)} feature files ({what}, {rate:g} Hz) in {out}")
    return summary


@entry_point("cpc_lightning.extract", "extract")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    extract(cfg)


if __name__ == "__main__":
    main()
