"""Reading checkpoint files: what is wrong with one, and the newest intact one in a folder.

Shared by ``runs`` (resume, ``evaluate``/``extract``), ``training/rerun.py`` and the divergence
guard, ``convert`` and ``cpc_lightning.load`` (:func:`check_torch_file`). Imports only ``run_dir``
and ``errors`` of cpc_lightning (leaves: every layer may use this module without a circle).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from cpc_lightning.errors import UserError
from cpc_lightning.run_dir import LAST_CHECKPOINT

#: What a checkpoint must hold to resume training (Lightning's full training state).
TRAINING_KEYS = ("state_dict", "optimizer_states", "loops", "global_step")


#: How every file ``torch.save`` writes begins: a zip archive (since torch 1.6) or a pickle.
TORCH_FILE_STARTS = (b"PK\x03\x04", b"\x80")


def check_torch_file(path: Path, label: str = "checkpoint=", hint: str = "") -> None:
    """Refuse, as one :class:`UserError` naming ``<label><path>``, a file that ``torch.save`` did
    not write (a text file, ...) before unpickling it: unpickling arbitrary bytes fails in any way
    (or imports modules it names). ``hint`` says what to give instead."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as err:
        raise UserError(f"{label}{path} cannot be read ({err.strerror or err})") from err
    if not head.startswith(TORCH_FILE_STARTS):
        raise UserError(
            f"{label}{path} is not a file written by torch.save (it starts with {head[:8]!r}, "
            f"not a zip archive or a pickle){': ' + hint if hint else ''}"
        )


def load_checkpoint(path: Path, mmap: bool) -> Any:
    """``torch.load`` of ``path`` on the CPU (memory-mapped if ``mmap`` and the format allows)."""
    if mmap:
        try:
            return torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        except Exception:  # noqa: BLE001 - legacy format or damaged: a plain load tells which
            pass
    return torch.load(path, map_location="cpu", weights_only=False)


def load_error_problem(err: BaseException) -> str:
    """What a failure to load a checkpoint says about the file (for a message)."""
    text = str(err)
    if isinstance(err, PermissionError):
        return "cannot be read (permission denied)"
    if isinstance(err, (EOFError, OSError)) or any(
        s in text for s in ("central directory", "PytorchStreamReader", "unexpected EOF")
    ):
        return "is truncated or damaged (not a complete checkpoint archive; an interrupted copy?)"
    if isinstance(err, (pickle.UnpicklingError, ValueError, UnicodeDecodeError)):
        return "is not a checkpoint (its content is not a torch-saved file)"
    return f"cannot be read ({type(err).__name__})"


def checkpoint_problem(path: Path, keys: tuple[str, ...] = ("state_dict",)) -> str | None:
    """What is wrong with checkpoint ``path`` (None: it loads and holds ``keys``)."""
    try:
        state = load_checkpoint(path, mmap=True)
    except Exception as err:  # noqa: BLE001 - any failure to load is the answer
        return load_error_problem(err)
    if not isinstance(state, dict):
        return f"is a torch file but not a checkpoint (it holds a {type(state).__name__})"
    missing = [k for k in keys if k not in state]
    if "converted_from" in state:  # `convert` writes a step-0 start: no loop state by design
        missing = [k for k in missing if k != "loops"]
    if missing:
        return f"is not a full training checkpoint (no {', '.join(missing)})"
    return None


def newest_intact_checkpoint(
    folder: Path, exclude: Path | None = None, before_step: int | None = None
) -> tuple[Path, int] | None:
    """The checkpoint in ``folder`` with the highest global step (below ``before_step``) among
    those that load as training checkpoints, with that step; None if there is none. Of two at
    the same step, a step file is preferred to the last checkpoint (a name a later run replaces)."""
    best: tuple[int, bool, int, Path] | None = None
    for path in Path(folder).glob("*.ckpt"):
        if path == exclude or checkpoint_problem(path, TRAINING_KEYS) is not None:
            continue
        step = int(load_checkpoint(path, mmap=True).get("global_step", -1))
        if before_step is not None and step >= before_step:
            continue
        key = (step, path.name != LAST_CHECKPOINT, path.stat().st_mtime_ns, path)
        best = key if best is None or key[:3] > best[:3] else best
    return None if best is None else (best[3], best[0])


def checkpoint_global_step(path: Path) -> int | None:
    """The global step a (readable) checkpoint was written at."""
    step = load_checkpoint(path, mmap=True).get("global_step")
    return None if step is None else int(step)
