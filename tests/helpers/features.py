"""Checks shared by the feature-API tests: ``load(...).features`` against ``extract``'s files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch


def assert_api_matches_extract(model: Any, out: Path, count: int = 3) -> None:
    """For the first ``count`` files ``extract layers=all`` wrote to ``out``: the API's ``z`` and
    every ``hidden_states`` entry on that audio file equal the saved arrays (1e-5)."""
    meta = json.loads((out / "features.json").read_text())
    root = Path(meta["data_root"])
    assert [e["dir"] for e in meta["layers"]][0] == "z" and meta["files"]
    for rel in meta["files"][:count]:
        stem = root / Path(rel).with_suffix("")
        (src,) = [p for p in stem.parent.glob(stem.name + ".*") if p.suffix != ".npy"]
        wav, rate = sf.read(str(src), dtype="float32")
        got = model.features(wav, sample_rate=rate)
        outputs = [got["z"], *got["hidden_states"]]
        assert len(outputs) == len(meta["layers"])
        for entry, tensor in zip(meta["layers"], outputs, strict=True):
            saved = torch.from_numpy(np.load(out / entry["dir"] / rel))
            torch.testing.assert_close(tensor[0], saved, rtol=0, atol=1e-5)
