"""docs/design.md, "How to add a negative mode", followed to the letter from test code: one
``MODES`` row and one YAML in a config folder outside the package. The mode then draws from its
support, is refused at start-up where the batches cannot hold its negatives (without a line of
``errors.py`` or ``build.py`` knowing it), and trains."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import make_cfg, tiny

from cpc_lightning.errors import UserError
from cpc_lightning.model.negatives import MODES, NegativeSampler

MODE = "toy_speaker_excl"


@pytest.fixture
def toy_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The mode's two places: its MODES row (group, own sequence excluded) and its YAML."""
    monkeypatch.setitem(MODES, MODE, ("speaker", True))
    conf = tmp_path / "my_conf" / "negatives"
    conf.mkdir(parents=True)
    (conf / f"{MODE}.yaml").write_text(
        "# Frames of the speaker's other sequences (a toy copy of same_speaker_excl).\n"
        "defaults:\n  - batch\n  - _self_\n\n"
        f"mode: {MODE}\n"
    )
    return f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]"


def test_a_new_mode_draws_from_its_group(toy_mode):
    torch.manual_seed(0)
    speaker = torch.tensor([0, 0, 1, 1])
    idx = NegativeSampler(MODE, 256).sample(
        torch.ones(4, 3, dtype=torch.bool), speaker, torch.arange(4), 2, 1
    )
    drawn = idx.reshape(4, -1)  # (anchor sequence, draws); candidates are seq * 3 + t
    for a in range(4):
        group = [s for s in range(4) if s != a and speaker[s] == speaker[a]]
        assert set(drawn[a].tolist()) == {s * 3 + t for s in group for t in range(3)}


def test_a_new_mode_is_checked_at_start_up_and_trains(toy_mode, tmp_path):
    from cpc_lightning.train import train

    refused = make_cfg(tiny(toy_mode, f"negatives={MODE}", "data.sampler=uniform"), tmp_path)
    with pytest.raises(UserError, match=f"negatives={MODE} draws each anchor's negatives from"):
        train(refused)
    assert not (tmp_path / "run" / "checkpoints").exists()
    ok = tiny(
        toy_mode,
        f"negatives={MODE}",
        "data.sampler=speaker_groups",
        "data.speakers_per_batch=2",
        "data.windows_per_speaker=2",
        "trainer.max_steps=2",
    )
    result = train(make_cfg(ok, tmp_path / "ok"))
    assert result["global_step"] == 2 and result["setup"]["negatives"] == MODE
