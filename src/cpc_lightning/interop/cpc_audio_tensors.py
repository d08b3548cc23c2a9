"""CPC_audio tensors -> a :class:`~cpc_lightning.model.module.CPCModule` state, and its Adam state.

Every tensor of the checkpoint is mapped or refused: a tensor the architecture needs and the
checkpoint lacks, one the checkpoint has and nothing here takes, or a shape that differs, stops
the conversion with the key named. Layouts (CPC_audio -> here):

- ``gEncoder.conv{i}.*`` -> ``encoder.net.{3i}.*``; ``gEncoder.batchNorm{i}.*`` (ChannelNorm's
  ``(1, C, 1)`` affine, or BatchNorm's parameters and running statistics) ->
  ``encoder.net.{3i+1}.*``;
- ``gAR.baseNet.*`` (every layer of the GRU/LSTM) -> ``context.rnn.*``;
- linear heads: ``wPrediction.predictors.{k}.weight`` ``(D, C)`` stacked into
  ``heads.maps.0.weight`` ``(K * D, C)``;
- transformer heads: ``wPrediction.predictors.{k}.0.*`` -> ``heads.sets.0.{k}.*`` (see
  ``TRANSFORMER_NAMES``); their constant buffers (causal mask, padding) are not needed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cpc_lightning.errors import UserError
from cpc_lightning.interop.cpc_audio import CPCAudioCheckpoint

#: Transformer predictor names, CPC_audio -> :class:`PredictionTransformer`.
TRANSFORMER_NAMES = {
    "multihead.Wq.weight": "attention.wq.weight",
    "multihead.Wk.weight": "attention.wk.weight",
    "multihead.Wv.weight": "attention.wv.weight",
    "multihead.Wo.weight": "attention.wo.weight",
    "multihead.Att.Krelpos": "attention.rel",
    "ln_multihead.weight": "norm_attention.weight",
    "ln_multihead.bias": "norm_attention.bias",
    "ffnetwork.lin1.weight": "ff_in.weight",
    "ffnetwork.lin1.bias": "ff_in.bias",
    "ffnetwork.lin2.weight": "ff_out.weight",
    "ffnetwork.lin2.bias": "ff_out.bias",
    "ln_ffnetwork.weight": "norm_ff.weight",
    "ln_ffnetwork.bias": "norm_ff.bias",
}
#: Buffers CPC_audio stores that hold no learned state (nothing here takes them).
CONSTANT_BUFFERS = ("multihead.Att.z", "multihead.Att.mask", ".pe")
#: Buffer names (not parameters: no optimizer state).
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked", *CONSTANT_BUFFERS)


@dataclass
class TensorMap:
    """``ours`` is ``join`` of the checkpoint's tensors ``theirs`` (one, or one per step)."""

    ours: str
    theirs: list[str]
    join: Callable[[list[torch.Tensor]], torch.Tensor]


def _one(tensors: list[torch.Tensor]) -> torch.Tensor:
    return tensors[0]


def _flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return tensors[0].reshape(-1)  # ChannelNorm's (1, C, 1) affine -> (C,)


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(tensors, dim=0)


