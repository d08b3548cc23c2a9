"""``python -m cpc_lightning.export``: the safetensors model folder (``cpc_lightning.load`` and
plain ``safetensors`` read it; its card shows the run's numbers), the refusals (one line naming
the key and the fix) and what happens to an ``out`` that exists."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO, TESTS, cli_env, compose_entry, make_run
from helpers import cpc_audio_reference as ref
from helpers.exports import RAW, exported
from safetensors.torch import load_file

import cpc_lightning
from cpc_lightning.errors import UserError
from cpc_lightning.export import export
from cpc_lightning.interop.model_dir import FILES
from cpc_lightning.runs import open_run

#: A trained image run of an earlier release (with its result file).
OLD_IMAGE = TESTS / "fixtures" / "run_f2cadb0_image"
PROBE_TABLE = "| features | phones |\n|---|---|\n| cpc | 61.3 % |\n| random_init | 30.2 % |"


def test_a_model_folder_loads_without_its_run_dir(tmp_path: Path) -> None:
    """A run trained with `make train`'s settings (standardised input, LayerNorm) and its
    end-of-run probes and an evaluate report: the folder gives the same features and heads."""
    run = make_run(tmp_path, ["context.num_layers=2"])
    result = {"status": "ok", "global_step": 7, "setup": {"data": "SyntheticSpeechDataModule"}}
    result["metrics"] = {"probe/phones/cpc": 0.613, "train/loss": 1.2}
    result["probe_table"] = PROBE_TABLE
    result["environment"] = {"code": {"package": "0.1.0", "git_commit": "abc1234"}}
    (run / "result.json").write_text(json.dumps(result))
    (run / "eval").mkdir()
    report = {"task": "speakers", "sources": {}, "table": "| features | accuracy |\n|---|---|"}
    (run / "eval" / "speakers.json").write_text(json.dumps(report))
    out = exported(run, tmp_path / "model", to="safetensors")
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    wav = ref.waveform(4000)
    want = cpc_lightning.load(run).features([wav])
    for path in (out, out / "model.safetensors"):
        got = cpc_lightning.load(path).features([wav])
        assert torch.equal(got["z"], want["z"]) and len(got["hidden_states"]) == 2
        pairs = zip(got["hidden_states"], want["hidden_states"], strict=True)
        assert all(torch.equal(a, b) for a, b in pairs)
    source = open_run(run_dir=run).model.state_dict()
    weights = load_file(out / "model.safetensors")
    assert sorted(weights) == sorted(source)
    assert all(torch.equal(weights[k], source[k]) for k in source)
    config = json.loads((out / "config.json").read_text())
    prov = config["provenance"]
    assert prov["git_commit"] == "abc1234" and prov["probe_scores"] == {"probe/phones/cpc": 0.613}
    assert config["encoder"]["standardize"] is True and "paths" not in config
    card = (out / "README.md").read_text()
    assert PROBE_TABLE in card and "evaluate task=speakers" in card and "abc1234" in card


def test_an_image_model_folder_gives_the_same_features(tmp_path: Path) -> None:
    out = exported(OLD_IMAGE, tmp_path / "image", to="safetensors")
    images = torch.rand(2, 3, 40, 40)
    want = cpc_lightning.load(OLD_IMAGE).features(images)
    got = cpc_lightning.load(out).features(images)
    assert torch.equal(got["z"], want["z"]) and torch.equal(got["c"], want["c"])
    card = (out / "README.md").read_text()
    assert "f2cadb0" in card and "image" in card


REFUSED = {
    "the make train default": (
        [], "encoder.standardize=true cannot be exported", "train with encoder.standardize=false",
    ),
    "LayerNorm": (
        [*RAW, "encoder.norm=layer"], "encoder.norm=layer has no CPC_audio mode",
        "encoder.norm=channel",
    ),
    "a transformer context": (
        [*RAW, "encoder.norm=channel", "context=transformer"],
        "context._target_=cpc_lightning.model.context.sequence.TransformerContext",
        "context=gru or context=lstm",
    ),
    "two widths": (
        [*RAW, "encoder.norm=channel", "encoder.out_dim=8"], "encoder.out_dim=8 differs",
        "train with one width",
    ),
    "biased heads": (
        [*RAW, "encoder.norm=channel", "heads.bias=true"], "heads.bias=true has no CPC_audio",
        "out=<file>.pt",
    ),
    "absolute positions": (
        [*RAW, "encoder.norm=channel", "heads=transformer", "heads.relative_positions=false"],
        "heads.relative_positions=false differs", "out=<file>.pt",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_what_cpc_audio_cannot_hold_is_refused_in_one_line(case: str, tmp_path: Path) -> None:
    extra, says, fix = REFUSED[case]
    run = make_run(tmp_path, extra)
    with pytest.raises(UserError) as err:
        exported(run, tmp_path / "out")
    message = str(err.value)
    assert says in message and fix in message and "\n" not in message, message
    assert not (tmp_path / "out").exists()


def test_heads_cpc_audio_cannot_load_still_go_into_a_hub_file(tmp_path: Path) -> None:
    run = make_run(tmp_path, [*RAW, "encoder.norm=channel", "heads.bias=true"])
    hub = exported(run, tmp_path / "hub.pt")
    assert torch.load(hub, weights_only=True)["config"]["normMode"] == "layerNorm"


def test_an_image_model_is_refused_for_cpc_audio(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"encoder._target_=.*is an image model.*to=safetensors"):
        exported(OLD_IMAGE, tmp_path / "out")


def test_out_that_exists_is_refused_unless_overwrite(tmp_path: Path) -> None:
    run = make_run(tmp_path, [*RAW, "encoder.norm=channel"])
    out, hub = tmp_path / "out", tmp_path / "hub.pt"
    exported(run, out)
    exported(run, hub)
    (out / "checkpoint_9.pt").write_bytes(b"an older export")  # would be read as the newest
    for target in (out, hub):
        with pytest.raises(UserError, match="overwrite=true"):
            exported(run, target)
    exported(run, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint_0.pt", "checkpoint_args.json", "checkpoint_logs.json"
    ]  # fmt: skip
    exported(run, hub, overwrite=True)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="holds notes.txt, which export to=cpc_audio did not"):
        exported(run, out, overwrite=True)
    assert (out / "notes.txt").is_file() and (out / "checkpoint_0.pt").is_file()
    with pytest.raises(UserError, match="to=safetensors writes a folder"):
        exported(run, tmp_path / "model.pt", to="safetensors")
    with pytest.raises(UserError, match="to=onnx must be one of cpc_audio, safetensors"):
        exported(run, tmp_path / "x", to="onnx")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_foreign_model_folder_is_refused_by_load(tmp_path: Path) -> None:
    run = make_run(tmp_path, [])
    out = exported(run, tmp_path / "model", to="safetensors")
    (out / "config.json").write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(UserError, match="is not a cpc_lightning model config"):
        cpc_lightning.load(out)


def test_the_composed_config_exports(tmp_path: Path) -> None:
    run = make_run(tmp_path, [*RAW, "encoder.norm=channel"])
    cfg = compose_entry("export", [f"run_dir={run}", "to=cpc_audio", f"out={tmp_path / 'o'}"])
    assert export(cfg).name == "checkpoint_0.pt"
    with pytest.raises(UserError, match="out=<folder, or for to=cpc_audio a file.pt> is required"):
        export(compose_entry("export", [f"run_dir={run}", "to=cpc_audio"]))


@pytest.mark.slow  # a subprocess importing torch + Lightning
def test_python_m_export_refuses_the_make_train_default(tmp_path: Path) -> None:
    run = make_run(tmp_path, [])
    proc = subprocess.run(
        [sys.executable, "-m", "cpc_lightning.export", f"run_dir={run}", "to=cpc_audio",
         f"out={tmp_path / 'out'}"],
        cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("cpc_lightning.export: error: encoder.standardize=true"), last
