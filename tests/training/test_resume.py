"""Kill and resume: atomic checkpoints, continued metrics.csv, same final step.

The slow tests run ``python -m cpc_lightning.train`` in a subprocess on a tiny synthetic corpus
(3 speakers x 4 utterances: 2 training batches per epoch).
"""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from helpers import REPO, run_train, tiny
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cpc_lightning.training.checkpointing import AtomicModelCheckpoint
from cpc_lightning.training.csv_logger import AppendingCSVLogger

TINY = tiny(
    "model.prediction_steps=2",
    drop=(
        "callbacks.model_checkpoint.every_n_train_steps",
        "trainer.max_steps",
        "trainer.val_check_interval",
    ),
)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "CUDA_VISIBLE_DEVICES": ""}


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def steps_with(rows: list[dict[str, str]], column: str) -> list[int]:
    return [int(r["step"]) for r in rows if r.get(column)]


# ------------------------------------------------------------------ fast: in-process pieces
class _Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        loss = self.net(batch[0]).pow(2).mean()
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit_tiny(tmp_path: Path, steps: int) -> tuple[pl.Trainer, AtomicModelCheckpoint]:
    ckpt = AtomicModelCheckpoint(
        dirpath=tmp_path / "checkpoints", save_last=True, save_top_k=-1, every_n_train_steps=1
    )
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        callbacks=[ckpt],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    data = DataLoader(TensorDataset(torch.randn(16, 4)), batch_size=4)
    trainer.fit(_Tiny(), data)
    return trainer, ckpt


def test_checkpoint_never_partially_written(tmp_path):
    trainer, ckpt = _fit_tiny(tmp_path, steps=2)
    last = tmp_path / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    assert torch.load(last, weights_only=False)["global_step"] == 2

    io = trainer.strategy.checkpoint_io
    real_save = io.save_checkpoint

    def dies_mid_write(checkpoint, path, storage_options=None):
        real_save(checkpoint, path, storage_options)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])  # half a file, then the "crash"
        raise OSError("disk full")

    io.save_checkpoint = dies_mid_write
    with pytest.raises(OSError, match="disk full"):
        ckpt._save_checkpoint(trainer, str(last))
    io.save_checkpoint = real_save

    assert last.read_bytes() == before
    assert torch.load(last, weights_only=False)["global_step"] == 2
    assert not list(last.parent.glob(".*partial")), "temporary file left behind"
    for path in last.parent.glob("*.ckpt"):
        torch.load(path, weights_only=False)  # every visible checkpoint is complete


def test_csv_logger_continues_without_duplicates(tmp_path):
    first = AppendingCSVLogger(tmp_path, name="", version="")
    for s in range(6):
        first.log_metrics({"train/loss": float(s)}, step=s)
    first.save()
    # a resumed process: replays steps 4.. (its checkpoint was at step 4), logs a new column
    second = AppendingCSVLogger(tmp_path, name="", version="")
    for s in range(4, 8):
        second.log_metrics({"train/loss": 10.0 + s, "val/loss": 1.0}, step=s)
    second.save()
    rows = read_rows(tmp_path / "metrics.csv")
    assert steps_with(rows, "train/loss") == list(range(8))
    assert [float(r["train/loss"]) for r in rows] == [0, 1, 2, 3, 14, 15, 16, 17]
    assert steps_with(rows, "val/loss") == [4, 5, 6, 7]
    # a row without a trainer step (e.g. probe results after fit) does not wipe the file
    third = AppendingCSVLogger(tmp_path, name="", version="")
    third.log_metrics({"probe/acc": 0.5})
    third.save()
    assert steps_with(read_rows(tmp_path / "metrics.csv"), "train/loss") == list(range(8))


def test_csv_logger_keeps_columns_another_process_wrote(tmp_path):
    """ddp_spawn: the parent's logger exists before the workers write metrics.csv, then logs
    the end-of-run probes into it."""
    parent = AppendingCSVLogger(tmp_path, name="", version="")
    parent.log_hyperparams({"seed": 1})  # the writer is created before the file exists
    worker = AppendingCSVLogger(tmp_path, name="", version="")
    for s in range(3):
        worker.log_metrics({"train/loss": float(s), "val/acc": 0.1 * s}, step=s)
    worker.save()
    parent.log_metrics({"probe/phones": 0.5})
    parent.save()
    rows = read_rows(tmp_path / "metrics.csv")
    assert steps_with(rows, "train/loss") == [0, 1, 2]
    assert [r["probe/phones"] for r in rows if r["probe/phones"]] == ["0.5"]


# ------------------------------------------------------------------ slow: the CLI
def _expected_lr(step: int, total: int, lr: float = 2e-4, warmup: int = 20, floor: float = 0.1):
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


