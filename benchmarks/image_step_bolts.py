"""lightning-bolts' CPC v2 for ``image_step.py``, loaded from a checkout the user gives.

No bolts code lives in this repository: ``load_bolts`` imports their files from the checkout, and
``BoltsCPC`` wires their encoder and loss as their ``CPC_v2`` does.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import types
import warnings
from pathlib import Path

import torch
from torch import nn

#: Bolts' CPC v2 widths: bottleneck planes per stage and expansion per stage (its ``CPCResNet``:
#: 64/128/512/512 with x4/x4/x8/x4), its ``CPCTask`` target_dim and PixelCNN hidden width.
BOLTS_PLANES = (64, 128, 512, 512)
BOLTS_EXPANSION = (4, 4, 8, 4)
TARGET_DIM = 64
PIXELCNN_HIDDEN = 256
PIXELCNN_BLOCKS = 5


def bolts_package(root: Path) -> Path:
    """The ``pl_bolts`` folder of a checkout (``src/pl_bolts``, ``pl_bolts``, or itself)."""
    for cand in (root / "src" / "pl_bolts", root / "pl_bolts", root):
        if (cand / "models" / "self_supervised" / "cpc" / "networks.py").is_file():
            return cand
    raise SystemExit(
        f"--bolts {root}: no pl_bolts/models/self_supervised/cpc/networks.py under it; expected "
        "a lightning-bolts checkout (git clone https://github.com/Lightning-Universe/lightning-bolts)"
    )


def load_bolts(root: Path) -> tuple[types.SimpleNamespace, str]:
    """Bolts' ``CPCResNet``, ``LNBottleneck`` and ``CPCTask`` from the checkout at ``root``.

    First ``import pl_bolts`` from the checkout. Its ``__init__`` imports every bolts module
    (callbacks, datamodules, ...), and with today's Lightning some of those fail (e.g.
    ``pytorch_lightning.utilities.apply_func`` is gone). The CPC v2 pieces need none of them: then
    each parent package (``pl_bolts``, ``pl_bolts.models``, ...) is registered as an empty module
    that only knows its folder (``__path__``), so the import system loads the four files we need
    (``models/self_supervised/cpc/networks.py``, ``losses/self_supervised_learning.py``,
    ``models/vision/pixel_cnn.py`` and their decorator ``utils/stability.py``) from the checkout,
    unchanged, without running any package ``__init__.py``. Nothing else is replaced.
    """
    pkg = bolts_package(root.resolve())
    names = ("models.self_supervised.cpc.networks", "losses.self_supervised_learning")
    sys.path.insert(0, str(pkg.parent))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mods = [importlib.import_module(f"pl_bolts.{n}") for n in names]
        if Path(mods[0].__file__).resolve().is_relative_to(pkg):
            how = "imported the pl_bolts package"
            return _bolts_namespace(*mods), how
        raise ImportError(f"pl_bolts resolved to {mods[0].__file__}, not the checkout")
    except Exception as err:  # any failure of bolts' package imports: load the files alone
        reason = f"{type(err).__name__}: {err}"
    finally:
        sys.path.remove(str(pkg.parent))
    for name in [m for m in sys.modules if m == "pl_bolts" or m.startswith("pl_bolts.")]:
        del sys.modules[name]
    for parent in ("", "utils", "models", "models.vision", "models.self_supervised",
                   "models.self_supervised.cpc", "losses"):  # fmt: skip
        name = "pl_bolts" + (f".{parent}" if parent else "")
        stub = types.ModuleType(name)
        stub.__path__ = [str(pkg.joinpath(*parent.split(".")) if parent else pkg)]
        sys.modules[name] = stub
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mods = [importlib.import_module(f"pl_bolts.{n}") for n in names]
    how = f"module files by path, package __init__s skipped ({reason[:100]})"
    return _bolts_namespace(*mods), how


def _bolts_namespace(networks: types.ModuleType, losses: types.ModuleType):
    return types.SimpleNamespace(
        CPCResNet=networks.CPCResNet, LNBottleneck=networks.LNBottleneck, CPCTask=losses.CPCTask
    )


def bolts_commit(root: Path) -> str:
    """The checkout's git commit, or ``unknown`` (e.g. an exported tree)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class BoltsCPC(nn.Module):
    """Bolts' CPC v2 encoder and ``CPCTask`` on our batch layout, as their ``CPC_v2`` wires them:
    patches folded into the batch, encoder to ``(N, 2048, 1, 1)``, back to ``(B, 2048, G, G)``."""

    def __init__(self, bolts: types.SimpleNamespace, layers: list[int], channels: int, patch: int):
        super().__init__()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sample = torch.zeros(2, channels, patch, patch)
            self.encoder = bolts.CPCResNet(sample, bolts.LNBottleneck, layers)
            with torch.no_grad():
                out = self.encoder(sample)
            if out.shape[-2:] != (1, 1):
                raise SystemExit(
                    f"--patch {patch}: bolts' encoder leaves a {tuple(out.shape[-2:])} map, and "
                    "their CPC_v2 needs 1x1 per patch: use patches of at most 32 pixels"
                )
            self.task = bolts.CPCTask(num_input_channels=out.shape[1], target_dim=TARGET_DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, G, G, C, P, P)`` -> the scalar CPC loss."""
        b, g = x.shape[:2]
        z = self.encoder(x.reshape(b * g * g, *x.shape[3:]))  # (B * G * G, D, 1, 1)
        z = z.reshape(b, g * g, -1).permute(0, 2, 1).reshape(b, -1, g, g)
        return self.task(z)


def bolts_adam(model: nn.Module) -> torch.optim.Optimizer:
    """Adam with the settings of bolts' ``CPC_v2.configure_optimizers``."""
    return torch.optim.Adam(
        model.parameters(), lr=1e-4, betas=(0.8, 0.999), weight_decay=1e-5, eps=1e-7
    )
