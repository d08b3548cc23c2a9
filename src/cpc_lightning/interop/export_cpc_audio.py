"""A run's model as a facebookresearch/CPC_audio checkpoint: the inverse of
:mod:`cpc_lightning.interop.cpc_audio` (arguments; its tables read backwards) and of
:mod:`cpc_lightning.interop.cpc_audio_tensors` (tensors; the same table, split instead of joined).

What CPC_audio holds, and so what is exported: the conv1d encoder with its layer sizes (kernels
10 8 4 4 4, strides 5 4 2 2 2, paddings 3 2 1 1 1, one width) and norms (``channel`` is its
``layerNorm``, ``batch``, ``instance``, ``none`` its ``ID``) on the raw 16 kHz waveform
(``encoder.standardize=false``); a GRU or LSTM context of any depth; linear (bias-free) or
CPC_audio's transformer prediction heads (8 heads, feed-forward 2048, relative positions)
predicting ``t+1..t+K``. Our score scale and temperature are folded into the heads' output
tensors, so CPC_audio's score (the dot product over D) equals our InfoNCE logit. Anything else is
refused in one line naming the key. Training settings CPC_audio has no argument for (schedule,
negative modes, ...) become notes.

Layouts: a folder in ``cpc/train.py``'s (``checkpoint_<n>.pt`` with ``gEncoder``,
``cpcCriterion``, ``optimizer``, ``best``; ``checkpoint_args.json``; ``checkpoint_logs.json``: its
``getCheckpointData`` reads all three), or a hub file ``{"config", "weights"}`` (CPC_audio's
hubconf, s3prl's ``cpc_local``), which holds no prediction heads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from cpc_lightning.errors import UserError
from cpc_lightning.interop.cpc_audio import (
    AR_MODES,
    DEFAULT_ARGS,
    NORM_MODES,
    SAMPLERS,
    TRANSFORMER_DROPOUT,
    TRANSFORMER_HEADS,
    CPCAudioCheckpoint,
)
from cpc_lightning.interop.cpc_audio_tensors import export_optimizer, export_state
from cpc_lightning.model.encoders.audio import Conv1dEncoder
from cpc_lightning.model.heads import PredictionHeads
from cpc_lightning.model.module import CPCModule
from cpc_lightning.model.transformer_heads import TransformerHeads

#: CPC_audio's encoder layers (``cpc/model.py`` ``CPCEncoder``).
ENCODER_LAYERS = {
    "kernels": [10, 8, 4, 4, 4],
    "strides": [5, 4, 2, 2, 2],
    "paddings": [3, 2, 1, 1, 1],
}
#: Its prediction transformer's fixed feed-forward width and its rate (``cpc/transformers.py``).
TRANSFORMER_FF, SAMPLE_RATE, HOP = 2048, 16000, 160
#: Our names -> CPC_audio's: the import tables read backwards.
NORM_ARGS = {ours: theirs for theirs, ours in NORM_MODES.items()}
SAMPLER_ARGS = {ours: theirs for theirs, ours in SAMPLERS.items()}
#: The files of a ``cpc/train.py`` folder besides its checkpoints.
ARGS_FILE, LOGS_FILE = "checkpoint_args.json", "checkpoint_logs.json"
#: Where a refused model still goes.
ELSEWHERE = "or export to=safetensors, which keeps any model"
HUB_FIX = "export a hub file instead (out=<file>.pt: CPC_audio's hub layout holds no heads)"


def _refuse(key: str, value: Any, why: str, fix: str) -> UserError:
    return UserError(f"{key}={value} {why}: {fix}")


def _first_failed(rules: list[tuple[str, Any, bool, str, str]]) -> None:
    """Raise for the first ``(key, value, ok, why, fix)`` rule that is not ok."""
    for key, value, ok, why, fix in rules:
        if not ok:
            raise _refuse(key, value, why, fix)


def _check_encoder(cfg: DictConfig, model: CPCModule) -> None:
    enc, target = model.encoder, cfg.encoder.get("_target_")
    if model.modality != "audio" or not isinstance(enc, Conv1dEncoder):
        why = "is an image model" if model.modality != "audio" else "has no CPC_audio counterpart"
        raise _refuse("encoder._target_", target, why, f"train with encoder=conv1d, {ELSEWHERE}")
    norm, width = str(cfg.encoder.get("norm")), enc.net[0].out_channels
    rate = int(cfg.get("data", {}).get("sample_rate", SAMPLE_RATE) or SAMPLE_RATE)
    layers = {key: list(getattr(enc, key)) for key in ENCODER_LAYERS}
    rules = [
        *(
            (f"encoder.{key}", layers[key], layers[key] == want, f"is not CPC_audio's {want}",
             "train with CPC_audio's layers")
            for key, want in ENCODER_LAYERS.items()
        ),
        ("encoder.out_dim", enc.out_dim, enc.out_dim == width,
         f"differs from encoder.hidden_dim={width} (CPC_audio's layers share one width)",
         "train with one width"),
        ("encoder.in_channels", cfg.encoder.get("in_channels", 1),
         int(cfg.encoder.get("in_channels", 1)) == 1, "is not 1 (CPC_audio reads mono)",
         "train on mono audio"),
        ("encoder.standardize", "true", not enc.standardize, "cannot be exported (CPC_audio "
         "feeds the waveform as is; per-window scaling has no weights to fold into)",
         "train with encoder.standardize=false"),
        ("encoder.norm", norm, norm in NORM_ARGS, f"has no CPC_audio mode ({', '.join(NORM_ARGS)})",
         "train with encoder.norm=channel (CPC_audio's layerNorm: unbiased variance)"),
        ("data.sample_rate", rate, rate == SAMPLE_RATE, "is not CPC_audio's 16 kHz",
         "train at 16 kHz"),
    ]  # fmt: skip
    _first_failed([(k, v, ok, why, f"{fix}, {ELSEWHERE}") for k, v, ok, why, fix in rules])


def _check_context(cfg: DictConfig, model: CPCModule) -> str:
    """The ``arMode`` of the context, or a refusal."""
    rnn = getattr(model.context, "rnn", None)
    mode = type(rnn).__name__
    own = {f"rnn.{k}" for k in rnn.state_dict()} if rnn is not None else set()
    plain = rnn is not None and not rnn.bidirectional and rnn.bias and not rnn.proj_size
    if mode not in AR_MODES or not plain or set(model.context.state_dict()) != own:
        why = "has no CPC_audio counterpart (a GRU or LSTM)"
        fix = f"train with context=gru or context=lstm, {ELSEWHERE}"
        raise _refuse("context._target_", cfg.context.get("_target_"), why, fix)
    return mode


def _check_heads(cfg: DictConfig, model: CPCModule) -> str:
    """The ``rnnMode`` of heads CPC_audio's criterion can load, or a refusal."""
    heads, offset = model.heads, int(cfg.model.get("step_offset", 0))
    linear, transformer = isinstance(heads, PredictionHeads), isinstance(heads, TransformerHeads)
    rules = [
        ("model.step_offset", offset, offset == 0, "is not CPC_audio's (it predicts t+1..t+K)"),
        ("heads._target_", cfg.heads.get("_target_"), linear or transformer,
         "has no CPC_audio counterpart (linear or transformer)"),
        ("heads.num_sets", getattr(heads, "num_sets", 1), getattr(heads, "num_sets", 1) == 1,
         "is not 1"),
    ]  # fmt: skip
    if linear:
        rules.append(("heads.bias", "true", heads.maps[0].bias is None, "has no CPC_audio "
                      "counterpart (its linear predictors are bias-free)"))  # fmt: skip
    if transformer:
        layer, spec = heads.sets[0][0], "CPC_audio's prediction transformer"
        rules += [
            ("heads.relative_positions", "false", heads.max_len is not None,
             f"differs from {spec} (relative positions)"),
            ("heads.num_heads", layer.attention.num_heads,
             layer.attention.num_heads == TRANSFORMER_HEADS,
             f"differs from {spec} ({TRANSFORMER_HEADS} heads)"),
            ("heads.ff_dim", layer.ff_in.out_features, layer.ff_in.out_features == TRANSFORMER_FF,
             f"differs from {spec} (feed-forward {TRANSFORMER_FF})"),
        ]  # fmt: skip
    _first_failed([(*rule, HUB_FIX) for rule in rules])
    return "linear" if linear else "transformer"


