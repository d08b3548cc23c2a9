"""The folder ``prepare`` writes shards into: which folders it may replace, the chunk size, and
writing through a temporary sibling renamed into place at the end (never half a shard folder).

The rule, the same as ``extract``'s and ``convert``'s ("a folder that already holds results is
not written over unless that is asked for"), checked before anything is written:

- a missing or empty folder is written;
- a shard folder (``cpc_manifest.json``, ``train/``, ``test/`` and nothing else) of the same
  corpus (data ``_target_`` and ``root``) is replaced: ``prepare`` again after changing options;
- a shard folder of another corpus is replaced only with ``overwrite=true``;
- anything else (a run dir, a folder with other files) is refused.

An object-store URL cannot be renamed into place: it is written as before, split by split.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from cpc_lightning.errors import UserError
from cpc_lightning.run_dir import RunDir

MANIFEST = "cpc_manifest.json"
SPLITS = ("train", "test")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}
_BYTES_PER_SAMPLE = {"int16": 2, "float32": 4}


def is_url(path: str | os.PathLike[str]) -> bool:
    """``s3://``, ``gs://``, ... (anything with a scheme other than a local path)."""
    return "://" in str(path) and not str(path).startswith("file://")


def _same_corpus(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return all(a.get(k) == b.get(k) for k in ("_target_", "root"))


def check_out(out: str, source: Mapping[str, Any], overwrite: bool = False) -> None:
    """Refuse (one line naming the folder and the fix) an ``out`` that ``prepare`` must not
    replace; see the module docstring. Writes nothing."""
    if is_url(out):
        return
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UserError(f"out={path} is a file: give a folder for the shards")
    entries = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    if not entries:
        return
    if RunDir(path).holds_a_run() is not None or RunDir(path).config_resolved.is_file():
        raise UserError(f"out={path} is a run dir; nothing was written: give a new folder")
    manifest = path / MANIFEST
    if not manifest.is_file() or set(entries) - {MANIFEST, *SPLITS}:
        raise UserError(
            f"out={path} is not empty and holds no shards ({len(entries)} entries, e.g. "
            f"{entries[0]}); nothing was written: give a new or empty folder"
        )
    try:
        old = json.loads(manifest.read_text()).get("source") or {}
    except (OSError, ValueError, AttributeError):
        old = {}
    if not overwrite and not _same_corpus(old, source):
        raise UserError(
            f"out={path} holds shards of another corpus ({old.get('_target_')} at "
            f"{old.get('root')}); nothing was written: give a new folder, or pass "
            "overwrite=true to replace them"
        )


def parse_size(value: Any) -> int:
    """``chunk_bytes`` in bytes: an integer (bytes) or a size such as ``64MB``, ``500kb``."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        found = _SIZE.match(str(value))
        if not found:
            raise UserError(
                f"chunk_bytes={value!r} is not a size: give bytes or a decimal size with a unit, "
                "e.g. chunk_bytes=64MB (units B, KB, MB, GB, TB)"
            )
        size = int(float(found.group(1)) * _UNITS[found.group(2).lower()])
    if size <= 0:
        raise UserError(f"chunk_bytes={value!r} must be positive, e.g. chunk_bytes=64MB")
    return size


def chunk_size(chunk_bytes: Any, records: Mapping[str, list[Any]], dtype: str) -> int:
    """``chunk_bytes`` in bytes, refused when one utterance would not fit in a chunk."""
    size = parse_size(chunk_bytes)
    longest = max((r.num_samples for recs in records.values() for r in recs), default=0)
    need = longest * _BYTES_PER_SAMPLE[dtype]
    if size < need:
        raise UserError(
            f"chunk_bytes={chunk_bytes} ({size} bytes) is smaller than the largest utterance "
            f"({need} bytes as {dtype}); nothing was written: give chunk_bytes="
            f"{max(1, math.ceil(need / 1e6))}MB or more (default 64MB)"
        )
    return size


@contextlib.contextmanager
def staging(out: str) -> Iterator[str]:
    """The folder to write into: for a local ``out`` a temporary sibling, renamed to ``out``
    (replacing what was there) when the block succeeds and removed when it fails."""
    if is_url(out):
        yield out
        return
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield str(tmp)
        if path.exists():
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            if old.exists():  # put the old folder back
                os.replace(old, path)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
