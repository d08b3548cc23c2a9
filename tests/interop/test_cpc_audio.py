"""CPC_audio checkpoints converted: the same ``z``, ``c`` and prediction scores as CPC_audio.

First on the shared fixtures (outputs computed by CPC_audio itself), then on checkpoints of
other sizes, layer counts and modes written in its formats by ``helpers.cpc_audio_reference``
(whose forward pass the fixture test checks against CPC_audio's own outputs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SHARED_FIXTURES
from helpers import cpc_audio_reference as ref

from cpc_lightning.interop.cpc_audio import read_checkpoint
from cpc_lightning.interop.run_dir import convert_cpc_audio

FIXTURES = SHARED_FIXTURES / "cpc_audio"


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    if not (FIXTURES / "reference.npz").is_file():
        pytest.skip(f"CPC_audio fixtures absent: {FIXTURES}")
    return dict(np.load(FIXTURES / "reference.npz"))


def scores(model, x: torch.Tensor) -> torch.Tensor:
    """The converted model's positive scores (InfoNCE's column 0, before the temperature)."""
    return ref.model_dots(model, x) * model.heads.score_factor


@pytest.mark.parametrize("name,source", [("train", "train_run"), ("hub", "hub.pt")])
def test_fixture_features_equal_cpc_audios(reference, name: str, source: str) -> None:
    converted = convert_cpc_audio(FIXTURES / source)
    x = torch.from_numpy(reference["waveform"])[None, None]
    with torch.no_grad():
        z, c = converted.model(x)
    assert (z[0] - torch.from_numpy(reference[f"{name}_z"])).abs().max() < 1e-5
    assert (c[0] - torch.from_numpy(reference[f"{name}_c"])).abs().max() < 1e-5
    # the independent re-implementation reproduces CPC_audio too (it backs the tests below)
    ckpt = read_checkpoint(FIXTURES / source)
    rz, rc = ref.forward(ckpt.args, ckpt.model, x)
    assert (rz[0] - torch.from_numpy(reference[f"{name}_z"])).abs().max() < 1e-5
    assert (rc[0] - torch.from_numpy(reference[f"{name}_c"])).abs().max() < 1e-5


def test_fixture_train_run_keeps_its_heads_and_scores(reference) -> None:
    converted = convert_cpc_audio(FIXTURES / "train_run")
    model = converted.model
    assert type(model.heads).__name__ == "TransformerHeads" and converted.config.heads.max_len
    x = torch.from_numpy(reference["waveform"][:20480])[None, None]
    want = torch.from_numpy(reference["train_pos_scores"])
    assert (scores(model, x)[:, 0] - want).abs().max() < 1e-4
    ckpt = read_checkpoint(FIXTURES / "train_run")
    with torch.no_grad():
        z, c = ref.forward(ckpt.args, ckpt.model, x)
    assert (ref.positive_scores(ckpt.args, ckpt.criterion, z, c)[:, 0] - want).abs().max() < 1e-4


CASES = {
    "lstm2-channel-transformer": dict(nLevelsGRU=2),
    "gru3-batchnorm-linear": dict(arMode="GRU", nLevelsGRU=3, normMode="batchNorm", rnnMode=None),
    "lstm1-instance-abspos": dict(nLevelsGRU=1, normMode="instanceNorm", abspos=True),
    "gru2-id-linear-wide": dict(
        arMode="GRU",
        nLevelsGRU=2,
        normMode="ID",
        rnnMode="linear",
        hiddenEncoder=40,
        hiddenGar=24,
    ),
    "lstm3-channel-transformer-k5": dict(
        nLevelsGRU=3, nPredicts=5, hiddenEncoder=24, hiddenGar=24, sizeWindow=4800
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_other_sizes_layers_and_modes_equal_the_reference(case: str, tmp_path: Path) -> None:
    args = ref.make_args(**CASES[case])
    model_state = ref.model_state(args, seed=len(case))
    criterion = ref.criterion_state(args, seed=3)
    folder = ref.write_train_run(tmp_path / "run", args, model_state, criterion)
    converted = convert_cpc_audio(folder)
    model = converted.model
    x = torch.stack([ref.waveform(args["sizeWindow"], seed=s) for s in (0, 1)])[:, None]
    with torch.no_grad():
        z, states = model.all_features(x)
    rz, rc = ref.forward(args, model_state, x)
    assert len(states) == args["nLevelsGRU"]
    assert (z - rz).abs().max() < 1e-5 and (states[-1] - rc).abs().max() < 1e-5
    want = ref.positive_scores(args, criterion, rz, rc)
    assert (scores(model, x) - want).abs().max() < 1e-4


def test_every_context_layer_maps_to_its_own_layer(tmp_path: Path) -> None:
    """hidden_states[i] is CPC_audio's i-th recurrent layer (a 1-layer net on layer i-1)."""
    args = ref.make_args(nLevelsGRU=3, arMode="GRU", rnnMode=None)
    state = ref.model_state(args, seed=5)
    model = convert_cpc_audio(ref.write_hub(tmp_path / "hub.pt", args, state)).model
    x = ref.waveform(3200)[None, None]
    with torch.no_grad():
        z, states = model.all_features(x)
        h = z
        for layer in range(3):
            gru = torch.nn.GRU(h.shape[-1], 32, batch_first=True)
            gru.load_state_dict(
                {
                    name.replace(f"_l{layer}", "_l0"): v
                    for name, v in state.items()
                    if name.startswith("gAR") and name.endswith(f"_l{layer}")
                    for name in [name[len("gAR.baseNet.") :]]
                }
            )
            h = gru(h)[0]
            assert (states[layer] - h).abs().max() < 1e-5