def _training_args(cfg: DictConfig, notes: list[str]) -> dict[str, Any]:
    """CPC_audio's training arguments from ours; what it cannot express is noted."""
    data, opt, neg = cfg.get("data", {}), cfg.model.get("optimizer") or {}, cfg.negatives
    sampler = SAMPLER_ARGS.get(str(data.get("sampler")))
    if sampler is None:
        notes.append(f"data.sampler={data.get('sampler')} has no CPC_audio sampler: uniform")
    if str(neg.get("mode")) != "batch":
        notes.append(f"negatives.mode={neg.get('mode')}: CPC_audio draws from the whole batch")
    count = neg.get("num_negatives")
    if not isinstance(count, int):
        notes.append(f"negatives.num_negatives={count}: CPC_audio draws a count (128 written)")
    if not str(opt.get("_target_", "")).endswith(".Adam"):
        notes.append(f"model.optimizer={opt.get('_target_')}: CPC_audio trains with Adam")
    if cfg.model.get("scheduler"):
        notes.append("the learning-rate schedule has no CPC_audio argument: constant lr")
    betas = list(opt.get("betas", [0.9, 0.999]))
    return {
        "learningRate": float(opt.get("lr", 2e-4)),
        "beta1": float(betas[0]),
        "beta2": float(betas[1]),
        "epsilon": float(opt.get("eps", 1e-8)),
        "schedulerStep": -1,
        "schedulerRamp": None,
        "samplingType": sampler or "uniform",
        "negativeSamplingExt": int(count) if isinstance(count, int) else 128,
        "batchSizeGPU": int(data.get("batch_size", 8)),
        "nGPU": 1,
        "random_seed": int(cfg.seed) if isinstance(cfg.get("seed"), int) else None,
    }