def _norm_maps(model: nn.Module) -> list[TensorMap]:
    maps = []
    for i in range(len(model.encoder.net) // 3):
        for name in model.encoder.net[3 * i].state_dict():
            maps.append(
                TensorMap(f"encoder.net.{3 * i}.{name}", [f"gEncoder.conv{i}.{name}"], _one)
            )
        for name, value in model.encoder.net[3 * i + 1].state_dict().items():
            join = _flat if value.dim() == 1 and name in ("weight", "bias") else _one
            ours = f"encoder.net.{3 * i + 1}.{name}"
            maps.append(TensorMap(ours, [f"gEncoder.batchNorm{i}.{name}"], join))
    return maps


def _head_maps(model: nn.Module, ckpt: CPCAudioCheckpoint) -> list[TensorMap]:
    heads, k = model.heads, model.prediction_steps
    if hasattr(heads, "maps"):  # linear
        names = [f"wPrediction.predictors.{i}.weight" for i in range(k)]
        return [TensorMap("heads.maps.0.weight", names, _stack)]
    offset = 1 if any(n.endswith(".0.pe") for n in ckpt.criterion or {}) else 0  # --abspos
    maps = []
    for i in range(k):
        ours = heads.sets[0][i].state_dict()
        for theirs, mine in TRANSFORMER_NAMES.items():
            if mine in ours:
                name = f"wPrediction.predictors.{i}.{offset}.{theirs}"
                maps.append(TensorMap(f"heads.sets.0.{i}.{mine}", [name], _one))
    return maps


def tensor_maps(model: nn.Module, ckpt: CPCAudioCheckpoint, with_heads: bool) -> list[TensorMap]:
    """Every state entry of ``model`` (heads only ``with_heads``) and where it comes from."""
    maps = _norm_maps(model)
    for name in model.context.rnn.state_dict():
        maps.append(TensorMap(f"context.rnn.{name}", [f"gAR.baseNet.{name}"], _one))
    return maps + (_head_maps(model, ckpt) if with_heads else [])


def _source(ckpt: CPCAudioCheckpoint, with_heads: bool) -> dict[str, torch.Tensor]:
    return {**ckpt.model, **((ckpt.criterion or {}) if with_heads else {})}


def map_state(
    ckpt: CPCAudioCheckpoint, model: nn.Module, with_heads: bool
) -> dict[str, torch.Tensor]:
    """``model``'s state dict with every mapped entry taken from ``ckpt`` (fresh heads kept
    when not ``with_heads``); refuses missing, unexpected and misshapen tensors by name."""
    src = _source(ckpt, with_heads)
    state = model.state_dict()
    used: set[str] = set()
    for m in tensor_maps(model, ckpt, with_heads):
        missing = [t for t in m.theirs if t not in src]
        if missing:
            raise UserError(
                f"checkpoint={ckpt.source} has no tensor {missing[0]}, which its arguments' "
                f"architecture needs (for {m.ours}): a truncated or differently built checkpoint"
            )
        value = m.join([src[t] for t in m.theirs])
        if tuple(value.shape) != tuple(state[m.ours].shape):
            shape = tuple(src[m.theirs[0]].shape)
            raise UserError(
                f"checkpoint={ckpt.source}: {m.theirs[0]} has shape {shape} but its arguments "
                f"describe {tuple(state[m.ours].shape)} for {m.ours}: the "
                "arguments (checkpoint_args.json / config) do not match the weights"
            )
        state[m.ours] = value.to(state[m.ours].dtype).clone()
        used.update(m.theirs)
    extra = sorted(k for k in src if k not in used and not k.endswith(CONSTANT_BUFFERS))
    if extra:
        raise UserError(
            f"checkpoint={ckpt.source} has tensor {extra[0]} (and {len(extra) - 1} more) that "
            "nothing in the converted architecture takes: an architecture conversion does not "
            "know; nothing was written"
        )
    return state


def _param_order(ckpt: CPCAudioCheckpoint) -> list[str]:
    """CPC_audio's optimizer order: criterion parameters, then the model's (``train.py``)."""
    names = [*(ckpt.criterion or {}), *ckpt.model]
    return [n for n in names if not n.endswith(BUFFER_SUFFIXES)]


def map_optimizer(
    ckpt: CPCAudioCheckpoint, model: nn.Module, with_heads: bool
) -> tuple[dict[str, Any] | None, str]:
    """The checkpoint's Adam state for ``model.parameters()`` (or None), and why."""
    opt = ckpt.optimizer or {}
    groups, states = opt.get("param_groups") or [], opt.get("state") or {}
    if not states:
        return None, "the checkpoint has no optimizer state: a fresh optimizer starts"
    if not with_heads:
        return None, "fresh heads have no optimizer state: a fresh optimizer starts"
    order = _param_order(ckpt)
    if len(groups) != 1 or len(groups[0]["params"]) != len(order):
        return None, "the optimizer's parameter list does not match the checkpoint's tensors"
    index = dict(zip(order, groups[0]["params"], strict=True))
    maps = {m.ours: m for m in tensor_maps(model, ckpt, with_heads)}
    out: dict[int, dict[str, Any]] = {}
    for i, (name, _) in enumerate(model.named_parameters()):
        m = maps.get(name)
        per = [states.get(index.get(t)) for t in m.theirs] if m else [None]
        if any(s is None or "exp_avg" not in s for s in per):
            return None, f"no Adam state for {name}: a fresh optimizer starts"
        steps = {float(s["step"]) for s in per}
        if len(steps) != 1:
            return None, f"Adam states of {name}'s parts disagree on the step: a fresh optimizer"
        entry = {"step": torch.as_tensor(per[0]["step"], dtype=torch.float32).clone()}
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            if key in per[0]:
                entry[key] = m.join([s[key] for s in per]).clone()
        out[i] = entry
    group = {k: v for k, v in groups[0].items() if k != "params"}
    group["params"] = list(range(len(out)))
    return {"state": out, "param_groups": [group]}, "Adam state mapped from the checkpoint"
