"""``python -m cpc_lightning.export run_dir=<dir> to=cpc_audio|safetensors out=<dir | file.pt>``.

A trained run's model in another tool's format:

- ``to=cpc_audio``: a facebookresearch/CPC_audio checkpoint
  (:mod:`cpc_lightning.interop.export_cpc_audio`): ``out=<folder>`` gets ``cpc/train.py``'s
  layout, ``out=<file>.pt`` the hub layout that CPC_audio's hubconf and s3prl's ``cpc_local``
  read. A model CPC_audio cannot hold is refused in one line naming the key.
- ``to=safetensors``: a model folder (:mod:`cpc_lightning.interop.model_dir`) that
  ``cpc_lightning.load`` reads without the run dir, with a model card of the run's evaluations.

Everything is written into a hidden sibling of ``out`` and moved into place last, so a failed
export leaves ``out`` as it was. An ``out`` that exists and holds files is refused unless
``overwrite=true``, which replaces only the files the format writes (a folder holding anything
else is refused).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from cpc_lightning.cli import entry_point
from cpc_lightning.errors import UserError
from cpc_lightning.eval.registry import read_report
from cpc_lightning.feature_folder import staging_folder
from cpc_lightning.interop.cpc_audio import CHECKPOINT_FILE
from cpc_lightning.interop.export_cpc_audio import (
    ARGS_FILE,
    LOGS_FILE,
    export_checkpoint,
    write_hub,
    write_train_run,
)
from cpc_lightning.interop.model_dir import FILES, model_card, model_config, write_model_dir
from cpc_lightning.run_dir import RunDir
from cpc_lightning.runs import Run, open_run, read_checkpoint

log = logging.getLogger("cpc_lightning.export")

FORMATS = ("cpc_audio", "safetensors")
PROBE_TITLE = "End-of-run linear probes (held-out split, accuracy)"


def _owned(to: str) -> Callable[[str], bool]:
    """Whether a file name is one that format ``to`` writes into a folder."""
    if to == "cpc_audio":
        return lambda name: bool(CHECKPOINT_FILE.match(name)) or name in (ARGS_FILE, LOGS_FILE)
    return lambda name: name in FILES


def _check_out(out: Path, to: str, overwrite: bool) -> None:
    """Refuse an ``out`` that the export may not write (before anything is written)."""
    if out.suffix == ".pt" and to == "cpc_audio":
        if out.is_dir():
            raise UserError(f"out={out} is a folder: give a new <file>.pt, or a folder name")
        if out.exists() and not overwrite:
            raise UserError(f"out={out} exists: give a new file name, or overwrite=true")
        return
    if out.suffix == ".pt":
        raise UserError(f"out={out}: to={to} writes a folder; give out=<folder>")
    if out.exists() and not out.is_dir():
        raise UserError(f"out={out} is a file: give a folder (a new or empty one)")
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if held and not overwrite:
        raise UserError(
            f"out={out} is not empty: give a new folder, or overwrite=true to replace the "
            f"{to} files in it"
        )
    foreign = [name for name in held if not _owned(to)(name) or not (out / name).is_file()]
    if foreign:
        raise UserError(
            f"out={out} holds {foreign[0]}, which export to={to} did not write: give a new or "
            "empty folder (nothing was replaced)"
        )


def _publish(staging: Path, out: Path, to: str) -> None:
    """Move the files of ``staging`` into ``out`` (a rename when ``out`` is new or empty; else
    the format's old files are removed first), then remove ``staging``."""
    if not out.exists() or not any(out.iterdir()):
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
        return
    for old in out.iterdir():
        if _owned(to)(old.name):
            old.unlink()
    for new in staging.iterdir():
        os.replace(new, out / new.name)
    shutil.rmtree(staging, ignore_errors=True)


def evaluation_tables(run_dir: Path, result: dict[str, Any] | None) -> list[tuple[str, str]]:
    """``(title, Markdown table)`` of the run's end-of-run probes and ``evaluate`` reports."""
    tables = []
    if result and result.get("probe_table"):
        tables.append((PROBE_TITLE, str(result["probe_table"])))
    for path in sorted(RunDir(run_dir).eval.glob("*.json")):
        try:
            report = read_report(path)
        except (OSError, ValueError, TypeError):
            continue  # not a report (e.g. a cache index)
        if isinstance(report.table, str) and report.table:
            title = f"evaluate task={path.stem} ({report.feature_label}, held-out split)"
            tables.append((title, report.table))
    return tables


def provenance(run: Run, result: dict[str, Any] | None) -> dict[str, Any]:
    """Where the model comes from: run, checkpoint, step, code, data, probe scores."""
    result = result or {}
    code = (result.get("environment") or {}).get("code") or {}
    data = run.config.get("data") or {}
    name = (result.get("setup") or {}).get("data") or str(data.get("_target_", "-")).split(".")[-1]
    root = data.get("root")
    metrics, step = result.get("metrics") or {}, run.global_step
    out = {
        "run_dir": run.run_dir.name,
        "checkpoint": run.checkpoint.name,
        "global_step": step if step is not None else result.get("global_step"),
        "git_commit": code.get("git_commit"),
        "git_dirty": code.get("git_dirty"),
        "package": code.get("package"),
        "data": f"{name} ({Path(str(root)).name})" if root else name,
        "status": result.get("status"),
        "probe_scores": {k: v for k, v in metrics.items() if k.startswith("probe/")},
    }
    if result.get("converted_from"):
        src = result["converted_from"]
        out["converted_from"] = {k: src.get(k) for k in ("format", "layout", "epoch")}
    return out


def _write(cfg: DictConfig, run: Run, out: Path, staging: Path) -> tuple[Path, list[str]]:
    """Write the export into ``staging`` (or the hub file at ``out``); return what to report."""
    if cfg.to == "safetensors":
        result = RunDir(run.run_dir).read_result()
        prov = provenance(run, result)
        config = model_config(run.config, run.model.modality, prov["package"])
        config["provenance"] = prov
        card = model_card(out.name, config, evaluation_tables(run.run_dir, result))
        write_model_dir(staging, run.model, config, card)
        return out, []
    lightning = read_checkpoint(run.checkpoint)
    hub = out.suffix == ".pt"
    ckpt, notes = export_checkpoint(run.config, run.model, lightning, hub)
    if hub:
        return write_hub(out, ckpt), notes
    path = write_train_run(staging, ckpt, int(lightning.get("global_step") or 0))
    return out / path.name, notes


def export(cfg: DictConfig) -> Path:
    """Export ``cfg.run_dir``'s model as ``cfg.to`` into ``cfg.out``; return what was written."""
    if cfg.get("to") not in FORMATS:
        raise UserError(f"to={cfg.get('to')} must be one of {', '.join(FORMATS)}")
    if not cfg.get("run_dir") and not cfg.get("checkpoint"):
        raise UserError("run_dir=<training run dir> (or checkpoint=<file>) is required")
    if not cfg.get("out"):
        raise UserError("out=<folder, or for to=cpc_audio a file.pt> is required")
    out = Path(str(cfg.out)).expanduser().resolve()
    _check_out(out, cfg.to, bool(cfg.overwrite))
    run = open_run(run_dir=cfg.get("run_dir"), checkpoint=cfg.get("checkpoint"))
    staging = staging_folder(out)
    try:
        written, notes = _write(cfg, run, out, staging)
        if out.suffix != ".pt":
            _publish(staging, out, cfg.to)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for note in notes:
        log.info("note: %s", note)
    print(f"exported {run.checkpoint} as {cfg.to}: {written}")
    return written


@entry_point("cpc_lightning.export", "export")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    export(cfg)


if __name__ == "__main__":
    main()
