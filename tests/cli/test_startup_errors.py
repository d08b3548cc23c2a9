"""Finding 7: mistakes that gave tracebacks (some only at the first training step) answer at
start-up with one line naming the key, the value and a fix, exit code 2, nothing trained."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import BASE, make_cfg, make_run, run_train, tiny, write_tone

from cpc_lightning.errors import UserError


def tone_folder(root: Path) -> Path:
    for spk in ("ann", "bob"):
        for i in range(3):
            write_tone(root / f"{i}_{spk}_{i}.wav", 0.5, seed=i)
    return root


SYNTHETIC = tuple(k for k in BASE if k.startswith("data.synthetic."))


def small(*overrides: str) -> list[str]:
    """``tiny`` overrides; without the synthetic-corpus keys when another dataset is chosen."""
    other_data = any(o.startswith("data=") for o in overrides)
    return tiny(*overrides, drop=SYNTHETIC if other_data else ())


CASES = {
    "same_speaker_excl": (
        ["negatives=same_speaker_excl"],
        ["negatives=same_speaker_excl", "data.sampler=uniform", "data.windows_per_speaker=2"],
    ),
    "same_speaker_excl_q1": (
        [
            "negatives=same_speaker_excl",
            "data.sampler=speaker_groups",
            "data.windows_per_speaker=1",
        ],
        ["data.windows_per_speaker=1", "data.sampler=speaker_groups"],
    ),
    "batch_size": (["data.batch_size=0"], ["data.batch_size=0", ">= 1"]),
    "lr": (["model.optimizer.lr=-1"], ["model.optimizer.lr=-1", "positive number", "2e-4"]),
    "betas": (["model.optimizer.betas=[1.5,0.9]"], ["model.optimizer", "beta"]),
    "max_steps": (["trainer.max_steps=abc"], ["trainer.max_steps='abc'", "integer"]),
    "val_interval": (["trainer.val_check_interval=-3"], ["trainer.val_check_interval=-3"]),
    "torch_threads": (["torch_threads=0"], ["torch_threads=0", ">= 1"]),
    "fewer_windows_than_batch": (
        ["data.batch_size=4096"],
        ["training loader would be empty", "data.batch_size=4096", "data.drop_last=false"],
    ),
    "root": (["data=librispeech"], ["data.root is required", "data.root=/path/to/dataset"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_mistake_is_one_user_error_at_start_up(case, tmp_path):
    from cpc_lightning.train import train

    overrides, needles = CASES[case]
    with pytest.raises(UserError) as err:
        train(make_cfg(small(*overrides), tmp_path))
    msg = str(err.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, msg
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before training


def test_an_invalid_pattern_regex_is_named(tmp_path):
    from cpc_lightning.train import train

    root = tone_folder(tmp_path / "tones")
    cfg = make_cfg(
        small("data=audio_folder", f"data.root={root}", "data.pattern='(?P<label>[0-9]'"), tmp_path
    )
    with pytest.raises(UserError, match=r"data.pattern='\(\?P<label>\[0-9\]' is not a valid"):
        train(cfg)


def test_same_speaker_excl_with_speaker_groups_starts(tmp_path):
    """The check refuses only what cannot work: P x Q with Q >= 2 trains."""
    from cpc_lightning.train import train

    ok = tiny(
        "negatives=same_speaker_excl",
        "data.sampler=speaker_groups",
        "data.speakers_per_batch=2",
        "data.windows_per_speaker=2",
        "trainer.max_steps=2",
    )
    assert train(make_cfg(ok, tmp_path))["global_step"] == 2


def one_error_line(proc) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def test_an_unquoted_regex_override_is_one_line(tmp_path):
    root = tone_folder(tmp_path / "tones")
    proc = run_train(
        "data=audio_folder",
        f"data.root={root}",
        r"data.pattern=(?P<label>\d)_",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    line = one_error_line(proc)
    assert "data.pattern=(?P<label>\\d)_" in line and "quote" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_max_steps_abc_names_the_key_on_the_command_line(tmp_path):
    proc = run_train(*tiny("trainer.max_steps=abc"), f"hydra.run.dir={tmp_path / 'run'}")
    assert "trainer.max_steps='abc' must be an integer" in one_error_line(proc)


@pytest.mark.slow  # in-process: tests/test_runs.py
def test_evaluate_with_another_architecture_is_one_line(tmp_path):
    run = make_run(tmp_path / "a")
    other = make_run(tmp_path / "b", ["encoder.hidden_dim=32"])
    proc = run_train(
        f"run_dir={run}",
        f"checkpoint={other / 'checkpoints' / 'last.ckpt'}",
        "task=speakers",
        module="cpc_lightning.evaluate",
    )
    line = one_error_line(proc)
    assert "does not fit the model" in line and "encoder." in line


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_mistake_is_one_line_on_the_command_line(case, tmp_path):
    overrides, needles = CASES[case]
    proc = run_train(
        *small(*overrides),
        f"hydra.run.dir={tmp_path / 'run'}",
        env={"CPC_CACHE_DIR": str(tmp_path / "cache")},
    )
    line = one_error_line(proc)
    for needle in needles:
        assert needle in line, line
    assert not (tmp_path / "run" / "checkpoints").exists()
