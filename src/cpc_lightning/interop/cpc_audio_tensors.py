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

The same table runs the other way (``export``): each :class:`TensorMap` has a ``join`` (theirs ->
ours) and its inverse ``split`` (ours -> theirs); :func:`export_state` writes a model's tensors
in CPC_audio's keys, shapes and order, with the constant buffers its code expects, and
:func:`export_optimizer` its Adam state in CPC_audio's parameter order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cpc_lightning.errors import UserError
from cpc_lightning.interop.cpc_audio import CPCAudioCheckpoint
from cpc_lightning.model.encoders.norms import ChannelNorm

#: Transformer predictor names, CPC_audio -> :class:`PredictionTransformer`, in CPC_audio's
#: state-dict (and parameter) order.
TRANSFORMER_NAMES = {
    "multihead.Wo.weight": "attention.wo.weight",
    "multihead.Wk.weight": "attention.wk.weight",
    "multihead.Wq.weight": "attention.wq.weight",
    "multihead.Wv.weight": "attention.wv.weight",
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
#: The transformer's output (its last LayerNorm's affine): a factor on the predictions scales it.
TRANSFORMER_OUTPUT = ("ln_ffnetwork.weight", "ln_ffnetwork.bias")
#: Buffers CPC_audio stores that hold no learned state (nothing here takes them).
CONSTANT_BUFFERS = ("multihead.Att.z", "multihead.Att.mask", ".pe")
#: Buffer names (not parameters: no optimizer state).
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked", *CONSTANT_BUFFERS)
#: Adam's per-parameter moments (each split or joined like its parameter).
MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


@dataclass
class TensorMap:
    """``ours`` is ``join`` of the checkpoint's tensors ``theirs`` (one, or one per step), and
    ``split`` is its inverse (ours -> theirs, in order). ``output``: the tensor scales the
    predictions linearly (a score factor is folded into it on export)."""

    ours: str
    theirs: list[str]
    join: Callable[[list[torch.Tensor]], torch.Tensor]
    split: Callable[[torch.Tensor], list[torch.Tensor]]
    output: bool = False


def _one(tensors: list[torch.Tensor]) -> torch.Tensor:
    return tensors[0]


def _alone(tensor: torch.Tensor) -> list[torch.Tensor]:
    return [tensor]


def _flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return tensors[0].reshape(-1)  # ChannelNorm's (1, C, 1) affine -> (C,)


def _channel_affine(tensor: torch.Tensor) -> list[torch.Tensor]:
    return [tensor.reshape(1, -1, 1)]  # (C,) -> ChannelNorm's (1, C, 1)


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(tensors, dim=0)


def _steps(count: int) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    return lambda tensor: list(tensor.chunk(count, dim=0))  # (K * D, C) -> K x (D, C)


def _norm_maps(model: nn.Module) -> list[TensorMap]:
    maps = []
    for i in range(len(model.encoder.net) // 3):
        for name in model.encoder.net[3 * i].state_dict():
            theirs = [f"gEncoder.conv{i}.{name}"]
            maps.append(TensorMap(f"encoder.net.{3 * i}.{name}", theirs, _one, _alone))
        norm = model.encoder.net[3 * i + 1]
        for name in norm.state_dict():
            affine = isinstance(norm, ChannelNorm) and name in ("weight", "bias")
            join, split = (_flat, _channel_affine) if affine else (_one, _alone)
            ours = f"encoder.net.{3 * i + 1}.{name}"
            maps.append(TensorMap(ours, [f"gEncoder.batchNorm{i}.{name}"], join, split))
    return maps


def _head_maps(model: nn.Module, offset: int) -> list[TensorMap]:
    heads, k = model.heads, model.prediction_steps
    if hasattr(heads, "maps"):  # linear
        names = [f"wPrediction.predictors.{i}.weight" for i in range(k)]
        return [TensorMap("heads.maps.0.weight", names, _stack, _steps(k), output=True)]
    maps = []
    for i in range(k):
        ours = heads.sets[0][i].state_dict()
        for theirs, mine in TRANSFORMER_NAMES.items():
            if mine in ours:
                name = f"wPrediction.predictors.{i}.{offset}.{theirs}"
                out = theirs in TRANSFORMER_OUTPUT
                maps.append(TensorMap(f"heads.sets.0.{i}.{mine}", [name], _one, _alone, out))
    return maps


def tensor_maps(
    model: nn.Module, ckpt: CPCAudioCheckpoint | None, with_heads: bool
) -> list[TensorMap]:
    """Every state entry of ``model`` (heads only ``with_heads``) and where it comes from in
    ``ckpt`` (None: where export puts it, CPC_audio's relative-position layout)."""
    maps = _norm_maps(model)
    for name in model.context.rnn.state_dict():
        maps.append(TensorMap(f"context.rnn.{name}", [f"gAR.baseNet.{name}"], _one, _alone))
    if not with_heads:
        return maps
    criterion = ckpt.criterion if ckpt is not None else None
    offset = 1 if any(n.endswith(".0.pe") for n in criterion or {}) else 0  # --abspos
    return maps + _head_maps(model, offset)


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


def parameter_order(criterion: dict[str, Any] | None, model: dict[str, Any]) -> list[str]:
    """CPC_audio's optimizer order: criterion parameters, then the model's (``train.py``)."""
    return [n for n in [*(criterion or {}), *model] if not n.endswith(BUFFER_SUFFIXES)]


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
    order = parameter_order(ckpt.criterion, ckpt.model)
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
        for key in MOMENTS:
            if key in per[0]:
                entry[key] = m.join([s[key] for s in per]).clone()
        out[i] = entry
    group = {k: v for k, v in groups[0].items() if k != "params"}
    group["params"] = list(range(len(out)))
    return {"state": out, "param_groups": [group]}, "Adam state mapped from the checkpoint"


def transformer_buffers(length: int) -> dict[str, torch.Tensor]:
    """The constant buffers of CPC_audio's prediction transformer over ``length`` anchors:
    ``Att.z`` (zeros) and ``Att.mask`` (``-inf`` above the diagonal: causal)."""
    future = torch.ones(length, length, dtype=torch.bool).triu(1)
    mask = torch.zeros(length, length).masked_fill(future, float("-inf"))
    return {"multihead.Att.z": torch.zeros(1, length, 1), "multihead.Att.mask": mask[None]}


def export_state(
    model: nn.Module, with_heads: bool, factor: float = 1.0
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``model``'s tensors in CPC_audio's keys, shapes and order: the ``CPCModel`` state
    (``gEncoder.*``, ``gAR.*``) and, ``with_heads``, the criterion's (``wPrediction.*``, with the
    transformer's constant buffers; else empty). ``factor`` multiplies the predictions."""
    state = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for m in tensor_maps(model, None, with_heads):
        for name, tensor in zip(m.theirs, m.split(state[m.ours]), strict=True):
            out[name] = (tensor * factor if m.output else tensor).detach().clone().contiguous()
            if name.endswith("multihead.Att.Krelpos"):
                prefix = name[: -len("multihead.Att.Krelpos")]
                buffers = transformer_buffers(int(tensor.shape[1]))
                out.update({prefix + key: value for key, value in buffers.items()})
    model_state = {k: v for k, v in out.items() if not k.startswith("wPrediction.")}
    return model_state, {k: v for k, v in out.items() if k.startswith("wPrediction.")}


def export_optimizer(
    model: nn.Module,
    optimizer: dict[str, Any] | None,
    criterion: dict[str, torch.Tensor],
    model_state: dict[str, torch.Tensor],
) -> tuple[dict[str, Any], str]:
    """Our Adam state (``optimizer``: its ``state_dict``, ``model.parameters()`` order, or None)
    for the exported tensors in CPC_audio's parameter order, and what happened. Its state is
    empty (CPC_audio's Adam then starts fresh) where a parameter has none to map."""
    order = parameter_order(criterion, model_state)
    groups = (optimizer or {}).get("param_groups") or []
    group = {"lr": 2e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False}
    if len(groups) == 1:
        group = {k: v for k, v in groups[0].items() if k not in ("params", "initial_lr")}
    result: dict[str, Any] = {"state": {}, "param_groups": [{**group, "params": []}]}
    result["param_groups"][0]["params"] = list(range(len(order)))
    states = (optimizer or {}).get("state") or {}
    if len(groups) != 1 or not states:
        return result, "no Adam state to carry: CPC_audio's optimizer starts fresh"
    index = {name: i for i, name in enumerate(order)}
    maps = {m.ours: m for m in tensor_maps(model, None, bool(criterion))}
    out: dict[int, dict[str, Any]] = {}
    for i, (name, _) in enumerate(model.named_parameters()):
        m, state = maps.get(name), states.get(i)
        if m is None or state is None or "exp_avg" not in state:
            return result, f"no Adam state for {name}: CPC_audio's optimizer starts fresh"
        parts = {key: m.split(state[key]) for key in MOMENTS if key in state}
        for j, theirs in enumerate(m.theirs):
            moments = {key: value[j].clone().contiguous() for key, value in parts.items()}
            out[index[theirs]] = {"step": torch.as_tensor(state["step"]).clone(), **moments}
    result["state"] = dict(sorted(out.items()))
    return result, "Adam state mapped to CPC_audio's parameter order"
