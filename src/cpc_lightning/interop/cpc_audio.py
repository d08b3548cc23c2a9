"""facebookresearch/CPC_audio checkpoints: its two formats, and the architecture they describe.

- a ``cpc/train.py`` run dir: ``checkpoint_<n>.pt`` (``gEncoder``: the ``CPCModel`` state dict,
  ``cpcCriterion``: the prediction network, ``optimizer``, ``best``) beside
  ``checkpoint_args.json`` (every training argument);
- a hub file (CPC_audio's ``hubconf``, the released Libri-light models): ``{"config":
  <arguments>, "weights": <CPCModel state dict>}``, without prediction heads.

Arguments a file lacks take CPC_audio's defaults, as its own loader does. :func:`plan` turns
the arguments into ``train`` config overrides, or refuses in one message naming the argument it
cannot map; the tensors are mapped by :mod:`cpc_lightning.interop.cpc_audio_tensors`.
"""

from __future__ import annotations

import json
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cpc_lightning.errors import UserError
from cpc_lightning.training.checkpoint_files import check_torch_file

#: CPC_audio's argument defaults (``cpc/cpc_default_config.py`` and ``cpc/train.py``) for the
#: arguments conversion reads.
DEFAULT_ARGS: dict[str, Any] = {
    "hiddenEncoder": 256,
    "hiddenGar": 256,
    "nPredicts": 12,
    "negativeSamplingExt": 128,
    "learningRate": 2e-4,
    "schedulerStep": -1,
    "schedulerRamp": None,
    "beta1": 0.9,
    "beta2": 0.999,
    "epsilon": 1e-8,
    "sizeWindow": 20480,
    "samplingType": "samespeaker",
    "cpc_mode": None,
    "encoder_type": "cpc",
    "normMode": "layerNorm",
    "random_seed": None,
    "speakerEmbedding": 0,
    "arMode": "LSTM",
    "nLevelsGRU": 1,
    "rnnMode": "transformer",
    "dropout": False,
    "abspos": False,
    "supervised": False,
    "batchSizeGPU": 8,
    "nGPU": 1,
    "load": None,
}
#: ``normMode`` -> ``encoder.norm``.
NORM_MODES = {
    "layerNorm": "channel",
    "batchNorm": "batch",
    "instanceNorm": "instance",
    "ID": "none",
}
#: ``arMode`` -> ``context``; the other modes CPC_audio knows have no counterpart here.
AR_MODES = {"GRU": "gru", "LSTM": "lstm"}
UNMAPPED_AR_MODES = ("RNN", "no_ar", "transformer")
#: ``rnnMode`` (the prediction network) -> ``heads``; ``None`` is CPC_audio's linear fallback.
RNN_MODES = {"transformer": "transformer", "linear": "linear", None: "linear"}
UNMAPPED_RNN_MODES = ("RNN", "LSTM", "ffd", "conv4", "conv8", "conv12")
#: ``samplingType`` -> ``data.sampler`` (CPC_audio draws negatives from the whole batch).
SAMPLERS = {"samespeaker": "same_speaker", "uniform": "uniform"}
#: CPC_audio's prediction transformer: 8 heads, attention and feed-forward dropout 0.1.
TRANSFORMER_HEADS, TRANSFORMER_DROPOUT = 8, 0.1
CHECKPOINT_FILE = re.compile(r"checkpoint_(\d+)\.pt$")


@dataclass
class CPCAudioCheckpoint:
    """One CPC_audio checkpoint, read: where from, its arguments and its state dicts."""

    source: Path
    layout: str  # "train_run" (cpc/train.py) | "hub"
    args: dict[str, Any]
    model: dict[str, torch.Tensor]  # CPCModel: gEncoder.*, gAR.*
    criterion: dict[str, torch.Tensor] | None = None  # cpcCriterion: wPrediction.*
    optimizer: dict[str, Any] | None = None
    epoch: int | None = None


@dataclass
class Plan:
    """What the arguments become: ``train`` overrides and what conversion could not keep."""

    architecture: list[str]  # encoder / context / heads / model: fixed by the tensors
    training: list[str]  # data window, batch, sampler, negatives, optimiser: user's may win
    heads: str  # linear | transformer
    heads_from_checkpoint: bool
    notes: list[str] = field(default_factory=list)


#: What a CPC_audio checkpoint path may be (the hint of a refused file).
CPC_AUDIO_FILES = "give a CPC_audio checkpoint_<n>.pt, its run dir or a hub file"


def _load(path: Path) -> Any:
    check_torch_file(path, hint=CPC_AUDIO_FILES)
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:  # objects beyond tensors and containers (older saves)
            return torch.load(path, map_location="cpu", weights_only=False)
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        OSError,
        ValueError,
        IndexError,
        KeyError,
        ImportError,
        AttributeError,
    ) as err:  # a damaged pickle fails in any of these ways
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"checkpoint={path} cannot be read by torch.load ({first})") from err


