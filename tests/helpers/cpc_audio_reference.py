"""CPC_audio checkpoints of any size and mode, and what CPC_audio computes from them.

An independent re-implementation of facebookresearch/CPC_audio's forward pass, written in *its*
layout (channels-first ``(B, C, T)`` encoder, its state-dict keys, its relative-position trick:
a zero column in front of ``q P``, a reshape, the first row dropped), so a test can check a
converted model against it for sizes, layer counts and modes the shared fixtures do not have.
``tests/interop/test_cpc_audio.py`` first checks it against the outputs CPC_audio itself
computed (``../shared/fixtures/cpc_audio``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

KERNELS, STRIDES, PADDINGS = (10, 8, 4, 4, 4), (5, 4, 2, 2, 2), (3, 2, 1, 1, 1)
FF_DIM, NUM_HEADS = 2048, 8  # CPC_audio's prediction transformer
NORM_MODES = ("layerNorm", "batchNorm", "instanceNorm", "ID")


def make_args(**changes: Any) -> dict[str, Any]:
    """Small CPC_audio training arguments (``checkpoint_args.json``), with ``changes``."""
    args = {
        "hiddenEncoder": 32,
        "hiddenGar": 32,
        "nPredicts": 3,
        "negativeSamplingExt": 8,
        "learningRate": 2e-4,
        "beta1": 0.9,
        "beta2": 0.999,
        "epsilon": 1e-8,
        "sizeWindow": 3200,
        "samplingType": "samespeaker",
        "encoder_type": "cpc",
        "normMode": "layerNorm",
        "arMode": "LSTM",
        "nLevelsGRU": 1,
        "rnnMode": "transformer",
        "dropout": False,
        "abspos": False,
        "cpc_mode": None,
        "speakerEmbedding": 0,
    }
    args.update(changes)
    return args


def _rand(g: torch.Generator, *shape: int, scale: float = 0.3) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=g)


def model_state(args: dict[str, Any], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random ``CPCModel`` weights (``gEncoder.*``, ``gAR.*``) in CPC_audio's keys and shapes."""
    g = torch.Generator().manual_seed(seed)
    h, gar, mode = args["hiddenEncoder"], args["hiddenGar"], args["normMode"]
    state: dict[str, torch.Tensor] = {}
    cin = 1
    for i, k in enumerate(KERNELS):
        state[f"gEncoder.conv{i}.weight"] = _rand(g, h, cin, k, scale=1 / math.sqrt(cin * k))
        state[f"gEncoder.conv{i}.bias"] = _rand(g, h, scale=0.1)
        n = f"gEncoder.batchNorm{i}"
        if mode == "layerNorm":
            state[f"{n}.weight"] = 1 + _rand(g, 1, h, 1, scale=0.2)
            state[f"{n}.bias"] = _rand(g, 1, h, 1, scale=0.2)
        elif mode in ("batchNorm", "instanceNorm"):
            state[f"{n}.weight"] = 1 + _rand(g, h, scale=0.2)
            state[f"{n}.bias"] = _rand(g, h, scale=0.2)
        if mode == "batchNorm":
            state[f"{n}.running_mean"] = _rand(g, h, scale=0.2)
            state[f"{n}.running_var"] = 0.5 + torch.rand(h, generator=g)
            state[f"{n}.num_batches_tracked"] = torch.tensor(100)
        cin = h
    gates = {"GRU": 3, "LSTM": 4}[args["arMode"]]
    for layer in range(args["nLevelsGRU"]):
        size = h if layer == 0 else gar
        state[f"gAR.baseNet.weight_ih_l{layer}"] = _rand(g, gates * gar, size)
        state[f"gAR.baseNet.weight_hh_l{layer}"] = _rand(g, gates * gar, gar)
        state[f"gAR.baseNet.bias_ih_l{layer}"] = _rand(g, gates * gar, scale=0.1)
        state[f"gAR.baseNet.bias_hh_l{layer}"] = _rand(g, gates * gar, scale=0.1)
    return state


def anchors(args: dict[str, Any]) -> int:
    """CPC_audio's prediction length: frames of one window minus ``nPredicts``."""
    return args["sizeWindow"] // 160 - args["nPredicts"]


