"""``python -m cpc_lightning.extract run_dir=<dir> out=<folder> [data=...] [format=npy|pt]``.

Rebuilds a trained model from its run dir and writes its frozen features for other tools: one
file per input file (audio file or image), at the input's path relative to ``data.root`` with the
suffix ``.npy`` (float32) or ``.pt``, plus ``features.json`` (feature kind, dimension, model, and
the frame rate or the patch grid). Audio: ``(T, D)`` per file; frame ``t`` covers samples
``[hop t, hop t + hop)`` with ``hop`` the encoder's downsampling (160 samples = 10 ms at 16 kHz).
Images (the data option's held-out preprocessing, as ``cpc_lightning.load(run).features``):
the grid ``(G, G, D)`` per image, or with ``pool=mean|grid2|grid4|none`` the pooled vector;
images of CIFAR-10 python batches are named ``<split>/<class>/<index>``. ``layers=all`` writes
every layer from one pass: ``<out>/z/...`` (encoder) and ``<out>/layer_<i>/...`` (context layer
i; the last is ``c``), each folder mirroring the input paths, listed in ``features.json`` under
``layers``. ``out`` must be empty (or ``overwrite=true``: the feature files its
``features.json`` lists are replaced wholesale, other files kept); two inputs that would write the
same file are refused; everything is written into a hidden sibling folder first and published at
the end, so a failed extract leaves ``out`` as it was.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from cpc_lightning.api import image_preprocess
from cpc_lightning.build import check_same_modality
from cpc_lightning.cli import entry_point
from cpc_lightning.errors import UserError, user_errors
from cpc_lightning.eval.features import device_of, length_batches
from cpc_lightning.eval.settings import EvalSettings
from cpc_lightning.feature_folder import check_out, publish, save_tensor, staging_folder
from cpc_lightning.interop import zerospeech as zs
from cpc_lightning.model.pooling import GRID_POOLS, pool_grid
from cpc_lightning.progress import Progress
from cpc_lightning.runs import Run, open_data, open_run, weights_tag

log = logging.getLogger("cpc_lightning.extract")

FORMATS = ("npy", "pt", "zerospeech")
SPLITS = ("all", "train", "test")
LAYERS = (None, "all")
SHAPES = {"audio": "(T, dim)", "image": "(H, W, dim)", "pooled": "(dim,)"}
LAYOUT = "{shape} per file, one folder per layer: <out>/<layers[i].dir>/<input path>.<format>"


def _check(cfg: DictConfig) -> None:
    if not cfg.get("out"):
        raise UserError("out=<folder> is required (where the feature files go)")
    if cfg.format not in FORMATS:
        raise UserError(f"format={cfg.format} must be npy, pt or zerospeech")
    if cfg.format == "zerospeech":
        if cfg.get("layers") is not None:
            raise UserError(f"format=zerospeech submits one feature: drop layers={cfg.layers}")
        if cfg.zerospeech.distance not in zs.DISTANCES:
            raise UserError(
                f"zerospeech.distance={cfg.zerospeech.distance} must be one of "
                f"{', '.join(zs.DISTANCES)} (the toolkit's spelling)"
            )
    if cfg.split not in SPLITS:
        raise UserError(f"split={cfg.split} must be all, train or test")
    if cfg.get("layers") not in LAYERS:
        raise UserError(f"layers={cfg.layers} must be null (one feature) or all (every layer)")
    if cfg.get("layers") == "all" and cfg.get("layer") is not None:
        raise UserError(f"layers=all writes every layer: drop layer={cfg.layer}")
    if cfg.get("pool") not in (None, *GRID_POOLS):
        raise UserError(
            f"pool={cfg.pool} must be null (the grid) or one of {', '.join(GRID_POOLS)}"
        )
    out = Path(cfg.out).expanduser().resolve()
    replaced = "the feature files its features.json lists (other files are left as they are)"
    check_out(out, bool(cfg.get("overwrite")), replaced)


def _model_summary(run: Run) -> dict[str, Any]:
    return {
        "run_dir": str(run.run_dir),
        "checkpoint": str(run.checkpoint),
        "checkpoint_tag": weights_tag(run.checkpoint),
        "global_step": run.global_step,
        "encoder": run.config.encoder.get("_target_"),
        "context": run.config.context.get("_target_"),
        "encoder_out_dim": run.config.encoder.get("out_dim"),
        "context_out_dim": run.config.context.get("out_dim"),
    }


def _audio_summary(run: Run, datamodule: Any) -> dict[str, Any]:
    hop = int(getattr(run.model.encoder, "downsampling", 160))
    return {
        "modality": "audio",
        "frame_rate_hz": datamodule.sample_rate / hop,
        "hop_samples": hop,
        "sample_rate": int(datamodule.sample_rate),
        "alignment": f"frame t covers samples [{hop} t, {hop} t + {hop}) of the input",
        "shape": f"{SHAPES['audio']} per file",
    }


def _image_summary(datamodule: Any, pool: str | None) -> dict[str, Any]:
    pre = datamodule.eval_preprocess()
    g, p, s, size = pre.grid_size, pre.patch_size, pre.stride, pre.image_size
    resize = f"shorter side resized to {pre.resize_size}, " if pre.resize_size else ""
    return {
        "modality": "image",
        "grid": [g, g],
        "image_size": size,
        "resize_size": pre.resize_size,
        "patch_size": p,
        "stride": s,
        "mean": list(pre.mean),
        "std": list(pre.std),
        "preprocessing": f"RGB / 255, {resize}centre crop {size}x{size}, (x - mean) / std, "
        f"{g}x{g} grid of {p}x{p} patches, stride {s}",
        "alignment": f"cell (i, j) is the patch at rows [{s} i, {s} i + {p}), columns "
        f"[{s} j, {s} j + {p}) of the preprocessed image",
        "pool": pool,
        "shape": f"{SHAPES['image' if pool is None else 'pooled']} per file",
    }


def _outputs(
    model: Any, x: torch.Tensor, settings: EvalSettings, layers: str | None
) -> dict[str, torch.Tensor]:
    """Feature tensors by output folder ("": the one chosen feature)."""
    if layers != "all":
        return {"": model.features(x, settings.feature, settings.layer)}
    z, states = model.all_features(x)
    return {"z": z, **{f"layer_{i}": h for i, h in enumerate(states)}}


class _Writer:
    """Runs the model on batches and saves each item's features under its relative path."""

    def __init__(
        self, model: Any, cfg: DictConfig, settings: EvalSettings, out: Path, device: torch.device
    ) -> None:
        self.model, self.cfg, self.settings = model, cfg, settings
        self.out, self.device = out, device
        self.autocast = settings.precision == "bf16" and device.type in ("cuda", "cpu")
        self.zerospeech = cfg.format == "zerospeech"
        self.files: list[str] = []
        self.dims: dict[str, int] = {}

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, rels: list[str], pool: str | None = None) -> None:
        """Save the features of the batch ``x`` as ``<out>/<folder>/<rels[j]>``."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            try:
                outputs = _outputs(self.model, x.to(self.device), self.settings, self.cfg.layers)
            except ValueError as err:  # layer= beyond the context's layers: the first batch
                if self.settings.layer is None or not str(err).startswith("layer="):
                    raise
                raise UserError(f"{err}; nothing was written") from err
        for folder, feats in outputs.items():
            feats = feats.cpu().double() if self.zerospeech else feats.float().cpu()
            if pool is not None:
                feats = pool_grid(feats, pool)
            self.dims[folder] = int(feats.shape[-1])
            if self.zerospeech and feats.shape[1] < zs.MIN_FRAMES:
                raise UserError(
                    f"{rels[0]}: {feats.shape[1]} frame(s), ZeroSpeech needs at least "
                    f"{zs.MIN_FRAMES} per file; nothing was written"
                )
            for j, rel in enumerate(rels):
                save_tensor(
                    feats[j], self.out / folder / rel, "npy" if self.zerospeech else self.cfg.format
                )
        self.files.extend(rels)


def _unique(names: list[str], sources: list[str]) -> None:
    """Refuse two inputs that would write the same feature file (``a.flac`` and ``a.wav``)."""
    seen: dict[str, str] = {}
    for name, src in zip(names, sources, strict=True):
        if name in seen:
            raise UserError(
                f"{seen[name]} and {src} would both write {name}: nothing was written; keep one "
                "of them under data.root (feature files are named after the input without suffix)"
            )
        seen[name] = src


def _write_audio(datamodule: Any, splits: list[str], write: _Writer) -> None:
    records = [r for s in splits for r in datamodule.items(s)]
    if write.zerospeech:
        with user_errors("format=zerospeech"):
            records = zs.submission_records(records, datamodule.root)
        rels = [str(zs.submission_file(r.rel)) for r in records]
    else:
        rels = [Path(r.rel).with_suffix("." + write.cfg.format).as_posix() for r in records]
    _unique(rels, [r.rel for r in records])
    batches = length_batches(records, datamodule.load, int(write.cfg.batch_size), "extract")
    for idx, wav in batches:
        write(wav.unsqueeze(1), [rels[i] for i in idx])


def _submission_files(run: Run, datamodule: Any, cfg: DictConfig, folder: Path) -> dict:
    """``params.yaml`` and ``meta.yaml`` of an ABX-LS submission; their summary."""
    hop = int(getattr(run.model.encoder, "downsampling", 160))
    layer = "" if cfg.get("layer") is None else f" layer {cfg.layer}"
    name = {
        k: str(run.config[k].get("_target_", "?")).rsplit(".", 1)[-1]
        for k in ("encoder", "context", "data")
    }
    steps = "" if run.global_step is None else f", {run.global_step} training steps"
    description = (
        f"CPC (cpc_lightning): {name['encoder']} encoder, {name['context']} context; "
        f"features {cfg.feature}{layer}{steps}"
    )
    root = run.config.data.get("root")
    train_set = f"{Path(str(root)).name} ({name['data']})" if root else name["data"]
    return zs.write_submission_files(
        folder,
        hop / float(datamodule.sample_rate),
        str(cfg.zerospeech.distance),
        description,
        train_set,
    )


def _write_images(datamodule: Any, splits: list[str], write: _Writer, pool: str | None) -> None:
    suffix = "." + write.cfg.format
    names = {s: [datamodule.item_path(s, i) for i in range(datamodule.stats[s])] for s in splits}
    _unique(
        [n + suffix for s in splits for n in names[s]],
        [
            datamodule.item_path(s, i, keep_suffix=True)
            for s in splits
            for i in range(len(names[s]))
        ],
    )
    for split in splits:
        loader = datamodule.feature_loader(split, int(write.cfg.batch_size))
        with Progress(f"extract {split}", len(names[split]), "img") as progress:
            for batch in loader:
                write(batch["x"], [names[split][int(i)] + suffix for i in batch["index"]], pool)
                progress.update(len(batch["x"]))


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


def _warn_if_unlike_run(run: Run, datamodule: Any) -> None:
    """Images: say when the chosen data option preprocesses unlike the run's own data config."""
    ours, theirs = datamodule.eval_preprocess(), image_preprocess(run.config.data)
    keys = ("image_size", "resize_size", "patch_size", "stride", "mean", "std")
    differ = [f"{k} {getattr(ours, k)} (run: {getattr(theirs, k)})" for k in keys
              if getattr(ours, k) != getattr(theirs, k)]  # fmt: skip
    if differ:
        log.warning(
            "the data option preprocesses images unlike the run's own data: %s; these features "
            "differ from cpc_lightning.load(run_dir).features(images)",
            ", ".join(differ),
        )