def test_hub_file_gets_fresh_heads_and_says_so(tmp_path: Path) -> None:
    args = ref.make_args(rnnMode="transformer")
    hub = ref.write_hub(tmp_path / "hub.pt", args, ref.model_state(args))
    converted = convert_cpc_audio(hub)
    assert converted.source.layout == "hub" and converted.optimizer_state is None
    assert any("fresh weights" in n for n in converted.notes)
    assert type(converted.model.heads).__name__ == "TransformerHeads"
    assert converted.config.heads.max_len == ref.anchors(args)


def test_adam_state_follows_its_parameters(tmp_path: Path) -> None:
    args = ref.make_args(arMode="GRU", rnnMode="linear", nPredicts=4)
    model_state, criterion = ref.model_state(args), ref.criterion_state(args)
    names = ref.parameter_names(model_state, criterion)
    everything = {**model_state, **criterion}
    g = torch.Generator().manual_seed(0)
    state = {
        i: {
            "step": torch.tensor(70.0),
            "exp_avg": torch.randn(everything[n].shape, generator=g),
            "exp_avg_sq": torch.rand(everything[n].shape, generator=g),
        }
        for i, n in enumerate(names)
    }
    group = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0, "amsgrad": False}
    optimizer = {"state": state, "param_groups": [{**group, "params": list(range(len(names)))}]}
    run = ref.write_train_run(tmp_path / "run", args, model_state, criterion, optimizer=optimizer)
    converted = convert_cpc_audio(run)
    assert converted.optimizer_state is not None, converted.notes
    params = dict(converted.model.named_parameters())
    adam = torch.optim.Adam(params.values(), lr=5e-4)
    adam.load_state_dict(converted.optimizer_state)
    assert adam.param_groups[0]["lr"] == 1e-3  # CPC_audio's resumed learning rate

    def moment(name: str) -> torch.Tensor:
        return state[names.index(name)]["exp_avg"]

    heads = adam.state[params["heads.maps.0.weight"]]
    want = torch.cat([moment(f"wPrediction.predictors.{k}.weight") for k in range(4)])
    torch.testing.assert_close(heads["exp_avg"], want)
    norm = adam.state[params["encoder.net.4.weight"]]["exp_avg"]  # ChannelNorm of conv1
    torch.testing.assert_close(norm, moment("gEncoder.batchNorm1.weight").reshape(-1))
    assert float(heads["step"]) == 70.0
    empty = ref.write_train_run(tmp_path / "empty", args, model_state, criterion)
    assert convert_cpc_audio(empty).optimizer_state is None  # no state: a fresh optimizer