@pytest.mark.slow
def test_sigkill_then_resume_continues_the_same_run(tmp_path):
    run_dir = tmp_path / "run"
    max_steps, every = 40, 4
    overrides = [
        *TINY,
        f"trainer.max_steps={max_steps}",
        "trainer.val_check_interval=2",
        f"callbacks.model_checkpoint.every_n_train_steps={every}",
        f"hydra.run.dir={run_dir}",
    ]
    target = run_dir / "checkpoints" / f"step{2 * every:07d}.ckpt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cpc_lightning.train", *overrides],
        cwd=REPO,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not target.exists():
            assert proc.poll() is None, f"run ended before it was killed: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "no step checkpoint appeared in time"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    killed_at = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    # the step file is written before last.ckpt: a kill in between leaves the previous last.ckpt
    assert every <= killed_at["global_step"] < max_steps
    # the checkpoint of step N is written after step N's rows were flushed
    rows_before = read_rows(run_dir / "metrics.csv")
    assert max(steps_with(rows_before, "train/loss")) >= killed_at["global_step"] - 1

    done = run_train(*overrides, "ckpt_path=last")
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Restoring states from the checkpoint" in done.stderr + done.stdout
    final = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert final["global_step"] == max_steps

    rows = read_rows(run_dir / "metrics.csv")
    train_steps = steps_with(rows, "train/loss")
    assert train_steps == list(range(max_steps)), "gap or duplicate in the training rows"
    for column in ("val/loss", "lr-Adam"):
        counts = Counter(steps_with(rows, column))
        assert counts and max(counts.values()) == 1, f"duplicate {column} rows: {counts}"
    # scheduler state restored: the learning rate follows one schedule across the restart
    for r in rows:
        if r.get("lr-Adam"):
            assert float(r["lr-Adam"]) == pytest.approx(_expected_lr(int(r["step"]), max_steps))
    # data-loader epoch restored: 2 batches per epoch before and after the kill
    for r in rows:
        if r.get("train/loss"):
            assert int(r["epoch"]) == int(r["step"]) // 2


@pytest.mark.slow
def test_resume_dir_uses_the_saved_config(tmp_path):
    run_dir = tmp_path / "run"
    first = run_train(
        *TINY,
        "trainer.max_steps=4",
        "trainer.val_check_interval=2",
        f"hydra.run.dir={run_dir}",
    )
    assert first.returncode == 0, first.stderr[-4000:]
    # only the run dir and the new step budget: the tiny nets come from the saved config
    more = run_train(f"resume={run_dir}", "trainer.max_steps=6")
    assert more.returncode == 0, more.stderr[-4000:]
    final = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert final["global_step"] == 6
    rows = read_rows(run_dir / "metrics.csv")
    assert steps_with(rows, "train/loss") == list(range(6))
    saved = (run_dir / "config_resolved.yaml").read_text()
    assert "hidden_dim: 16" in saved and "max_steps: 6" in saved


def _batch_log(path: Path) -> dict[int, list[int]]:
    import json

    out = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        out[row["step"]] = row["index"]
    return out


@pytest.mark.slow
def test_streaming_run_resumes_mid_epoch_on_the_same_batches(tmp_path):
    pytest.importorskip("litdata", reason="pip install -e '.[streaming]'")
    corpus = [
        "data.synthetic.num_speakers=3",
        "data.synthetic.utterances_per_speaker=12",
        "data.synthetic.min_seconds=0.5",
        "data.synthetic.max_seconds=0.8",
        f"paths.cache_dir={tmp_path / 'cache'}",
    ]
    shards = tmp_path / "shards"
    prep = run_train(*corpus, f"out={shards}", module="cpc_lightning.prepare")
    assert prep.returncode == 0, prep.stderr[-4000:]
    import json

    manifest = json.loads((shards / "cpc_manifest.json").read_text())
    per_epoch = len(manifest["splits"]["train"]) // 4  # batches of 4, the last short one dropped
    steps, stop = 12, 3
    assert stop < per_epoch < steps  # stop mid-epoch 0, finish in epoch 1
    common = [
        *tiny("model.prediction_steps=2", "data.window=3200", drop=("trainer.max_steps",)),
        *corpus,
        "data.streaming=true",
        f"+data.root={shards}",
        "trainer.val_check_interval=4",
        "callbacks.model_checkpoint.every_n_train_steps=1",
        "+callbacks.batch_log._target_=helpers.callbacks.BatchIndexLog",
    ]
    straight = run_train(
        *common, f"trainer.max_steps={steps}", f"+callbacks.batch_log.path={tmp_path / 'a.jsonl'}",
        f"hydra.run.dir={tmp_path / 'a'}",
    )  # fmt: skip
    assert straight.returncode == 0, straight.stderr[-4000:]
    part = [*common, f"+callbacks.batch_log.path={tmp_path / 'b.jsonl'}"]
    first = run_train(*part, f"trainer.max_steps={stop}", f"hydra.run.dir={tmp_path / 'b'}")
    assert first.returncode == 0, first.stderr[-4000:]
    rest = run_train(
        *part, f"trainer.max_steps={steps}", f"hydra.run.dir={tmp_path / 'b'}", "ckpt_path=last"
    )
    assert rest.returncode == 0, rest.stderr[-4000:]
    a, b = _batch_log(tmp_path / "a.jsonl"), _batch_log(tmp_path / "b.jsonl")
    assert sorted(a) == sorted(b) == list(range(steps))
    assert a == b  # the resumed run trains step k on the batch the straight run did
    epoch0 = [i for s in range(per_epoch) for i in a[s]]
    assert len(set(epoch0)) == len(epoch0) == 4 * per_epoch  # no utterance twice in an epoch
