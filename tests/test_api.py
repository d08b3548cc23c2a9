"""``cpc_lightning.load(...).features(...)``: padded batches equal one-by-one calls, resampling,
and the same tensors as ``extract`` writes (for a trained-layout run dir and a converted one)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import REPO, SHARED_FIXTURES, compose_entry, make_run
from helpers import cpc_audio_reference as ref
from helpers.features import assert_api_matches_extract
from helpers.toy_encoder import ToyEncoder

import cpc_lightning
from cpc_lightning.api import FeatureExtractor
from cpc_lightning.data.audio.reader import resample
from cpc_lightning.errors import UserError
from cpc_lightning.interop.run_dir import convert_cpc_audio, write_run_dir
from cpc_lightning.model.context.sequence import LSTMContext
from cpc_lightning.model.heads import PredictionHeads
from cpc_lightning.model.module import CPCModule
from cpc_lightning.model.negatives import NegativeSampler

LENGTHS = (16000, 9137, 3200, 12481)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("api")
    return make_run(root, ["context.num_layers=2", "encoder.norm=channel"])


def waves() -> list[torch.Tensor]:
    return [ref.waveform(n, seed=i) for i, n in enumerate(LENGTHS)]


def assert_same_frames(batched: dict, alone: list[dict]) -> None:
    for i, one in enumerate(alone):
        t = one["z"].shape[1]
        assert int(batched["lengths"][i]) == t and int(batched["mask"][i].sum()) == t
        torch.testing.assert_close(batched["z"][i, :t], one["z"][0], rtol=0, atol=1e-5)
        for b, o in zip(batched["hidden_states"], one["hidden_states"], strict=True):
            torch.testing.assert_close(b[i, :t], o[0], rtol=0, atol=1e-5)
        assert (batched["z"][i, t:] == 0).all() and (batched["c"][i, t:] == 0).all()


def test_a_padded_batch_gives_the_frames_of_one_by_one_calls(run_dir: Path) -> None:
    model = cpc_lightning.load(run_dir)
    assert isinstance(model, torch.nn.Module) and not model.training
    out = model.features(waves())
    assert out["frame_rate"] == 100.0 and len(out["hidden_states"]) == 2
    assert out["z"].shape == (4, 100, 16) and out["c"] is out["hidden_states"][-1]
    assert_same_frames(out, [model.features(w) for w in waves()])
    padded = torch.nn.utils.rnn.pad_sequence(waves(), batch_first=True)
    again = model.features(padded, lengths=torch.tensor(LENGTHS))
    torch.testing.assert_close(again["c"], out["c"])
    model.train()
    assert not model.model.training  # a feature extractor stays frozen


def test_encoders_without_lengths_are_run_one_by_one() -> None:
    torch.manual_seed(0)
    cpc = CPCModule(ToyEncoder(8), LSTMContext(8, 6, 2), PredictionHeads(6, 8, 2),
                    NegativeSampler(), prediction_steps=2)  # fmt: skip
    model = FeatureExtractor(cpc, 16000, {})
    assert_same_frames(model.features(waves()), [model.features(w) for w in waves()])


def test_other_sample_rates_are_resampled(run_dir: Path) -> None:
    model = cpc_lightning.load(run_dir / "checkpoints" / "last.ckpt")
    w8k = ref.waveform(8000)
    out = model.features(w8k.numpy(), sample_rate=8000)
    same = model.features(resample(w8k, 8000, 16000))
    torch.testing.assert_close(out["c"], same["c"])
    assert out["z"].shape[1] == 100  # 1 s
    with pytest.raises(ValueError, match="lengths="):
        model.features([w8k], lengths=[8000])
    with pytest.raises(ValueError, match=r"waveform 0 has shape \(8000, 2\): give mono"):
        model.features([torch.stack([w8k, w8k], 1)])
    with pytest.raises(UserError, match="does not exist"):
        cpc_lightning.load(run_dir / "missing")


def extracted(run: Path, out: Path, extra: list[str] = ()) -> dict:
    from cpc_lightning.extract import extract

    cfg = compose_entry("extract", [f"run_dir={run}", f"out={out}", "layers=all", *extra])
    return extract(cfg)


def test_features_equal_what_extract_writes(run_dir: Path, tmp_path: Path) -> None:
    summary = extracted(run_dir, tmp_path / "feats")
    assert summary["feature"] == "all" and len(summary["layers"]) == 3  # z + 2 GRU layers
    assert_api_matches_extract(cpc_lightning.load(run_dir), tmp_path / "feats")


def test_a_converted_checkpoint_gives_what_extract_writes(tmp_path: Path) -> None:
    args = ref.make_args(nLevelsGRU=2)
    source = ref.write_train_run(
        tmp_path / "cpc", args, ref.model_state(args), ref.criterion_state(args)
    )
    tiny_data = [
        "data.synthetic.num_speakers=2",
        "data.synthetic.utterances_per_speaker=2",
        "data.synthetic.min_seconds=1.0",
        "data.synthetic.max_seconds=1.5",
        f"data.cache_dir={tmp_path / 'cache'}",
    ]
    run = write_run_dir(convert_cpc_audio(source, tiny_data), tmp_path / "converted")
    extracted(run, tmp_path / "feats")
    assert_api_matches_extract(cpc_lightning.load(run), tmp_path / "feats")
    in_memory = cpc_lightning.load(source)  # a CPC_audio checkpoint, converted on the fly
    x = ref.waveform(4000)
    torch.testing.assert_close(in_memory.features(x)["c"], cpc_lightning.load(run).features(x)["c"])


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Features from Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def test_the_readme_example_runs(tmp_path: Path) -> None:
    fixture = SHARED_FIXTURES / "cpc_audio" / "train_run"
    if not fixture.is_dir():
        pytest.skip(f"CPC_audio fixtures absent: {fixture}")
    speech = tmp_path / "speech.flac"
    sf.write(str(speech), np.load(fixture.parent / "reference.npz")["waveform"], 16000)
    code = readme_example().replace("path/to/CPC_audio/run", str(fixture))
    scope: dict = {}
    exec(compile(code.replace("speech.flac", str(speech)), "README.md", "exec"), scope)
    assert scope["out"]["c"].shape == (1, 200, 64) and scope["out"]["frame_rate"] == 100.0
    assert len(scope["layers"]) == 2


# ------------------------------------------- issue 30, finding 7: inputs are checked like the CLI's
def test_a_non_finite_waveform_is_refused_naming_it(run_dir: Path) -> None:
    model = cpc_lightning.load(run_dir)
    bad = ref.waveform(4000, seed=1)
    bad[100] = float("nan")
    with pytest.raises(ValueError, match=r"waveform 1 holds 1 non-finite sample \(NaN or inf\)"):
        model.features([ref.waveform(4000), bad])
    padded = torch.stack([ref.waveform(4000), ref.waveform(4000)])
    padded[0, 7] = float("inf")
    with pytest.raises(ValueError, match="waveform 0 holds 1 non-finite"):
        model.features(padded)


def test_integer_pcm_is_scaled_like_soundfile(run_dir: Path) -> None:
    model = cpc_lightning.load(run_dir)
    w = ref.waveform(4000).clamp(-0.99, 0.99)
    as_int16 = (w.numpy() * 32768).astype(np.int16)
    want = model.features(torch.from_numpy(as_int16.astype(np.float32) / 32768))["c"]
    torch.testing.assert_close(model.features(as_int16)["c"], want)
    torch.testing.assert_close(model.features([torch.from_numpy(as_int16)])["c"], want)
    as_int32 = as_int16.astype(np.int32) * 65536
    torch.testing.assert_close(model.features(as_int32)["c"], want)
    with pytest.raises(ValueError, match=r"waveform 0 is uint8: .*float"):
        model.features([np.full(4000, 128, np.uint8)])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lengths": [4000, -5]}, r"lengths=\[4000, -5\] .*between 0 and 4000"),
        ({"lengths": [4000, 4001]}, r"lengths=\[4000, 4001\] .*between 0 and 4000"),
        ({"sample_rate": 16000.5}, r"sample_rate=16000.5 must be a whole number of Hz"),
        ({"sample_rate": 0}, r"sample_rate=0 must be a positive"),
        ({"sample_rate": -8000}, r"sample_rate=-8000 must be a positive"),
    ],
)
def test_bad_lengths_and_sample_rates_are_refused(run_dir: Path, kwargs, message) -> None:
    model = cpc_lightning.load(run_dir)
    padded = torch.stack([ref.waveform(4000), ref.waveform(4000)])
    with pytest.raises(ValueError, match=message):
        model.features(padded, **kwargs)


@pytest.mark.parametrize("n", [0, 100])
def test_a_waveform_shorter_than_the_receptive_field_is_refused(run_dir: Path, n: int) -> None:
    model = cpc_lightning.load(run_dir)
    field = model.model.encoder.receptive_field
    message = rf"waveform 1 has {n} samples: .*at least {field} samples"
    with pytest.raises(ValueError, match=message):
        model.features([ref.waveform(4000), ref.waveform(n)])
    assert model.features(ref.waveform(field))["z"].shape[1] >= 1


@pytest.mark.parametrize("name", ["notes.txt", "x.ckpt", "checkpoint_3.pt"])
def test_loading_a_text_file_is_one_clear_error(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("hello: not a checkpoint\n")
    with pytest.raises(UserError, match=rf"{name} is not a file written by torch.save") as err:
        cpc_lightning.load(tmp_path / name)
    assert "\n" not in str(err.value)
