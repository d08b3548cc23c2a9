"""Where ``extract`` writes: a hidden sibling of ``out`` first, then ``out`` in one last step.

Every feature file and ``features.json`` is written into ``.<out>.extracting-*`` beside ``out``;
only when all of them are written are they published: a missing or empty ``out`` becomes that
folder by one rename; into an existing ``out`` (``overwrite=true``) the files its previous
``features.json`` lists are removed (never a file extract did not write), the new files replace
theirs by name and ``features.json`` comes last. A failed extract leaves ``out`` as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cpc_lightning.errors import UserError

META = "features.json"
SUFFIXES = (".npy", ".pt")


def save_tensor(feats: torch.Tensor, dest: Path, fmt: str) -> None:
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


def check_out(out: Path, overwrite: bool, replaced: str) -> None:
    """Refuse, in one line, an ``out`` that is a file, or a non-empty folder without
    ``overwrite`` (``replaced``: what ``overwrite=true`` would replace)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"out={out} is a file: give a folder for the output files")
    entries = sorted(out.iterdir()) if out.is_dir() else []
    if entries and not overwrite:
        raise UserError(
            f"out={out} is not empty ({len(entries)} entries, e.g. {entries[0].name}); nothing "
            f"was written: choose a new folder, or pass overwrite=true to replace {replaced}"
        )


def staging_folder(out: Path) -> Path:
    """A new hidden folder beside ``out`` (same file system: publishing is renames)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.extracting-", dir=out.parent))


def previous_files(out: Path) -> list[Path]:
    """The feature files in ``out`` that its ``features.json`` lists (what extract wrote there;
    an unreadable or foreign ``features.json`` lists none). Only regular ``.npy``/``.pt`` files
    inside ``out`` count."""
    try:
        meta = json.loads((out / META).read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(meta, dict) or not isinstance(meta.get("files"), list):
        return []
    layers = meta.get("layers") if isinstance(meta.get("layers"), list) else []
    folders = [e["dir"] for e in layers if isinstance(e, dict) and isinstance(e.get("dir"), str)]
    root, found = out.resolve(), []
    for folder in folders or [""]:
        for name in meta["files"]:
            path = out / folder / str(name)
            if path.suffix not in SUFFIXES or path.is_symlink() or not path.is_file():
                continue
            if path.resolve().is_relative_to(root):
                found.append(path)
    return found


def _prune(folder: Path, out: Path) -> None:
    """Remove ``folder`` and its parents below ``out`` while they are empty."""
    while folder != out and folder.is_relative_to(out) and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


def publish(staging: Path, out: Path, summary: dict[str, Any]) -> None:
    """Write ``features.json`` into ``staging`` and move everything into ``out`` (see above)."""
    (staging / META).write_text(json.dumps(summary, indent=2))
    fresh = not out.exists() or (out.is_dir() and not out.is_symlink() and not any(out.iterdir()))
    if fresh:
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
        return
    new = sorted(
        (p.relative_to(staging) for p in staging.rglob("*") if p.is_file()),
        key=lambda rel: rel.as_posix() == META,  # features.json last
    )
    for old in previous_files(out):
        if old.relative_to(out) not in new:
            old.unlink()
            _prune(old.parent, out)
    for rel in new:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / rel, out / rel)
    shutil.rmtree(staging, ignore_errors=True)
