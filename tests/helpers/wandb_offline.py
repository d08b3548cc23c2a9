"""Read an offline W&B run back: its ``run-<id>.wandb`` log and its files folder.

The ``.wandb`` file is wandb's transaction log: a 7-byte header (``:W&B``, magic, version), then
LevelDB log records (32 KiB blocks; each record a ``<crc, length, type>`` header and a chunk of
a serialized ``wandb_internal_pb2.Record``). Tables and images logged offline are files under
``files/media/``.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCK, HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> list[Any]:
    """Every ``Record`` of a ``.wandb`` file, in order."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, chunks, pending = HEADER, [], b""
    while pos + HEADER <= len(data):
        space = BLOCK - pos % BLOCK
        if space < HEADER:  # the block's tail is padding
            pos += space
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            chunks.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            chunks.append(pending + chunk)
        else:  # zero padding at the end of the file
            break
    records = []
    for chunk in chunks:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(chunk)
        records.append(record)
    return records


def _items(items: Any) -> dict[str, Any]:
    """Summary / history items as a dict (a nested key, e.g. a table's fields, nested)."""
    out: dict[str, Any] = {}
    for item in items:
        path = list(item.nested_key) or [item.key]
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = json.loads(item.value_json)
    return out


@dataclass
class OfflineRun:
    """One offline run folder (``offline-run-<time>-<id>``) read back."""

    folder: Path
    run: Any = None  # the RunRecord: run_id, project, run_group, job_type, display_name
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def read(cls, folder: Path) -> OfflineRun:
        """Its run record, final summary and history rows."""
        (log,) = folder.glob("run-*.wandb")
        out = cls(folder)
        for record in read_records(log):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                out.run = record.run
            elif kind == "summary":
                out.summary.update(_items(record.summary.update))
            elif kind == "history":
                out.history.append(_items(record.history.item))
            elif kind == "request" and record.request.WhichOneof("request_type") == (
                "partial_history"
            ):
                out.history.append(_items(record.request.partial_history.item))
        return out

    @property
    def logged(self) -> dict[str, Any]:
        """The last value of every key the history holds (what W&B's summary shows)."""
        out: dict[str, Any] = {}
        for row in self.history:
            out.update(row)
        return {**out, **self.summary}

    def table(self, key: str) -> dict[str, Any]:
        """The ``wandb.Table`` logged as ``key`` (``columns``, ``data``)."""
        entry = self.logged[key]
        return json.loads((self.folder / "files" / entry["path"]).read_text())

    def image(self, key: str) -> Path:
        """The PNG file of the ``wandb.Image`` logged as ``key``."""
        return self.folder / "files" / self.logged[key]["path"]


def offline_env(home: Path) -> dict[str, str | None]:
    """W&B offline and quiet, no credentials, every W&B folder under ``home`` (``None``: unset)."""
    return {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_CONSOLE": "off",
        "WANDB_API_KEY": None,
        "WANDB_DIR": None,
        "NETRC": str(home / "no-netrc"),
        **{f"WANDB_{key}_DIR": str(home / key.lower()) for key in ("CONFIG", "CACHE", "DATA")},
        "WANDB_ARTIFACT_DIR": str(home / "artifacts"),
    }


def offline_runs(folder: Path) -> list[OfflineRun]:
    """Every offline run under ``<folder>/wandb``, oldest first."""
    return [OfflineRun.read(p) for p in sorted((folder / "wandb").glob("offline-run-*"))]