def criterion_state(args: dict[str, Any], seed: int = 1) -> dict[str, torch.Tensor]:
    """Random ``cpcCriterion`` weights (``wPrediction.*``) in CPC_audio's keys and order."""
    g = torch.Generator().manual_seed(seed)
    d, c, length = args["hiddenEncoder"], args["hiddenGar"], anchors(args)
    state: dict[str, torch.Tensor] = {}
    for k in range(args["nPredicts"]):
        p = f"wPrediction.predictors.{k}"
        if args["rnnMode"] != "transformer":
            state[f"{p}.weight"] = _rand(g, d, c, scale=1 / math.sqrt(c))
            continue
        if args["abspos"]:
            state[f"{p}.0.pe"] = torch.zeros(1, length, d)  # a constant buffer
            p = f"{p}.1"
        else:
            p = f"{p}.0"
        for name in ("Wo", "Wk", "Wq", "Wv"):
            state[f"{p}.multihead.{name}.weight"] = _rand(g, d, d, scale=1 / math.sqrt(d))
        if not args["abspos"]:
            state[f"{p}.multihead.Att.Krelpos"] = _rand(g, d // NUM_HEADS, length, scale=0.5)
            state[f"{p}.multihead.Att.z"] = torch.zeros(1, length, 1)
        state[f"{p}.multihead.Att.mask"] = torch.zeros(1, length, length)
        for ln in ("ln_multihead", "ln_ffnetwork"):
            state[f"{p}.{ln}.weight"] = 1 + _rand(g, d, scale=0.2)
            state[f"{p}.{ln}.bias"] = _rand(g, d, scale=0.2)
            if ln == "ln_multihead":
                state[f"{p}.ffnetwork.lin1.weight"] = _rand(g, FF_DIM, d, scale=1 / math.sqrt(d))
                state[f"{p}.ffnetwork.lin1.bias"] = _rand(g, FF_DIM, scale=0.1)
                state[f"{p}.ffnetwork.lin2.weight"] = _rand(g, d, FF_DIM, scale=1 / FF_DIM**0.5)
                state[f"{p}.ffnetwork.lin2.bias"] = _rand(g, d, scale=0.1)
    return state


def parameter_names(model: dict, criterion: dict) -> list[str]:
    """CPC_audio's optimizer order (``train.py``): the criterion's parameters, then the model's
    (state-dict order without buffers)."""
    buffers = ("running_mean", "running_var", "num_batches_tracked", "Att.z", "Att.mask", ".pe")
    return [k for k in [*criterion, *model] if not k.endswith(buffers)]


def write_train_run(
    folder: Path, args: dict[str, Any], model: dict, criterion: dict, epoch: int = 3, **extra: Any
) -> Path:
    """``cpc/train.py``'s layout: ``checkpoint_<epoch>.pt`` + ``checkpoint_args.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {"gEncoder": model, "cpcCriterion": criterion, "best": model, **extra}
    data.setdefault("optimizer", {"state": {}, "param_groups": []})
    torch.save(data, folder / f"checkpoint_{epoch}.pt")
    (folder / "checkpoint_args.json").write_text(json.dumps(args))
    return folder


def write_hub(path: Path, args: dict[str, Any], model: dict) -> Path:
    """The hub layout: ``{"config": <arguments>, "weights": <CPCModel state dict>}``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": args, "weights": model}, path)
    return path


def waveform(num_samples: int, seed: int = 0) -> torch.Tensor:
    """A quiet speech-like test signal ``(num_samples,)`` (harmonics, vibrato, noise)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(num_samples) / 16000
    f0 = 140 + 20 * torch.sin(2 * math.pi * 3 * t)
    phase = 2 * math.pi * torch.cumsum(f0, 0) / 16000
    x = sum(torch.sin(h * phase) / h for h in range(1, 6))
    return (0.05 * x + 0.005 * torch.randn(num_samples, generator=g)).float()


def _norm(x: torch.Tensor, state: dict, name: str, mode: str) -> torch.Tensor:
    """CPC_audio's encoder norms on ``(B, C, T)``."""
    if mode == "ID":
        return x
    w, b = state[f"{name}.weight"], state[f"{name}.bias"]
    if mode == "layerNorm":  # ChannelNorm: over channels, unbiased variance
        mean, var = x.mean(1, keepdim=True), x.var(1, keepdim=True)
        return (x - mean) / torch.sqrt(var + 1e-5) * w + b
    if mode == "instanceNorm":  # over time, biased variance
        mean, var = x.mean(2, keepdim=True), x.var(2, unbiased=False, keepdim=True)
        return (x - mean) / torch.sqrt(var + 1e-5) * w[:, None] + b[:, None]
    rm, rv = state[f"{name}.running_mean"], state[f"{name}.running_var"]
    return (x - rm[:, None]) / torch.sqrt(rv[:, None] + 1e-5) * w[:, None] + b[:, None]


@torch.no_grad()
def forward(
    args: dict[str, Any], state: dict, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """CPC_audio's ``CPCModel`` in eval mode: ``x`` ``(B, 1, L)`` -> ``z`` ``(B, T, H)``,
    ``c`` ``(B, T, G)``."""
    h = x
    for i in range(len(KERNELS)):
        h = F.conv1d(
            h, state[f"gEncoder.conv{i}.weight"], state[f"gEncoder.conv{i}.bias"],
            stride=STRIDES[i], padding=PADDINGS[i],
        )  # fmt: skip
        h = F.relu(_norm(h, state, f"gEncoder.batchNorm{i}", args["normMode"]))
    z = h.permute(0, 2, 1)
    rnn_type = {"GRU": torch.nn.GRU, "LSTM": torch.nn.LSTM}[args["arMode"]]
    rnn = rnn_type(args["hiddenEncoder"], args["hiddenGar"], args["nLevelsGRU"], batch_first=True)
    rnn.load_state_dict({k[len("gAR.baseNet.") :]: v for k, v in state.items() if "gAR" in k})
    return z, rnn(z)[0]


def _layer_norm(x: torch.Tensor, state: dict, name: str) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], state[f"{name}.weight"], state[f"{name}.bias"])


