"""``python -m cpc_lightning.prepare data=<audio option> out=<dir or URL>``: streaming shards.

Reads the corpus once with the file-based DataModule of ``data`` (its layout, labels, split and
resampling), then writes it with litdata (:mod:`cpc_lightning.data.audio.shards`). Train from
it with ``data=<same option> data.streaming=true data.root=<out>``. ``out`` is written whole or
not at all: an empty folder, or shards of the same corpus, are replaced; shards of another corpus
need ``overwrite=true``; anything else is refused (:mod:`~cpc_lightning.data.audio.shard_folder`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

from cpc_lightning.build import build_datamodule
from cpc_lightning.cli import entry_point
from cpc_lightning.data.audio.shard_folder import check_out, parse_size
from cpc_lightning.data.audio.shards import is_url, require_litdata, write_shards
from cpc_lightning.errors import UserError, user_errors

log = logging.getLogger("cpc_lightning.prepare")


def prepare(cfg: DictConfig) -> dict[str, Any]:
    """Write the shards of ``cfg.data`` to ``cfg.out``; return the manifest."""
    if not cfg.get("out"):
        raise UserError("out is required: out=<folder or object-store URL> for the shards")
    if cfg.data.get("modality", "audio") != "audio" and "window" not in cfg.data:
        raise UserError(f"data={cfg.data.get('_target_')}: prepare writes audio corpora only")
    if cfg.data.get("streaming"):
        raise UserError("data.streaming=true: prepare reads the original files; drop it here")
    require_litdata()
    out = str(cfg.out) if is_url(str(cfg.out)) else to_absolute_path(str(cfg.out))
    source = OmegaConf.to_container(cfg.data, resolve=True)
    check_out(out, source, bool(cfg.get("overwrite")))  # before the corpus is read
    parse_size(cfg.chunk_bytes)
    datamodule = build_datamodule(cfg.data)  # the file-based one: streaming is refused above
    with user_errors("data"):
        if getattr(datamodule, "modality", None) != "audio":
            raise UserError(f"data={type(datamodule).__name__}: prepare writes audio corpora only")
        datamodule.prepare_data()
        datamodule.setup("fit")
    start = time.perf_counter()
    manifest = write_shards(
        datamodule,
        out,
        num_workers=int(cfg.num_workers),
        chunk_bytes=cfg.chunk_bytes,
        dtype=str(cfg.dtype),
        source=source,
        overwrite=bool(cfg.get("overwrite")),
    )
    counts = {s: len(v) for s, v in manifest["splits"].items()}
    log.info(
        "wrote %s utterances (train %d, test %d) to %s in %.1f s; train with "
        "data.streaming=true data.root=%s",
        sum(counts.values()),
        counts["train"],
        counts["test"],
        out,
        time.perf_counter() - start,
        out,
    )
    return manifest


@entry_point("cpc_lightning.prepare", "prepare")
def main(cfg: DictConfig) -> None:
    """Hydra entry point; a configuration or data mistake exits with code 2."""
    prepare(cfg)


if __name__ == "__main__":
    main()