def _open(cfg: DictConfig) -> tuple[Run, Any, EvalSettings]:
    """The run, its DataModule (set up) and the feature settings, each checked."""
    _check(cfg)
    run = open_run(cfg.get("run_dir"), cfg.get("checkpoint"))
    datamodule = open_data(cfg, run.config)
    check_same_modality(run.model, datamodule, f"run_dir={run.run_dir}")
    if datamodule.modality != "audio" and cfg.format == "zerospeech":
        raise UserError(f"format=zerospeech writes speech features: data is {datamodule.modality}")
    if datamodule.modality == "audio" and cfg.get("pool") is not None:
        raise UserError(f"pool={cfg.pool} pools image grids: drop it for audio data")
    if datamodule.modality == "image":
        _warn_if_unlike_run(run, datamodule)
    with user_errors("settings"):
        settings = EvalSettings.from_mapping(
            {"feature": cfg.feature, "layer": cfg.layer, "precision": cfg.precision}
        )
    return run, datamodule, settings


def extract(cfg: DictConfig) -> dict[str, Any]:
    """Write one feature file per input file and ``features.json`` (into a hidden sibling of
    ``out``, then published: :mod:`cpc_lightning.feature_folder`); return that summary."""
    run, datamodule, settings = _open(cfg)
    out = Path(cfg.out).expanduser().resolve()
    staging = staging_folder(out)
    try:
        summary = _write_all(cfg, run, datamodule, settings, staging)
        publish(staging, out, summary)
        if cfg.format == "zerospeech":
            zs.make_folders(out)  # empty folders are not moved into an existing out
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _say(summary, out, cfg.format)
    return summary