def _transformer(args: dict, state: dict, p: str, x: torch.Tensor) -> torch.Tensor:
    """One CPC_audio prediction transformer (post-norm, causal) on ``(N, S, D)``."""
    n, s, d = x.shape
    dk = d // NUM_HEADS

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(n, s, NUM_HEADS, dk).transpose(1, 2).reshape(n * NUM_HEADS, s, dk)

    q, k, v = (split(x @ state[f"{p}.multihead.{w}.weight"].t()) for w in ("Wq", "Wk", "Wv"))
    qk = q @ k.transpose(1, 2)
    if not args["abspos"]:  # the relative-position trick, for S equal to its length
        qp = torch.cat(
            [torch.zeros(n * NUM_HEADS, s, 1), q @ state[f"{p}.multihead.Att.Krelpos"]], 2
        )
        qk = qk + qp.reshape(n * NUM_HEADS, s + 1, s)[:, 1:, :]
    mask = torch.triu(torch.full((s, s), float("-inf")), diagonal=1)
    attn = torch.softmax(qk / math.sqrt(dk) + mask, dim=2)
    y = (attn @ v).view(n, NUM_HEADS, s, dk).transpose(1, 2).reshape(n, s, d)
    y = _layer_norm(x + y @ state[f"{p}.multihead.Wo.weight"].t(), state, f"{p}.ln_multihead")
    ff = F.linear(y, state[f"{p}.ffnetwork.lin1.weight"], state[f"{p}.ffnetwork.lin1.bias"])
    ff = F.linear(
        F.relu(ff), state[f"{p}.ffnetwork.lin2.weight"], state[f"{p}.ffnetwork.lin2.bias"]
    )
    return _layer_norm(y + ff, state, f"{p}.ln_ffnetwork")


def _positions(length: int, dim: int) -> torch.Tensor:
    """Sinusoidal absolute positions as CPC_audio's ``--abspos`` adds them."""
    out = torch.zeros(length, dim)
    for pos in range(length):
        for i in range(dim):
            angle = pos / 10000 ** (2 * (i // 2) / dim)
            out[pos, i] = math.sin(angle) if i % 2 == 0 else math.cos(angle)
    return out


@torch.no_grad()
def positive_scores(args: dict, criterion: dict, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """CPC_audio's score of the true future frame, ``(K, B, Ta)``: ``mean_d(pred_k(c)[t] *
    z[t + k])`` over the anchors ``t < T - K`` of ``z`` ``(B, T, D)``, ``c`` ``(B, T, C)``."""
    kmax = args["nPredicts"]
    ta = z.shape[1] - kmax
    x = c[:, :ta]
    out = []
    for k in range(kmax):
        p = f"wPrediction.predictors.{k}"
        if args["rnnMode"] != "transformer":
            pred = x @ criterion[f"{p}.weight"].t()
        elif args["abspos"]:
            pred = _transformer(args, criterion, f"{p}.1", x + _positions(ta, x.shape[-1]))
        else:
            pred = _transformer(args, criterion, f"{p}.0", x)
        out.append((pred * z[:, k + 1 : k + 1 + ta]).mean(-1))
    return torch.stack(out)


def model_dots(model: Any, x: torch.Tensor) -> torch.Tensor:
    """One of our models' positive dot products ``(K, B, Ta)``: ``pred_k(c)[t] . z[t + k]``
    for anchors ``t < T - K`` (before its score factor and temperature)."""
    with torch.no_grad():
        z, c = model(x)
        k = model.prediction_steps
        ta = z.shape[1] - k
        pred = model.heads(c[:, :ta])
        return torch.stack([(pred[i] * z[:, i + 1 : i + 1 + ta]).sum(-1) for i in range(k)])
