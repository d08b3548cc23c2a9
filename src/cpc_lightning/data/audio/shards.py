"""Streaming shards on disk: writing them (``prepare``) and reading their manifest.

``python -m cpc_lightning.prepare data=<audio option> out=<dir or URL>`` decodes and resamples
every utterance once and writes ``<out>/train`` and ``<out>/test`` (litdata chunks, one item per
utterance, :mod:`~cpc_lightning.data.audio.shard_items`) and ``<out>/cpc_manifest.json`` (label
names, the records with their labels and split, counts, the source config).
:class:`~cpc_lightning.data.audio.streaming.StreamingAudioDataModule` trains from it.
litdata is an optional extra (``pip install 'cpc_lightning[streaming]'``): it is imported only
where shards are written or read.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import tempfile
from collections.abc import Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from cpc_lightning.data.audio.shard_folder import (
    MANIFEST,
    SPLITS,
    check_out,
    chunk_size,
    is_url,
    staging,
)
from cpc_lightning.data.audio.shard_items import encode_item, record_entry
from cpc_lightning.errors import UserError

FORMAT_VERSION = 1


def require_litdata() -> Any:
    """The ``litdata`` module, or one clear error naming the extra to install."""
    try:
        import litdata  # optional extra: imported only when shards are used
    except ImportError as err:
        raise UserError(
            "streaming shards need litdata: pip install 'cpc_lightning[streaming]' "
            f"(import failed: {err})"
        ) from err
    return litdata


def join(root: str, *parts: str) -> str:
    """``root/parts`` for a local folder or an object-store URL."""
    return "/".join([str(root).rstrip("/"), *parts])


def write_shards(
    datamodule: Any,
    out: str,
    num_workers: int = 1,
    chunk_bytes: str = "64MB",
    dtype: str = "int16",
    source: Mapping[str, Any] | None = None,
    start_method: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write ``datamodule``'s splits as litdata shards under ``out``; return the manifest.

    Everything is checked before anything is written (:func:`check_out`, ``dtype``,
    ``chunk_bytes`` against the largest utterance); a local ``out`` is written as a temporary
    sibling folder renamed into place at the end, so a failure leaves ``out`` as it was.
    ``start_method``: of the writer processes (litdata's default, ``spawn``, re-imports in each;
    ``fork`` starts faster where the caller has not started threads that hold locks).
    """
    litdata = require_litdata()
    if dtype not in ("int16", "float32"):
        raise UserError(f"dtype={dtype!r} must be int16 or float32")
    check_out(out, source or {}, overwrite)
    records = {split: _records(datamodule, split) for split in SPLITS}
    size = chunk_size(chunk_bytes, records, dtype)
    with staging(out) as target:
        for split, recs in records.items():
            if recs:
                fn = partial(encode_item, records=recs, reader=datamodule.reader, dtype=dtype)
                _optimize(litdata, fn, len(recs), join(target, split), size, num_workers,
                          start_method)  # fmt: skip
        manifest = _manifest(datamodule, records, dtype, source)
        _put_text(join(target, MANIFEST), json.dumps(manifest))
    return manifest


def _records(datamodule: Any, split: str) -> list[Any]:
    records = datamodule.items(split)
    if datamodule.short == "skip":  # never used at this window: leave them out
        records = [r for r in records if r.num_samples >= datamodule.window]
    return records


def _manifest(
    datamodule: Any, records: dict[str, list[Any]], dtype: str, source: Mapping[str, Any] | None
) -> dict[str, Any]:
    splits = {split: [record_entry(r) for r in recs] for split, recs in records.items()}
    return {
        "format": FORMAT_VERSION,
        "sample_rate": datamodule.sample_rate,
        "dtype": dtype,
        "window": datamodule.window,
        "short": datamodule.short,
        "speakers": list(datamodule.speakers),
        "classes": list(datamodule.classes),
        "num_phones": int(datamodule.num_phones),
        "phone_names": list(datamodule.phone_names),
        "provides_speakers": bool(datamodule.provides_speakers),
        "stats": dict(datamodule.stats),
        "source": dict(source or {}),
        "splits": splits,
    }


def _optimize(
    litdata: Any,
    fn: Any,
    count: int,
    output_dir: str,
    chunk_bytes: int,
    num_workers: int,
    start_method: str | None,
) -> None:
    """One split's items ``fn(0..count-1)`` written in order to ``output_dir``."""
    with _optimizer_env():
        litdata.optimize(
            fn=fn,
            inputs=list(range(count)),
            output_dir=output_dir,
            chunk_bytes=chunk_bytes,
            num_workers=max(int(num_workers), 1),
            keep_data_ordered=True,  # item position = record position (random access)
            mode="overwrite",
            verbose=False,
            start_method=start_method,
        )
    if not is_url(output_dir) and not Path(join(output_dir, "index.json")).is_file():
        raise UserError(
            f"litdata wrote no {join(output_dir, 'index.json')}: see its messages above (a "
            "script calling write_shards needs an `if __name__ == '__main__':` guard)"
        )


@contextlib.contextmanager
def _optimizer_env() -> Iterator[None]:
    """Undo what ``litdata.optimize`` changes in this process: it forces the multiprocessing
    start method to ``spawn`` (every later DataLoader worker would re-import everything:
    loaders then ran at a few items a second, measured) and sets ``DATA_OPTIMIZER_*``."""
    method = multiprocessing.get_start_method(allow_none=True)
    before = {k: v for k, v in os.environ.items() if k.startswith("DATA_OPTIMIZER_")}
    try:
        yield
    finally:
        multiprocessing.set_start_method(method, force=True)
        for key in [k for k in os.environ if k.startswith("DATA_OPTIMIZER_")]:
            del os.environ[key]
        os.environ.update(before)


def _put_text(target: str, text: str) -> None:
    if not is_url(target):
        tmp = f"{target}.{os.getpid()}.tmp"
        Path(tmp).write_text(text)
        os.replace(tmp, target)
        return
    # optional extra: litdata's object-store client, only for a URL
    from litdata.streaming.fs_provider import _get_fs_provider

    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / MANIFEST
        local.write_text(text)
        _get_fs_provider(target).upload_file(str(local), target)


def read_manifest(root: str) -> dict[str, Any]:
    """``<root>/cpc_manifest.json`` (downloaded first for a URL), checked."""
    target = join(root, MANIFEST)
    if is_url(root):
        require_litdata()
        # optional extra: litdata's object-store client, only for a URL
        from litdata.streaming.fs_provider import _get_fs_provider

        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / MANIFEST
            _get_fs_provider(target).download_file(target, str(local))
            text = local.read_text()
    else:
        path = Path(target)
        if not path.is_file():
            raise UserError(
                f"data.root={root} has no {MANIFEST}: with data.streaming=true, data.root is the "
                "folder written by `python -m cpc_lightning.prepare data=<option> out=<dir>`"
            )
        text = path.read_text()
    manifest = json.loads(text)
    if manifest.get("format") != FORMAT_VERSION:
        raise UserError(
            f"{target} has format {manifest.get('format')!r}, this release reads "
            f"{FORMAT_VERSION}: run cpc_lightning.prepare again"
        )
    return manifest