def _write_all(
    cfg: DictConfig, run: Run, datamodule: Any, settings: EvalSettings, folder: Path
) -> dict[str, Any]:
    """Write every feature file into ``folder``; return the summary for ``features.json``."""
    splits = ["train", "test"] if cfg.split == "all" else [cfg.split]
    device = device_of(cfg.device)
    write = _Writer(run.model.to(device), cfg, settings, folder, device)
    start = time.perf_counter()
    if datamodule.modality == "image":
        _write_images(datamodule, splits, write, cfg.get("pool"))
        kind = _image_summary(datamodule, cfg.get("pool"))
    else:
        _write_audio(datamodule, splits, write)
        kind = _audio_summary(run, datamodule)
        if write.zerospeech:
            kind.update(_submission_files(run, datamodule, cfg, folder))
    files = sorted(set(write.files))
    extra: dict[str, Any] = {}
    if cfg.get("layers") == "all":
        layout = LAYOUT.format(shape=kind["shape"].removesuffix(" per file"))
        extra = {"feature": "all", "layers": _layer_table(write.dims), "shape": layout}
    return {
        **kind,
        "feature": settings.feature,
        "layer": settings.layer,
        "format": cfg.format,
        "dtype": kind.get("dtype", "float32"),
        "split": cfg.split,
        "data_root": str(datamodule.root),
        "model": _model_summary(run),
        "dim": write.dims.get(""),
        "num_files": len(files),
        "seconds": time.perf_counter() - start,
        "files": files,
        **extra,
    }


def _say(summary: dict[str, Any], out: Path, fmt: str) -> None:
    """Say what was written."""
    dim, n = summary["dim"], summary["num_files"]
    what = (
        f"{summary['feature']}, {dim}-d" if dim is not None else f"{len(summary['layers'])} layers"
    )
    if summary["modality"] == "audio":
        where = f"{summary['frame_rate_hz']:g} Hz"
    else:
        where = f"{summary['grid'][0]}x{summary['grid'][1]} grid, pool {summary['pool']}"
    log.info("wrote %d feature files (%s, %s, %s) to %s", n, fmt, what, where, out)
    print(f"{n} feature files ({what}, {where}) in {out}")


@entry_point("cpc_lightning.extract", "extract")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    extract(cfg)


if __name__ == "__main__":
    main()
