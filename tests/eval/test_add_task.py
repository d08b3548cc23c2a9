"""Adding an evaluation task from outside the package touches only what docs/design.md lists
("How to add an evaluation task"): a ``Task`` registered in ``eval/registry.py`` and a DataModule
that lists the task's label kind in ``labels``. ``evaluate task=<new>`` then runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import compose_entry, make_run

from cpc_lightning.data.audio.datamodules import SyntheticSpeechDataModule
from cpc_lightning.errors import UserError
from cpc_lightning.eval import registry
from cpc_lightning.eval.probe_tasks import run_probe_task
from cpc_lightning.eval.report import ProbeReport
from cpc_lightning.eval.tasks import Split, Task, pool


class ParityData(SyntheticSpeechDataModule):
    """The synthetic corpus with one more label kind: the parity of each speaker's index."""

    @property
    def labels(self) -> list[str]:
        return [*super().labels, "speaker_parity"]


def parity_rows(feats: torch.Tensor, record, window_frames: int, how: str) -> Split | None:
    """One pooled row per utterance, labelled with its speaker's parity."""
    if len(feats) == 0 or record.speaker_index < 0:
        return None
    return pool(feats, how)[None], torch.tensor([record.speaker_index % 2])


PARITY = Task(
    "speaker_parity",
    frozenset({"speaker_parity"}),
    run_probe_task,
    ProbeReport,
    rows=parity_rows,
    class_names=lambda datamodule: ["even", "odd"],
)


@pytest.fixture
def parity_task(monkeypatch: pytest.MonkeyPatch) -> Task:
    monkeypatch.setitem(registry.TASKS, PARITY.name, PARITY)
    return PARITY


def test_a_task_added_from_outside_runs_through_evaluate(tmp_path: Path, parity_task: Task):
    from cpc_lightning.evaluate import evaluate

    run = make_run(tmp_path, [f"data._target_={__name__}.ParityData"])
    overrides = [f"run_dir={run}", "probe.epochs=2", "probe.min_steps=5", "baseline=none"]
    report = evaluate(compose_entry("evaluate", [*overrides, "task=speaker_parity"]))
    saved = json.loads((run / "eval" / "speaker_parity.json").read_text())
    assert saved == report and saved["task"] == "speaker_parity"
    assert saved["class_names"] == ["even", "odd"] and list(saved["sources"]) == ["cpc"]
    assert 0.0 <= registry.headline(saved) == saved["sources"]["cpc"]["accuracy"] <= 1.0
    assert "| CPC (trained) |" in saved["table"] and "speaker_parity" in saved["table"]


class PhonesOnly:
    """A DataModule stand-in with frame phones and nothing else."""

    labels = ["phones", "phone_sequences"]


def test_a_task_needs_its_labels_and_a_name_the_registry_knows(parity_task: Task):
    assert registry.tasks_of(PhonesOnly()) == ["phones", "abx", "phone_recognition", "units"]
    with pytest.raises(
        UserError,
        match=r"task=speaker_parity: PhonesOnly has no labels for it \("
        r"available: phones, abx, phone_recognition, units\)",
    ):
        registry.check_task(parity_task, PhonesOnly())
    with pytest.raises(UserError, match="task=nope is not one of phones, speakers, classes, abx"):
        registry.get_task("nope")