def _latest_checkpoint(folder: Path) -> tuple[Path, int]:
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_FILE.match(p.name))]
    if not found:
        raise UserError(
            f"checkpoint={folder} has no checkpoint_<n>.pt: point it at a CPC_audio cpc/train.py "
            "run dir, one of its checkpoint_<n>.pt files, or a hub file"
        )
    epoch, path = max(found)
    return path, epoch


def _strip_module(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` prefix ``nn.DataParallel`` puts on every key."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def read_checkpoint(path: str | Path) -> CPCAudioCheckpoint:
    """Read a CPC_audio run dir, ``checkpoint_<n>.pt`` (+ ``checkpoint_args.json``) or hub file."""
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise UserError(f"checkpoint={path} does not exist")
    epoch = None
    if path.is_dir():
        path, epoch = _latest_checkpoint(path)
    elif m := CHECKPOINT_FILE.match(path.name):
        epoch = int(m.group(1))
    data = _load(path)
    if isinstance(data, dict) and "config" in data and "weights" in data:
        args = {**DEFAULT_ARGS, **dict(data["config"])}
        return CPCAudioCheckpoint(path, "hub", args, _strip_module(data["weights"]))
    if not (isinstance(data, dict) and "gEncoder" in data):
        keys = sorted(data)[:6] if isinstance(data, dict) else type(data).__name__
        raise UserError(
            f"checkpoint={path} is not a CPC_audio checkpoint: expected 'gEncoder' (cpc/train.py) "
            f"or 'config' and 'weights' (hub file), found {keys}"
        )
    args_file = path.parent / "checkpoint_args.json"
    if not args_file.is_file():
        raise UserError(
            f"checkpoint={path}: {args_file} is missing; CPC_audio's train.py writes the "
            "architecture there (copy it next to the checkpoint)"
        )
    args = {**DEFAULT_ARGS, **json.loads(args_file.read_text())}
    criterion = data.get("cpcCriterion")
    return CPCAudioCheckpoint(
        path,
        "train_run",
        args,
        _strip_module(data["gEncoder"]),
        _strip_module(criterion) if criterion is not None else None,
        data.get("optimizer"),
        epoch,
    )


def _refuse(ckpt: CPCAudioCheckpoint, key: str, why: str) -> UserError:
    return UserError(f"checkpoint={ckpt.source}: {key}={ckpt.args.get(key)!r} {why}")


def _check_single_model(ckpt: CPCAudioCheckpoint) -> None:
    load = ckpt.args.get("load") or []
    concatenated = [k for k in ckpt.model if k.startswith("models.")]
    if concatenated or len(load) > 1:
        key = concatenated[0] if concatenated else f"load={load}"
        raise UserError(
            f"checkpoint={ckpt.source} is a concatenated multi-model checkpoint ({key}): "
            "CPC_audio's ConcatenatedModel stacks several models' features; convert each "
            "model's own checkpoint instead"
        )


def _encoder_and_context(ckpt: CPCAudioCheckpoint) -> list[str]:
    a = ckpt.args
    if a["encoder_type"] != "cpc":
        raise _refuse(
            ckpt, "encoder_type", "cannot be mapped: only the convolutional 'cpc' encoder"
        )
    if a["normMode"] not in NORM_MODES:
        raise _refuse(ckpt, "normMode", f"is unknown (CPC_audio's modes: {', '.join(NORM_MODES)})")
    if a["arMode"] not in AR_MODES:
        known = a["arMode"] in UNMAPPED_AR_MODES
        why = "has no cpc_lightning context" if known else "is unknown"
        raise _refuse(ckpt, "arMode", f"{why}: GRU and LSTM contexts can be mapped")
    if a["cpc_mode"] == "reverse":
        raise _refuse(ckpt, "cpc_mode", "(a time-reversed context) cannot be mapped")
    if a["speakerEmbedding"]:
        raise _refuse(
            ckpt, "speakerEmbedding", "(speaker embeddings in the heads) cannot be mapped"
        )
    return [
        "encoder=conv1d",
        f"encoder.hidden_dim={int(a['hiddenEncoder'])}",
        "encoder.kernels=[10,8,4,4,4]",
        "encoder.strides=[5,4,2,2,2]",
        "encoder.paddings=[3,2,1,1,1]",
        f"encoder.norm={NORM_MODES[a['normMode']]}",
        "encoder.standardize=false",  # CPC_audio feeds the waveform as is
        f"context={AR_MODES[a['arMode']]}",
        f"context.out_dim={int(a['hiddenGar'])}",
        f"context.num_layers={int(a['nLevelsGRU'])}",
    ]


def _fresh_heads(ckpt: CPCAudioCheckpoint) -> tuple[str, str]:
    """Heads for a checkpoint that stores none (a hub file): its kind when buildable, else
    linear (nothing is lost: there are no weights to map)."""
    a, mode = ckpt.args, ckpt.args["rnnMode"]
    kind = RNN_MODES.get(mode, "linear") if not a["supervised"] else "linear"
    if kind == "transformer" and int(a["hiddenGar"]) != int(a["hiddenEncoder"]):
        kind = "linear"
    if kind != RNN_MODES.get(mode):
        return kind, f"the checkpoint stores none (rnnMode={mode!r} is not built here: linear)"
    return kind, "the checkpoint stores none"


def _heads_kind(ckpt: CPCAudioCheckpoint, new_heads: str | None) -> tuple[str, str | None]:
    """``(heads option, why they start fresh or None when the checkpoint's are mapped)``."""
    a = ckpt.args
    if new_heads is not None:
        if new_heads not in ("linear", "transformer"):
            raise UserError(f"new_heads={new_heads} must be null, linear or transformer")
        return new_heads, "given by new_heads"
    if not ckpt.criterion or a["cpc_mode"] == "none":  # a hub file; CPC_audio's NoneCriterion
        return _fresh_heads(ckpt)
    fix = "; convert with new_heads=linear or new_heads=transformer for fresh heads"
    if a["supervised"]:
        raise _refuse(ckpt, "supervised", f"(a classifier, not CPC prediction heads){fix}")
    mode = a["rnnMode"]
    if mode not in RNN_MODES:
        known = mode in UNMAPPED_RNN_MODES
        why = "has no cpc_lightning heads" if known else "is unknown"
        raise _refuse(ckpt, "rnnMode", f"{why} (transformer and linear can be mapped){fix}")
    return RNN_MODES[mode], None


def _heads_overrides(ckpt: CPCAudioCheckpoint, kind: str, stored: bool) -> list[str]:
    a = ckpt.args
    out = [
        f"heads={kind}",
        "heads.score_scale=dim",  # CPC_audio's scores: the dot product divided by D
        f"heads.output_dropout={0.5 if a['dropout'] else 0.0}",
    ]
    if kind == "linear":
        return [*out, "heads.bias=false"]
    if int(a["hiddenGar"]) != int(a["hiddenEncoder"]):
        raise _refuse(
            ckpt,
            "hiddenGar",
            f"differs from hiddenEncoder={a['hiddenEncoder']}: CPC_audio's prediction "
            "transformer needs them equal",
        )
    max_len = int(a["sizeWindow"]) // 160 - int(a["nPredicts"])
    ff_dim = 2048
    if stored:  # the tensors decide
        rel = [v for k, v in ckpt.criterion.items() if k.endswith("multihead.Att.Krelpos")]
        lin1 = [v for k, v in ckpt.criterion.items() if k.endswith("ffnetwork.lin1.weight")]
        max_len = int(rel[0].shape[1]) if rel else max_len
        ff_dim = int(lin1[0].shape[0]) if lin1 else ff_dim
    return [
        *out,
        f"heads.max_len={max(max_len, 1)}",
        f"heads.relative_positions={'false' if a['abspos'] else 'true'}",
        f"heads.num_heads={TRANSFORMER_HEADS}",
        f"heads.ff_dim={ff_dim}",
        f"heads.dropout={TRANSFORMER_DROPOUT}",
    ]


def _training(ckpt: CPCAudioCheckpoint) -> tuple[list[str], list[str]]:
    a, notes = ckpt.args, []
    sampler = SAMPLERS.get(a["samplingType"])
    if sampler is None:
        sampler = "uniform"
        notes.append(f"samplingType={a['samplingType']} has no sampler here: data.sampler=uniform")
    if (a["schedulerStep"] or -1) > 0 or a["schedulerRamp"]:
        notes.append("CPC_audio's per-epoch learning-rate schedule is not mapped: constant lr")
    batch = int(a["batchSizeGPU"]) * max(int(a["nGPU"] or 1), 1)
    out = [
        f"data.window={int(a['sizeWindow'])}",
        f"data.batch_size={batch}",
        f"data.sampler={sampler}",
        "negatives=batch",
        f"negatives.num_negatives={int(a['negativeSamplingExt'])}",
        f"model.optimizer.lr={float(a['learningRate'])}",
        f"model.optimizer.betas=[{float(a['beta1'])},{float(a['beta2'])}]",
        f"model.optimizer.eps={float(a['epsilon'])}",
        "model.scheduler=null",
    ]
    if isinstance(a["random_seed"], int):
        out.append(f"seed={a['random_seed']}")
    return out, notes


def plan(ckpt: CPCAudioCheckpoint, new_heads: str | None = None) -> Plan:
    """The ``train`` overrides that rebuild ``ckpt``'s architecture, or a :class:`UserError`."""
    _check_single_model(ckpt)
    arch = _encoder_and_context(ckpt)
    kind, fresh = _heads_kind(ckpt, new_heads)
    stored = fresh is None
    arch += _heads_overrides(ckpt, kind, stored)
    arch += [
        f"model.prediction_steps={int(ckpt.args['nPredicts'])}",
        "model.step_offset=0",
        "model.temperature=1.0",
    ]
    training, notes = _training(ckpt)
    if fresh is not None:
        notes.append(f"prediction heads ({kind}) start from fresh weights: {fresh}")
    return Plan(arch, training, kind, stored, notes)
