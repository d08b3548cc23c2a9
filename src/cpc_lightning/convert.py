"""``python -m cpc_lightning.convert from=cpc_audio checkpoint=<file | run dir> out=<run dir>``.

Writes another tool's checkpoint as a cpc_lightning run dir (see
:mod:`cpc_lightning.interop.run_dir`): ``evaluate``, ``extract`` and ``train resume=`` then take
it like any other. The architecture comes from the checkpoint's own arguments; any other
``train`` override given here (``data=...``, ``trainer=...``) is saved in the run dir.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from cpc_lightning.cli import entry_point
from cpc_lightning.errors import UserError
from cpc_lightning.interop.run_dir import convert_cpc_audio, write_run_dir

log = logging.getLogger("cpc_lightning.convert")

FORMATS = ("cpc_audio",)
#: Keys of this entry point (not passed on to the ``train`` config).
OWN_KEYS = ("from", "checkpoint", "out", "new_heads")


def train_overrides(task_overrides: list[str]) -> list[str]:
    """The command line's overrides that are ``train``'s (this entry's own keys left out)."""
    out = []
    for override in task_overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key not in OWN_KEYS and not key.startswith("hydra"):
            out.append(override)
    return out


def convert(cfg: DictConfig, overrides: list[str]) -> Path:
    """Convert ``cfg.checkpoint`` into the run dir ``cfg.out``; return its path."""
    if cfg["from"] not in FORMATS:
        raise UserError(f"from={cfg['from']} is not a known format ({', '.join(FORMATS)})")
    if not cfg.get("checkpoint"):
        raise UserError("checkpoint=<file or CPC_audio run dir> is required")
    if not cfg.get("out"):
        raise UserError("out=<folder> is required (the run dir to write)")
    out = Path(str(cfg.out)).expanduser().resolve()
    converted = convert_cpc_audio(cfg.checkpoint, overrides, cfg.get("new_heads"), out)
    write_run_dir(converted, out)
    for note in converted.notes:
        log.info("note: %s", note)
    src = converted.source
    print(f"converted {src.layout} checkpoint {src.source} (epoch {src.epoch}) into {out}")
    return out


@entry_point("cpc_lightning.convert", "convert")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    convert(cfg, train_overrides(list(HydraConfig.get().overrides.task)))


if __name__ == "__main__":
    main()
