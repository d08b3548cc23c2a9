"""cpc_lightning: Contrastive Predictive Coding for speech and images on Lightning + Hydra.

``cpc_lightning.load(path)`` returns a frozen feature extractor (:mod:`cpc_lightning.api`).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["load"]


def __getattr__(name: str) -> Any:
    # imported on first use: `python -m cpc_lightning.<entry>` need not load the API
    if name == "load":
        from cpc_lightning.api import load

        return load
    raise AttributeError(f"module 'cpc_lightning' has no attribute {name!r}")
