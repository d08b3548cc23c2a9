"""Dataset roots: one rule for every DataModule."""

from __future__ import annotations

import os
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.utils import to_absolute_path

#: What to tell a user whose dataset folder is missing.
ROOT_HINT = (
    "set data.root=/path/to/dataset (the fsdd, speech_commands and cifar10_patches presets look "
    "under data_dir, which defaults to $CPC_DATA_DIR or ./data)"
)


def resolve_root(root: str | os.PathLike[str] | None, what: str = "data.root") -> Path:
    """Absolute dataset root; a relative path is taken against Hydra's launch directory when
    Hydra runs (else the working directory). ``None``/``???`` is a clear error naming ``what``."""
    if root is None or str(root) in ("", "???"):
        raise ValueError(f"{what} is required: {ROOT_HINT}")
    text = os.path.expanduser(os.fspath(root))
    if not os.path.isabs(text) and HydraConfig.initialized():
        text = to_absolute_path(text)
    return Path(text).resolve()


def require_dir(root: Path, layout: str) -> None:
    """A ``FileNotFoundError`` naming ``root`` and the expected ``layout`` unless it is a folder."""
    if not root.is_dir():
        raise FileNotFoundError(
            f"data.root {root} does not exist or is not a directory; expected {layout}; "
            + ROOT_HINT
        )
