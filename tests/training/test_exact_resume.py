"""Exact resume: the data order and the random draws are part of the checkpoint (or depend only
on seed, step and rank), so a resumed run's metrics.csv equals the uninterrupted run's."""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import REPO, cli_env, make_cfg, make_image_tree, run_train, tiny
from torch.utils.data import Dataset

from cpc_lightning.data.audio.samplers import UniformBatchSampler, make_batch_sampler
from cpc_lightning.data.images.datamodules import ImagePatchDataModule
from cpc_lightning.data.resumable import ResumableLoader
from cpc_lightning.training.step_seed import StepSeed


class Items(Dataset):
    def __len__(self) -> int:
        return 20

    def __getitem__(self, i: int) -> int:
        return i


def loader(workers: int = 0, kind: str = "uniform") -> ResumableLoader:
    speakers = [i % 4 for i in range(20)]
    sampler = make_batch_sampler(kind, speakers, 3, 2, 2, seed=7, rank=0, world_size=1)
    return ResumableLoader(Items(), sampler, num_workers=workers)


@pytest.mark.parametrize("workers", [0, 1])
@pytest.mark.parametrize("kind", ["uniform", "same_speaker", "speaker_groups"])
def test_a_loader_continues_after_the_batches_it_delivered(workers, kind):
    first = loader(workers, kind)
    first.batch_sampler.set_epoch(3)
    full = [b.tolist() for b in first]
    it = iter(first)
    seen = [next(it).tolist() for _ in range(2)]
    state = first.state_dict()
    assert state == {"epoch": 3, "batches": 2} and seen == full[:2]

    again = loader(workers, kind)  # a new process: load, then Lightning sets the epoch
    again.load_state_dict(state)
    again.batch_sampler.set_epoch(3)
    assert [b.tolist() for b in again] == full[2:]
    assert again.state_dict()["batches"] == len(full)
    # the resume point is used once; the next epoch starts at its beginning
    again.batch_sampler.set_epoch(4)
    assert len(list(again)) == len(full)


def test_a_finished_epoch_is_not_skipped_in_the_next():
    first = loader()
    state = {"epoch": 0, "batches": len(first)}
    again = loader()
    again.load_state_dict(state)
    again.batch_sampler.set_epoch(1)  # Lightning moves on to epoch 1
    assert len(list(again)) == len(first)


def test_image_batches_and_augmentation_are_seeded_and_resumable(tmp_path):
    root = make_image_tree(tmp_path / "imnet", per_class=4, size=72)

    def dm() -> ImagePatchDataModule:
        d = ImagePatchDataModule(
            root, batch_size=4, image_size=64, patch_size=16, stride=8, augment="v2", seed=3
        )
        d.setup("fit")
        return d

    a = dm().train_dataloader()
    a.batch_sampler.set_epoch(1)
    torch.manual_seed(0)  # the global RNG must not matter
    full = [b["x"] for b in a]
    b = dm().train_dataloader()
    b.load_state_dict({"epoch": 1, "batches": 1})
    b.batch_sampler.set_epoch(1)
    torch.manual_seed(123)
    rest = [x["x"] for x in b]
    assert len(rest) == len(full) - 1
    for x, y in zip(full[1:], rest, strict=True):
        assert torch.equal(x, y)
    c = dm().train_dataloader()
    c.batch_sampler.set_epoch(2)
    assert not torch.equal(next(iter(c))["x"], full[0])  # another epoch, other crops


def test_step_seed_draws_depend_only_on_seed_step_and_rank():
    class T:
        global_step, global_rank = 5, 0

    seed = StepSeed(11)
    seed.on_train_batch_start(T(), None, None, 0)
    a = torch.rand(3), random.random()
    torch.rand(100)  # whatever happened in between ...
    seed.on_train_batch_start(T(), None, None, 0)
    assert torch.equal(a[0], torch.rand(3)) and a[1] == random.random()  # ... is forgotten
    T.global_rank = 1
    seed.on_train_batch_start(T(), None, None, 0)
    assert not torch.equal(a[0], torch.rand(3))


def rows(path: Path) -> list[list[str]]:
    """metrics.csv without the wall-clock columns (perf/: step time, loader wait, throughput,
    peak memory), which no two runs share; every other cell must match."""
    with open(path, newline="") as fh:
        table = list(csv.reader(fh))
    keep = [i for i, name in enumerate(table[0]) if not name.startswith("perf/")]
    assert len(keep) < len(table[0])  # the health callback's perf/ columns are there
    return [[r[i] for i in keep] for r in table]


def test_resumed_run_reproduces_the_uninterrupted_one_in_process(tmp_path):
    """8 steps in one go vs. 4 steps + resume to 8 (a constant learning rate, so that the
    shorter first part has the same schedule): identical metrics.csv and weights."""
    from cpc_lightning.train import train

    base = tiny("model.scheduler=null", "trainer.val_check_interval=2", "data.test_fraction=0.25")

    def run(name: str, steps: int, *extra: str) -> Path:
        cfg = make_cfg([*base, f"trainer.max_steps={steps}", *extra], tmp_path / name)
        cfg.paths.cache_dir = str(tmp_path / "cache")
        train(cfg)
        return tmp_path / name / "run"

    whole = run("whole", 8)
    part = run("part", 4)
    cfg = make_cfg([*base, "trainer.max_steps=8", "ckpt_path=last"], tmp_path / "part")
    cfg.paths.cache_dir = str(tmp_path / "cache")
    train(cfg)
    assert rows(part / "metrics.csv") == rows(whole / "metrics.csv")
    a = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    b = torch.load(part / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_uniform_sampler_without_skip_is_unchanged():
    """The order of an epoch (no resume) is what the sampler always drew."""
    s = UniformBatchSampler(10, 3, seed=1, rank=0, world_size=1)
    s.set_epoch(2)
    assert [i for b in s for i in b] == [i for b in s._rank_batches() for i in b]


# --------------------------------------------------------------------------- slow: SIGKILL
RUN = tiny(
    "model.prediction_steps=2",
    "trainer.max_steps=30",
    "trainer.val_check_interval=3",
    "callbacks.model_checkpoint.every_n_train_steps=1",
)


@pytest.mark.slow
def test_killed_at_random_steps_then_resumed_equals_the_uninterrupted_run(tmp_path):
    """Three random kill steps of a 30-step run (2 batches per epoch, validation every 3 steps):
    each resumed metrics.csv equals the uninterrupted one, cell for cell."""
    env = {"CPC_CACHE_DIR": str(tmp_path / "cache")}
    ref = tmp_path / "ref"
    done = run_train(*RUN, f"hydra.run.dir={ref}", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = rows(ref / "metrics.csv")
    kill_steps = sorted(random.SystemRandom().sample(range(2, 29), 3))
    for step in kill_steps:
        run = tmp_path / f"killed{step}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "cpc_lightning.train", *RUN, f"hydra.run.dir={run}"],
            cwd=REPO,
            env=cli_env(**env),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        target = run / "checkpoints" / f"step{step:07d}.ckpt"
        deadline = time.monotonic() + 300
        while not target.exists():
            assert proc.poll() is None, f"kill step {step}: the run ended before it was killed"
            assert time.monotonic() < deadline, f"kill step {step}: no checkpoint in time"
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        start = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
        resumed = run_train(*RUN, f"hydra.run.dir={run}", "ckpt_path=last", env=env)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert "not resumable" not in resumed.stderr
        got = rows(run / "metrics.csv")
        assert got == expected, f"kill steps {kill_steps}: metrics differ after killing at {step}"
        print(f"killed after step {step}, resumed from step {start}: {len(got) - 1} rows equal")
