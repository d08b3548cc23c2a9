"""``export to=cpc_audio``: a run's model as a CPC_audio checkpoint, and back.

Round trips (export, then ``convert`` / ``cpc_lightning.load``) give the same ``z``, every
context layer and the same prediction scores (InfoNCE logits) for several sizes and modes; the
shared CPC_audio fixtures, converted and exported again, give their own tensors back bit for bit.
That CPC_audio's own ``loadModel`` reads the files was checked outside the suite (README)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import SHARED_FIXTURES, make_run
from helpers import cpc_audio_reference as ref
from helpers.exports import RAW, exported

import cpc_lightning
from cpc_lightning.interop.cpc_audio import read_checkpoint
from cpc_lightning.interop.run_dir import convert_cpc_audio, write_run_dir
from cpc_lightning.runs import open_run

FIXTURES = SHARED_FIXTURES / "cpc_audio"


def perturbed_run(root: Path, extra: list[str], optimizer: bool = False) -> Path:
    """A tiny run whose every weight (norm affines and statistics too) is moved off its
    initial value, so that a tensor mapped to the wrong place shows; ``optimizer``: with the
    Adam state of one step."""
    run = make_run(root, [*RAW, *extra])
    last = run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=False)
    g = torch.Generator().manual_seed(0)
    for name, value in ckpt["state_dict"].items():
        if value.is_floating_point():
            noise = torch.rand(value.shape, generator=g) if "running_var" in name else 0
            value.add_(noise + 0.1 * torch.randn(value.shape, generator=g))
    if optimizer:
        model = open_run(run_dir=run).model
        params = list(model.parameters())
        adam = torch.optim.Adam(params, lr=1e-3)
        for p in params:
            p.requires_grad_(True)
            p.grad = torch.randn(p.shape, generator=g)
        adam.step()
        ckpt["optimizer_states"] = [adam.state_dict()]
    torch.save(ckpt, last)
    return run


def logits(model, x: torch.Tensor) -> torch.Tensor:
    """The positive InfoNCE logits ``(K, B, Ta)``: the dot products over the model's
    ``score_temperature`` (its temperature over the heads' score factor)."""
    return ref.model_dots(model, x) / model.score_temperature


def assert_same_model(a, b, x: torch.Tensor, scores: bool = True) -> None:
    with torch.no_grad():
        za, states_a = a.all_features(x)
        zb, states_b = b.all_features(x)
    assert len(states_a) == len(states_b)
    assert (za - zb).abs().max() <= 1e-6
    for ha, hb in zip(states_a, states_b, strict=True):
        assert (ha - hb).abs().max() <= 1e-6
    if scores:
        la, lb = logits(a, x), logits(b, x)
        assert (la - lb).abs().max() <= 1e-6 * max(1.0, float(la.abs().max()))


CASES = {
    "lstm2-channel-linear-24": [
        "encoder.norm=channel", "context=lstm", "context.num_layers=2", "encoder.hidden_dim=24",
    ],
    "gru1-batch-transformer-T": [
        "encoder.norm=batch", "heads=transformer", "heads.max_len=18", "model.temperature=0.5",
    ],
    "gru3-instance-linear-dim": [
        "encoder.norm=instance", "context.num_layers=3", "heads.score_scale=dim",
        "encoder.hidden_dim=24", "context.out_dim=8", "model.prediction_steps=4",
    ],
    "lstm1-none-transformer-wide": [
        "encoder.norm=none", "context=lstm", "heads=transformer", "heads.max_len=30",
        "encoder.hidden_dim=24", "context.out_dim=24",
    ],
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_export_then_convert_gives_the_same_features_and_scores(case: str, tmp_path: Path) -> None:
    run = perturbed_run(tmp_path, CASES[case])
    written = exported(run, tmp_path / "cpc_audio")
    assert written.name == "checkpoint_0.pt"
    names = sorted(p.name for p in written.parent.iterdir())
    assert names == ["checkpoint_0.pt", "checkpoint_args.json", "checkpoint_logs.json"]
    source = open_run(run_dir=run).model
    x = torch.stack([ref.waveform(3200, seed=s) for s in (0, 1)])[:, None]
    assert_same_model(source, convert_cpc_audio(written.parent).model, x)
    # the API reads the exported folder as CPC_audio's (converted in memory)
    wav = ref.waveform(4000, seed=3)
    ours = cpc_lightning.load(run).features([wav])
    theirs = cpc_lightning.load(written.parent).features([wav])
    for a, b in zip(ours["hidden_states"], theirs["hidden_states"], strict=True):
        assert (a - b).abs().max() <= 1e-6
    # the hub file (no heads): the same features
    hub = exported(run, tmp_path / "hub.pt")
    assert set(torch.load(hub, weights_only=True)) == {"config", "weights"}
    assert_same_model(source, convert_cpc_audio(hub).model, x, scores=False)


def test_the_transformer_keeps_its_length_and_cpc_audio_buffers(tmp_path: Path) -> None:
    run = perturbed_run(tmp_path, CASES["gru1-batch-transformer-T"])
    ckpt = read_checkpoint(exported(run, tmp_path / "out"))
    assert ckpt.args["sizeWindow"] == (18 + 2) * 160 and ckpt.args["rnnMode"] == "transformer"
    mask = ckpt.criterion["wPrediction.predictors.1.0.multihead.Att.mask"]
    causal = torch.full((18, 18), -torch.inf).triu(1)  # -inf above the diagonal, else 0
    assert mask.shape == (1, 18, 18) and torch.equal(mask[0], causal)
    assert ckpt.criterion["wPrediction.predictors.0.0.multihead.Att.z"].shape == (1, 18, 1)


def test_adam_state_goes_over_and_comes_back(tmp_path: Path) -> None:
    run = perturbed_run(tmp_path, ["heads.score_scale=dim", "encoder.norm=channel"], optimizer=True)
    ours = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["optimizer_states"][0]
    folder = exported(run, tmp_path / "out").parent
    back = convert_cpc_audio(folder)
    assert back.optimizer_state is not None, back.notes
    for i, state in ours["state"].items():
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(torch.as_tensor(state[key]), back.optimizer_state["state"][i][key])
    assert back.optimizer_state["param_groups"][0]["lr"] == ours["param_groups"][0]["lr"]


@pytest.fixture(scope="module")
def fixture_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"CPC_audio fixtures absent: {FIXTURES}")
    out = tmp_path_factory.mktemp("fixture") / "converted"
    return write_run_dir(convert_cpc_audio(FIXTURES / "train_run"), out)


def test_the_fixture_converted_and_exported_is_the_fixture_again(fixture_run, tmp_path) -> None:
    original = read_checkpoint(FIXTURES / "train_run")
    written = exported(fixture_run, tmp_path / "back")
    assert written.name == "checkpoint_7.pt"  # its own epoch: not trained since conversion
    again = read_checkpoint(written)
    for mine, theirs in ((again.model, original.model), (again.criterion, original.criterion)):
        assert list(mine) == list(theirs)  # CPC_audio's keys in its order
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    architecture = ("hiddenEncoder", "hiddenGar", "nPredicts", "sizeWindow", "normMode", "arMode")
    assert {k: again.args[k] for k in (*architecture, "nLevelsGRU", "rnnMode")} == {
        k: original.args[k] for k in (*architecture, "nLevelsGRU", "rnnMode")
    }
    logs = json.loads((written.parent / "checkpoint_logs.json").read_text())
    assert logs["epoch"] == list(range(8))  # cpc/train.py resumes at epoch 8


def test_the_hub_fixture_converted_and_exported_is_the_hub_file_again(tmp_path: Path) -> None:
    if not FIXTURES.is_dir():
        pytest.skip(f"CPC_audio fixtures absent: {FIXTURES}")
    run = write_run_dir(convert_cpc_audio(FIXTURES / "hub.pt"), tmp_path / "converted")
    hub = exported(run, tmp_path / "hub.pt")
    data, original = torch.load(hub, weights_only=True), torch.load(FIXTURES / "hub.pt")
    assert list(data["weights"]) == list(original["weights"])
    assert all(torch.equal(data["weights"][k], v) for k, v in original["weights"].items())
    for key in ("hiddenEncoder", "hiddenGar", "nPredicts", "normMode", "arMode", "nLevelsGRU"):
        assert data["config"][key] == original["config"][key]