def cpc_audio_args(cfg: DictConfig, model: CPCModule, with_heads: bool) -> tuple[dict, list[str]]:
    """CPC_audio's arguments for ``model`` (``checkpoint_args.json`` / a hub file's ``config``),
    and notes; a :class:`UserError` naming the key of what CPC_audio cannot hold (the heads are
    checked only ``with_heads``)."""
    _check_encoder(cfg, model)
    ar_mode, notes = _check_context(cfg, model), []
    if with_heads:
        rnn_mode = _check_heads(cfg, model)
    else:
        rnn_mode = "transformer" if isinstance(model.heads, TransformerHeads) else "linear"
    k, window = model.prediction_steps, int(cfg.get("data", {}).get("window", 20480))
    if rnn_mode == "transformer" and getattr(model.heads, "max_len", None):
        size = (int(model.heads.max_len) + k) * HOP  # CPC_audio's transformer length: window - K
        if size != window:
            notes.append(f"sizeWindow={size} (heads.max_len + K frames), not data.window={window}")
        window = size
    dropout = float(getattr(model.heads.drop, "p", 0.0))
    if dropout not in (0.0, 0.5):
        notes.append(f"heads.output_dropout={dropout}: CPC_audio's --dropout is 0.5 or off")
    if rnn_mode == "transformer" and float(cfg.heads.get("dropout", 0.1)) != TRANSFORMER_DROPOUT:
        notes.append(f"heads.dropout={cfg.heads.dropout}: CPC_audio's transformer uses 0.1")
    return {
        **DEFAULT_ARGS,
        "hiddenEncoder": int(model.encoder.out_dim),
        "hiddenGar": int(model.context.out_dim),
        "nPredicts": int(k),
        "sizeWindow": window,
        "encoder_type": "cpc",
        "normMode": NORM_ARGS[str(cfg.encoder.norm)],
        "arMode": ar_mode,
        "nLevelsGRU": int(model.context.rnn.num_layers),
        "rnnMode": rnn_mode,
        "dropout": dropout > 0,
        "abspos": False,
        "cpc_mode": None,
        "speakerEmbedding": 0,
        "supervised": False,
        "load": None,
        **_training_args(cfg, notes),
    }, notes


def score_factor(model: CPCModule) -> float:
    """What the heads' output is multiplied by so that CPC_audio's score, the dot product over
    D, equals our InfoNCE logit (``score_factor * z . pred / temperature``)."""
    ours = float(getattr(model.heads, "score_factor", 1.0)) / float(model.temperature)
    return ours * int(model.encoder.out_dim)


def export_checkpoint(
    cfg: DictConfig, model: CPCModule, lightning: dict[str, Any], hub: bool
) -> tuple[CPCAudioCheckpoint, list[str]]:
    """``model`` (of a run with config ``cfg`` and Lightning checkpoint ``lightning``) as a
    CPC_audio checkpoint in memory (a hub file when ``hub``: no heads, no optimizer), and
    notes."""
    args, notes = cpc_audio_args(cfg, model, with_heads=not hub)
    factor = score_factor(model)
    weights, criterion = export_state(model, with_heads=not hub, factor=factor)
    epoch = int(lightning.get("epoch") or 0)
    source = lightning.get("converted_from") or {}
    if not lightning.get("global_step") and isinstance(source.get("epoch"), int):
        epoch = source["epoch"]  # a converted run not trained since: its own epoch again
    if hub:
        notes.append("a hub file holds no prediction heads")
        return CPCAudioCheckpoint(Path("hub.pt"), "hub", args, weights, epoch=epoch), notes
    states = lightning.get("optimizer_states") or []
    state = states[0] if states and factor == 1.0 else None
    optimizer, why = export_optimizer(model, state, criterion, weights)
    if factor != 1.0:
        why = f"heads rescaled by {factor:g} (score scale, temperature): Adam starts fresh"
    notes.append(why)
    path = Path(f"checkpoint_{epoch}.pt")
    return CPCAudioCheckpoint(path, "train_run", args, weights, criterion, optimizer, epoch), notes


def write_train_run(folder: Path, ckpt: CPCAudioCheckpoint, global_step: int = 0) -> Path:
    """Write ``ckpt`` into ``folder`` as ``cpc/train.py`` does; return the checkpoint's path."""
    path = folder / f"checkpoint_{ckpt.epoch}.pt"
    data = {
        "gEncoder": ckpt.model,
        "cpcCriterion": ckpt.criterion or {},
        "optimizer": ckpt.optimizer,
        "best": ckpt.model,
    }
    torch.save(data, path)
    (folder / ARGS_FILE).write_text(json.dumps(ckpt.args, indent=2))
    logs = {"epoch": list(range(int(ckpt.epoch or 0) + 1)), "iter": global_step, "saveStep": 5}
    (folder / LOGS_FILE).write_text(json.dumps(logs))
    return path


def write_hub(path: Path, ckpt: CPCAudioCheckpoint) -> Path:
    """Write ``ckpt`` as a hub file ``{"config", "weights"}`` at ``path`` (a temporary file
    beside it, renamed)."""
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        torch.save({"config": ckpt.args, "weights": ckpt.model}, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
