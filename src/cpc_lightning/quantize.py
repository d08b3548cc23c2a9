"""``python -m cpc_lightning.quantize run_dir=<dir> layer=c k=50 out=<folder> [data=...]``.

Discrete units of a trained audio run: k-means (scikit-learn ``MiniBatchKMeans``, seeded;
:mod:`cpc_lightning.eval.units`) fitted on the frames of one feature (``layer``: ``z``, ``c``
or a context layer index) over the training split of ``data``, then every utterance's units.
Written into ``out`` through a hidden sibling folder (:mod:`cpc_lightning.feature_folder`):

- ``codebook.npy``: the centroids ``(k, D)`` float32; ``kmeans.joblib``: the fitted
  scikit-learn model (``joblib.load``; what fairseq's HuBERT ``dump_km_label.py`` applies);
- ``<split>.tsv`` and ``<split>.km`` (fairseq's HuBERT labels): the manifest (first line the
  data root, then ``<path under it>\\t<samples>`` per utterance) and, in the same order, one
  line of space-separated unit ids per utterance (one per feature frame);
  ``dict.km.txt``: ``<unit> 1`` per unit (the label dictionary HuBERT reads);
- ``quantized_outputs.txt``: ZeroSpeech 2021's format, ``<file id>\\t<u1>,<u2>,...`` per
  utterance of every split written (file id: the file name without suffix, or the path under
  the data root without suffix where names repeat, as TIMIT's do);
- ``features.json``: the layer, k, frame rate, fit and model.

``out`` must be empty (or ``overwrite=true``: files of the same names are replaced).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from cpc_lightning.cli import entry_point
from cpc_lightning.errors import UserError, user_errors
from cpc_lightning.eval.features import Source
from cpc_lightning.eval.settings import EvalSettings
from cpc_lightning.eval.units import (
    UnitSettings,
    assign,
    chunked_features,
    fit_kmeans,
    require_sklearn,
    training_frames,
)
from cpc_lightning.feature_folder import check_out, publish, staging_folder
from cpc_lightning.interop.zerospeech import quantized_line
from cpc_lightning.runs import Run, open_data, open_run, weights_tag

log = logging.getLogger("cpc_lightning.quantize")

SPLITS = ("all", "train", "test")
QUANTIZED = "quantized_outputs.txt"
KMEANS_KEYS = ("k", "seed", "batch_size", "epochs", "max_frames")


def parse_layer(value: Any, model: Any) -> tuple[str, int | None]:
    """``layer=z|c|<i>`` -> ``(feature, context layer)``; one line naming the model's layers
    when ``value`` is none of them."""
    with torch.no_grad():
        dim = int(model.encoder.out_dim)
        count = len(model.context_layers(torch.zeros(1, 2, dim)))
    if value in ("z", "c"):
        return str(value), None
    text = str(value)
    if not isinstance(value, bool) and text.lstrip("-").isdigit() and -count <= int(text) < count:
        return "c", int(text)
    raise UserError(
        f"layer={value} is not a layer of this model: give layer=z (encoder), layer=c (context "
        f"output) or a context layer 0..{count - 1} (negative counts from the top)"
    )


def _check(cfg: DictConfig) -> tuple[Path, UnitSettings]:
    """The output folder and the k-means settings, checked before anything is read."""
    if not cfg.get("out"):
        raise UserError("out=<folder> is required (where the codebook and the units go)")
    if cfg.split not in SPLITS:
        raise UserError(f"split={cfg.split} must be all, train or test")
    with user_errors("quantize"):
        require_sklearn()
        s = UnitSettings.from_node({k: cfg.get(k) for k in KMEANS_KEYS})
    out = Path(cfg.out).expanduser().resolve()
    check_out(out, bool(cfg.get("overwrite")), "the files of the same names (others are kept)")
    return out, s


def file_ids(rels: list[str]) -> tuple[list[str], str]:
    """ZeroSpeech file ids of the inputs (paths under the data root) and how they were made:
    the file names without suffix (``stem``, LibriSpeech's ids), or, where two names are equal
    (TIMIT's ``sa1`` of every speaker), the paths without suffix (``path``)."""
    stems = [PurePosixPath(r).stem for r in rels]
    if len(set(stems)) == len(stems):
        return stems, "stem"
    log.info("file names repeat under the data root: quantized_outputs.txt ids are paths")
    return [str(PurePosixPath(r).with_suffix("")) for r in rels], "path"


def _write_units(
    km: Any,
    source: Source,
    datamodule: Any,
    settings: EvalSettings,
    records: dict[str, list[Any]],
    ids: list[str],
    folder: Path,
) -> None:
    """``<split>.tsv``, ``<split>.km`` per split of ``records`` and ``quantized_outputs.txt``
    (all of them, named by ``ids``) into ``folder``."""
    next_id = iter(ids)
    root = Path(datamodule.root).resolve()
    with open(folder / QUANTIZED, "w") as zs:
        for split in records:
            with (
                open(folder / f"{split}.tsv", "w") as tsv,
                open(folder / f"{split}.km", "w") as km_,
            ):
                tsv.write(f"{root}\n")
                feats = chunked_features(source, datamodule, records[split], settings, split)
                for rec, x in feats:
                    units = assign(km, x)
                    tsv.write(f"{rec.rel}\t{int(rec.file_frames)}\n")
                    km_.write(" ".join(map(str, units.tolist())) + "\n")
                    zs.write(quantized_line(next(next_id), units) + "\n")


def _write_codebook(km: Any, k: int, folder: Path) -> None:
    """``codebook.npy``, ``kmeans.joblib`` and ``dict.km.txt``."""
    import joblib

    np.save(folder / "codebook.npy", km.cluster_centers_.astype(np.float32))
    joblib.dump(km, folder / "kmeans.joblib")
    (folder / "dict.km.txt").write_text("".join(f"{u} 1\n" for u in range(k)))


def _summary(run: Run, datamodule: Any, layer: Any, s: UnitSettings, fit: dict) -> dict:
    hop = int(getattr(run.model.encoder, "downsampling", 160))
    return {
        "format": "units",
        "layer": str(layer),
        "k": s.k,
        "kmeans": {"library": "scikit-learn MiniBatchKMeans", **asdict(s), **fit},
        "frame_rate_hz": datamodule.sample_rate / hop,
        "hop_samples": hop,
        "sample_rate": int(datamodule.sample_rate),
        "data_root": str(datamodule.root),
        "model": {
            "run_dir": str(run.run_dir),
            "checkpoint": str(run.checkpoint),
            "global_step": run.global_step,
        },
    }


def quantize(cfg: DictConfig) -> dict[str, Any]:
    """Fit the codebook, write it and every utterance's units; return the summary."""
    out, s = _check(cfg)
    run = open_run(cfg.get("run_dir"), cfg.get("checkpoint"))
    datamodule = open_data(cfg, run.config)
    if datamodule.modality != "audio":
        raise UserError(f"quantize makes speech units: data is {datamodule.modality}")
    feature, layer = parse_layer(cfg.layer, run.model)
    with user_errors("settings"):
        settings = EvalSettings.from_mapping(
            {"feature": feature, "layer": layer, "precision": cfg.precision,
             "device": cfg.device, "extract_batch": cfg.extract_batch}
        )  # fmt: skip
    source = Source("cpc", run.model, weights_tag(run.checkpoint))
    hop = int(getattr(run.model.encoder, "downsampling", 160))
    splits = ["train", "test"] if cfg.split == "all" else [cfg.split]
    records = {split: list(datamodule.items(split)) for split in splits}
    ids, id_kind = file_ids([r.rel for rs in records.values() for r in rs])
    start = time.perf_counter()
    with user_errors("quantize"):
        train = list(datamodule.items("train"))
        frames = training_frames(source, datamodule, train, settings, s, hop)
        km = fit_kmeans(frames, s)
    fit = {"train_frames": len(frames), "mean_squared_distance": -km.score(frames) / len(frames)}
    summary = _summary(run, datamodule, cfg.layer, s, fit)
    summary["utterances"] = {split: len(rs) for split, rs in records.items()}
    summary["file_ids"] = id_kind
    staging = staging_folder(out)
    try:
        _write_codebook(km, s.k, staging)
        _write_units(km, source, datamodule, settings, records, ids, staging)
        summary["files"] = sorted(p.name for p in staging.iterdir())
        summary["seconds"] = time.perf_counter() - start
        publish(staging, out, summary)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    n = sum(summary["utterances"].values())
    print(f"{s.k} units of layer {cfg.layer} for {n} utterances ({', '.join(splits)}) in {out}")
    return summary


@entry_point("cpc_lightning.quantize", "quantize")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    quantize(cfg)


if __name__ == "__main__":
    main()
