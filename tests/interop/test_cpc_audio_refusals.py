"""What conversion cannot map is refused in one message naming the key; nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import cpc_audio_reference as ref

from cpc_lightning.errors import UserError
from cpc_lightning.interop.run_dir import convert_cpc_audio, write_run_dir


def train_run(tmp_path: Path, model_edit=None, criterion_edit=None, **changes) -> Path:
    """A CPC_audio run dir whose arguments have ``changes``; its tensors are those of a model
    CPC_audio could build (default modes where the changed one has no tensors to write)."""
    args = ref.make_args(**changes)
    buildable = {
        **args,
        "arMode": args["arMode"] if args["arMode"] in ("GRU", "LSTM") else "LSTM",
        "normMode": args["normMode"] if args["normMode"] in ref.NORM_MODES else "layerNorm",
        "rnnMode": args["rnnMode"] if args["rnnMode"] == "transformer" else None,
    }
    model, criterion = ref.model_state(buildable), ref.criterion_state(buildable)
    if model_edit:
        model_edit(model)
    if criterion_edit:
        criterion_edit(criterion)
    return ref.write_train_run(tmp_path / "run", args, model, criterion)


def refused(path: Path, match: str, **kw) -> str:
    with pytest.raises(UserError, match=match) as err:
        convert_cpc_audio(path, **kw)
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("arMode", "BiLSTM", r"arMode='BiLSTM' is unknown: GRU and LSTM"),
        ("arMode", "transformer", r"arMode='transformer' has no cpc_lightning context"),
        ("normMode", "groupNorm", r"normMode='groupNorm' is unknown \(CPC_audio's modes"),
        ("rnnMode", "mlp", r"rnnMode='mlp' is unknown.*new_heads=linear"),
        ("rnnMode", "conv8", r"rnnMode='conv8' has no cpc_lightning heads"),
        ("encoder_type", "mfcc", r"encoder_type='mfcc' cannot be mapped"),
        ("cpc_mode", "reverse", r"cpc_mode='reverse' \(a time-reversed context\)"),
        ("speakerEmbedding", 16, r"speakerEmbedding=16 \(speaker embeddings"),
        ("supervised", True, r"supervised=True \(a classifier"),
    ],
)
def test_unmappable_arguments_are_named(tmp_path: Path, key: str, value, match: str) -> None:
    message = refused(train_run(tmp_path, **{key: value}), match)
    assert str(tmp_path / "run" / "checkpoint_3.pt") in message


def test_unmappable_heads_convert_with_fresh_heads_when_asked(tmp_path: Path) -> None:
    run = train_run(tmp_path, rnnMode="ffd")
    refused(run, "rnnMode='ffd' has no cpc_lightning heads")
    converted = convert_cpc_audio(run, new_heads="linear")
    assert type(converted.model.heads).__name__ == "PredictionHeads"
    assert any("new_heads" in n for n in converted.notes)
    refused(run, "new_heads=mlp must be null, linear or transformer", new_heads="mlp")


def test_transformer_heads_need_equal_widths(tmp_path: Path) -> None:
    run = train_run(tmp_path, hiddenGar=24, rnnMode=None)
    refused(run, r"hiddenGar=24 differs from hiddenEncoder=32", new_heads="transformer")
    args = ref.make_args(hiddenGar=24)  # a hub file stores no heads: fresh linear ones, noted
    converted = convert_cpc_audio(ref.write_hub(tmp_path / "hub.pt", args, ref.model_state(args)))
    assert converted.config.heads._target_.endswith("PredictionHeads")
    assert any("rnnMode='transformer' is not built here: linear" in n for n in converted.notes)


def test_a_concatenated_multi_model_checkpoint_is_refused(tmp_path: Path) -> None:
    args = ref.make_args()
    one = ref.model_state(args)
    both = {f"models.{i}.{k}": v for i in (0, 1) for k, v in one.items()}
    refused(
        ref.write_hub(tmp_path / "hub.pt", args, both),
        r"concatenated multi-model .*models\.0\.gEncoder",
    )
    args["load"] = ["/a/checkpoint_1.pt", "/b/checkpoint_1.pt"]
    refused(ref.write_hub(tmp_path / "hub2.pt", args, one), r"concatenated multi-model .*load=")


def test_missing_unexpected_and_misshapen_tensors_are_named(tmp_path: Path) -> None:
    def drop(state):
        del state["gAR.baseNet.weight_hh_l0"]

    refused(train_run(tmp_path / "a", drop), r"has no tensor gAR\.baseNet\.weight_hh_l0")

    def add(state):
        state["wPrediction.predictors.0.0.extra.weight"] = torch.zeros(3)

    refused(
        train_run(tmp_path / "b", criterion_edit=add),
        r"has tensor wPrediction\.predictors\.0\.0\.extra\.weight",
    )

    def shrink(state):
        state["gEncoder.conv2.weight"] = state["gEncoder.conv2.weight"][:16]

    refused(train_run(tmp_path / "c", shrink), r"gEncoder\.conv2\.weight has shape \(16, 32, 4\)")


def test_files_that_are_not_cpc_audio_checkpoints(tmp_path: Path) -> None:
    refused(tmp_path / "nowhere.pt", "does not exist")
    (tmp_path / "empty").mkdir()
    refused(tmp_path / "empty", r"has no checkpoint_<n>\.pt")
    torch.save({"state_dict": {}}, tmp_path / "lightning.pt")
    refused(tmp_path / "lightning.pt", r"is not a CPC_audio checkpoint.*\['state_dict'\]")
    (tmp_path / "notes.pt").write_bytes(b"not a checkpoint")  # refused before unpickling
    refused(tmp_path / "notes.pt", "is not a file written by torch.save")
    (tmp_path / "broken.pt").write_bytes(b"\x80\x02hhh)")  # a pickle, damaged
    refused(tmp_path / "broken.pt", "cannot be read by torch.load")
    run = train_run(tmp_path)
    (run / "checkpoint_args.json").unlink()
    refused(run, r"checkpoint_args\.json is missing")


def test_architecture_overrides_are_refused_and_training_ones_kept(tmp_path: Path) -> None:
    run = train_run(tmp_path)
    refused(
        run,
        r"context\.out_dim=8: the checkpoint fixes the architecture",
        overrides=["context.out_dim=8"],
    )
    refused(run, r"heads=linear: the checkpoint fixes", overrides=["heads=linear"])
    kept = convert_cpc_audio(run, overrides=["data.window=4800", "negatives.num_negatives=4"])
    assert kept.config.data.window == 4800 and kept.config.negatives.num_negatives == 4


def test_an_existing_run_dir_is_never_overwritten(tmp_path: Path) -> None:
    converted = convert_cpc_audio(train_run(tmp_path))
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(UserError, match="already exists and is not empty"):
        write_run_dir(converted, out)
    assert (out / "mine.txt").read_text() == "keep me" and len(list(out.iterdir())) == 1
    assert not list(tmp_path.glob(".out.partial*"))
