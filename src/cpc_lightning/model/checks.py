"""Start-up checks of a model: its config values, and whether its data fits it.

Each part checks its own requirements: :func:`~cpc_lightning.model.negatives.check_num_negatives`
and :meth:`NegativeSampler.check <cpc_lightning.model.negatives.NegativeSampler.check>` (speakers,
batches that hold the negatives), :func:`~cpc_lightning.model.heads.check_anchors` (the heads'
``max_len``), an audio encoder's ``receptive_field``/``num_frames``; this module adds what
belongs to the model as a whole (modality, ``prediction_steps``/``step_offset`` against the
window or the grid) and calls them in order. Every check raises ``ValueError`` with one line
naming key, value and fix; ``build`` turns it into a ``UserError`` with the same message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from cpc_lightning.model.heads import check_anchors
from cpc_lightning.model.module import CPCModule
from cpc_lightning.model.negatives import check_num_negatives


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_model_config(cfg: Mapping[str, Any]) -> None:
    """Model values of a composed config (``model.prediction_steps``, ``model.step_offset``,
    ``negatives.num_negatives``) that cannot work, before any part is built."""
    k = cfg["model"]["prediction_steps"]
    if not _is_int(k) or k < 1:
        raise ValueError(f"model.prediction_steps={k!r} must be an integer >= 1 (paper audio: 12)")
    off = cfg["model"].get("step_offset", 0)
    if not _is_int(off) or off < 0:
        raise ValueError(f"model.step_offset={off!r} must be an integer >= 0")
    check_num_negatives(cfg["negatives"]["num_negatives"])


def check_data(model: CPCModule, datamodule: Any) -> None:
    """Same modality; audio windows long enough for the encoder and K (and within the heads'
    ``max_len``); image grids tall enough for K; the negatives' needs (speakers, batches)."""
    check_context(model)
    check_modality(model, datamodule)
    if datamodule.modality == "audio":
        check_window(model, int(datamodule.window))
    else:
        check_grid(model, int(datamodule.grid_size))
    model.negatives.check(datamodule)


def check_modality(model: CPCModule, datamodule: Any, what: str | None = None) -> None:
    """The data's modality is the encoder's. ``what`` names the model of a trained run (then
    the fix is other data, not another encoder)."""
    data, enc = datamodule.modality, model.modality
    if data == enc:
        return
    fix = (
        f"{what} is an {enc} model: give {enc} data (data=<an {enc} option> data.root=...) or "
        f"an {data} run"
        if what
        else f"pick an {data} encoder "
        f"({'encoder=conv1d' if data == 'audio' else 'encoder=resnet'}) or other data"
    )
    raise ValueError(
        f"encoder {type(model.encoder).__name__} reads {enc} but data "
        f"{type(datamodule).__name__} is {data}: {fix}"
    )


def check_context(model: CPCModule) -> None:
    """A grid context (``grid = True``: masked convolutions over rows) needs an image encoder."""
    if model.modality == "audio" and getattr(model.context, "grid", False):
        raise ValueError(
            f"context {type(model.context).__name__} reads image patch grids but encoder "
            f"{type(model.encoder).__name__} is audio: pick an audio context (context=gru, "
            "context=lstm or context=transformer) or image data"
        )


def check_window(model: CPCModule, window: int) -> None:
    """Audio windows of ``window`` samples: at least the encoder's receptive field and enough
    frames for the furthest step; no more anchors than the heads support. Encoders without
    ``num_frames`` (and ``receptive_field``, ``downsampling``) are not checked."""
    encoder: nn.Module = model.encoder
    if not hasattr(encoder, "num_frames"):
        return
    furthest = model.steps[-1]
    need, field, frames = furthest + 1, encoder.receptive_field, encoder.num_frames(window)
    if window < field or frames < need:
        raise ValueError(
            f"data.window={window} samples is too short: the encoder's receptive field is "
            f"{field} samples and predicting {furthest} steps ahead needs at least "
            f"{need} frames ({need * encoder.downsampling} samples); "
            f"got {frames} frames. Raise data.window or lower model.prediction_steps"
        )
    # anchors t < T - K_max, or with model.all_anchors every t < T - k_min
    nearest = model.steps[0] if getattr(model, "all_anchors", False) else furthest
    check_anchors(model.heads, frames - nearest, window)


def check_grid(model: CPCModule, rows: int) -> None:
    """An image patch grid of ``rows`` rows: tall enough to predict the furthest step."""
    if rows < model.steps[-1] + 1:
        raise ValueError(
            f"model.prediction_steps={model.prediction_steps} with model.step_offset="
            f"{model.step_offset} predicts {model.steps[-1]} rows ahead, but the patch grid "
            f"has {rows} rows: lower model.prediction_steps to at most "
            f"{rows - 1 - model.step_offset} or make the grid larger (data.image_size, "
            "data.patch_size, data.stride)"
        )
