"""User errors and the start-up checks: one message naming the key, the value and the fix.

Entry points print a :class:`UserError` as one line (``cpc_lightning.<entry>: error: ...``) and
exit with code 2; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any, NoReturn

from hydra.errors import InstantiationException
from omegaconf import DictConfig


class UserError(Exception):
    """A mistake in the configuration or the input data, reported as one message."""


def _root_cause(exc: BaseException) -> BaseException:
    while isinstance(exc, InstantiationException) and exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


@contextlib.contextmanager
def user_errors(where: str) -> Iterator[None]:
    """Turn configuration/data errors raised while building ``where`` into :class:`UserError`."""
    try:
        yield
    except UserError:
        raise
    except InstantiationException as exc:
        cause = _root_cause(exc)
        if isinstance(cause, (ValueError, FileNotFoundError, NotADirectoryError, KeyError)):
            raise UserError(f"{where}: {cause}") from exc
        raise UserError(f"{where}: {exc}") from exc
    except (ValueError, FileNotFoundError, NotADirectoryError) as exc:
        raise UserError(f"{where}: {exc}") from exc


def exit_with(entry: str, exc: UserError) -> NoReturn:
    """Print ``exc`` as the one-line error of ``entry`` and exit with code 2."""
    print(f"{entry}: error: {exc}", file=sys.stderr)
    sys.exit(2)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_config(cfg: DictConfig) -> None:
    """Fail early, with the offending key and value, on model values that cannot work."""
    k = cfg.model.prediction_steps
    if not _is_int(k) or k < 1:
        raise UserError(f"model.prediction_steps={k!r} must be an integer >= 1 (paper audio: 12)")
    off = cfg.model.get("step_offset", 0)
    if not _is_int(off) or off < 0:
        raise UserError(f"model.step_offset={off!r} must be an integer >= 0")
    n = cfg.negatives.num_negatives
    if not _is_int(n) or n < 1:
        raise UserError(f"negatives.num_negatives={n!r} must be an integer >= 1 (paper: 128)")


def check_data_fits_model(model: Any, datamodule: Any) -> None:
    """Same modality; audio windows long enough for the encoder and K; image grids tall enough
    for K; speakers present where the negatives need them."""
    data, enc = datamodule.modality, model.modality
    if data != enc:
        raise UserError(
            f"encoder {type(model.encoder).__name__} reads {enc} but data "
            f"{type(datamodule).__name__} is {data}: pick an {data} encoder "
            f"({'encoder=conv1d' if data == 'audio' else 'encoder=resnet'}) or other data"
        )
    need = model.steps[-1] + 1
    if data == "audio":
        _check_window(model, datamodule, need)
    else:
        rows = int(datamodule.grid_size)
        if rows < need:
            raise UserError(
                f"model.prediction_steps={model.prediction_steps} with model.step_offset="
                f"{model.step_offset} predicts {model.steps[-1]} rows ahead, but the patch grid "
                f"has {rows} rows: lower model.prediction_steps to at most "
                f"{rows - 1 - model.step_offset} or make the grid larger (data.image_size, "
                "data.patch_size, data.stride)"
            )
    if model.negatives.needs_speakers and not datamodule.provides_speakers:
        raise UserError(
            f"negatives={model.negatives.mode} needs speaker ids per sequence, but "
            f"{type(datamodule).__name__} provides none: use data=librispeech or "
            "data=synthetic_speech, or give data.pattern a (?P<speaker>...) group"
        )


def _check_window(model: Any, datamodule: Any, need: int) -> None:
    encoder, window = model.encoder, int(datamodule.window)
    if not hasattr(encoder, "num_frames"):
        return
    field = encoder.receptive_field
    frames = encoder.num_frames(window)
    if window < field or frames < need:
        raise UserError(
            f"data.window={window} samples is too short: the encoder's receptive field is "
            f"{field} samples and predicting {model.steps[-1]} steps ahead needs at least "
            f"{need} frames ({need * encoder.downsampling} samples); "
            f"got {frames} frames. Raise data.window or lower model.prediction_steps"
        )
    max_len, anchors = getattr(model.heads, "max_len", None), frames - model.steps[-1]
    if max_len is not None and anchors > max_len:
        raise UserError(
            f"data.window={window} samples gives {anchors} anchors per sequence, but the "
            f"prediction heads learned relative positions for heads.max_len={max_len}: raise "
            "heads.max_len or lower data.window"
        )
