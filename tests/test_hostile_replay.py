"""Issue 30, acceptance 2: the hostile pass replayed as a user types it, on the CLI.

``B`` is the issue's base (``data=fsdd`` on 80 FSDD files, batch 4, window 5120). Each refused
or failing command must leave what is already written byte-identical (checksums of the run dir,
shard folder or feature folder before and after), be one line on stderr (its last line starts
with ``cpc_lightning``, no traceback) with exit 2, and no run may exit 0 with a non-finite or
exploded final loss. One command per finding; the details are tested in
``test_reliability_runs.py``, ``test_reliability_io.py``, ``cli/test_extract.py`` and
``test_api.py``.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
from helpers import SHARED_DATA, TESTS, make_run, run_train, write_tone
from test_reliability_runs import checksums

pytestmark = pytest.mark.slow

FSDD = SHARED_DATA / "fsdd" / "recordings"
IMAGE_RUN = TESTS / "fixtures" / "run_f2cadb0_image"


def corpus(root: Path) -> Path:
    """80 FSDD files as symlinks: digits 0-9, 4 speakers, takes 0 (held out) and 5 (train)."""
    speakers = sorted({p.name.split("_")[1] for p in FSDD.glob("*.wav")})[:4]
    root.mkdir(parents=True)
    for d in range(10):
        for s in speakers:
            for take in (0, 5):
                name = f"{d}_{s}_{take}.wav"
                (root / name).symlink_to(FSDD / name)
    return root


def cli(entry: str, *args: str, cache: Path) -> subprocess.CompletedProcess:
    module = "cpc_lightning.train" if entry == "train" else f"cpc_lightning.{entry}"
    return run_train(*args, module=module, env={"CPC_CACHE_DIR": str(cache)}, cwd=cache.parent)


def refused(proc: subprocess.CompletedProcess, message: str = "") -> None:
    """Exit 2, one line naming the entry, no traceback."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines and lines[-1].startswith("cpc_lightning"), lines[-3:]
    assert message in lines[-1], lines[-1]


def final_loss_is_sane(run: Path, proc: subprocess.CompletedProcess) -> None:
    """No exit 0 with ``status: ok`` and a non-finite or exploded final loss."""
    if proc.returncode != 0:
        return
    result = json.loads((run / "result.json").read_text())
    losses = [v for k, v in result["metrics"].items() if k.endswith("loss")]
    assert result.get("status", "ok") == "ok" and losses, result
    assert all(math.isfinite(v) and abs(v) < 1e3 for v in losses), result


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if not FSDD.is_dir():
        pytest.skip(f"the shared FSDD recordings are absent: {FSDD}")
    root = tmp_path_factory.mktemp("hostile")
    data = corpus(root / "fsdd")
    base = [
        "data=fsdd", f"data.root={data}", "data.batch_size=4", "data.window=5120",
        "trainer.limit_val_batches=1", "probe.enabled=false", "data.num_workers=0",
        "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
    ]  # fmt: skip
    cache = root / "cache"
    run = root / "X"
    proc = cli("train", *base, "trainer.max_steps=6", f"hydra.run.dir={run}", cache=cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    final_loss_is_sane(run, proc)
    return {"root": root, "data": data, "cache": cache, "run": run, "base": base}


def test_failed_and_finished_resumes_and_new_runs_change_nothing(world) -> None:
    """Findings 1, 2, 5 and a model mismatch on resume=: the run dir stays byte-identical."""
    run, base, cache = world["run"], world["base"], world["cache"]
    before = checksums(run)
    bad = cli("train", *base, f"resume={run}", "context.out_dim=128", "trainer.max_steps=10",
              cache=cache)  # fmt: skip
    refused(bad, "does not fit the model")
    assert checksums(run) == before
    again = cli("train", *base, f"resume={run}", "trainer.max_steps=6", cache=cache)
    assert again.returncode == 0, again.stderr[-3000:]
    assert checksums(run) == before  # finding 2: a finished run is not retrained
    new = cli("train", *base, "trainer.max_steps=6", f"hydra.run.dir={run}", cache=cache)
    refused(new)
    assert checksums(run) == before  # finding 5: a refused new run touches nothing
    ckpt = cli("train", *base, f"resume={run / 'checkpoints' / 'last.ckpt'}", cache=cache)
    refused(ckpt)
    assert checksums(run) == before


def test_a_failed_prepare_and_a_prepare_into_a_run_dir_change_nothing(world) -> None:
    """Finding 3."""
    root, cache, run = world["root"], world["cache"], world["run"]
    shards, data = root / "P", [f"data.root={world['data']}", "data=fsdd", "data.window=5120"]
    ok = cli("prepare", *data, f"out={shards}", cache=cache)
    assert ok.returncode == 0, ok.stderr[-3000:]
    before = checksums(shards)
    refused(cli("prepare", *data, f"out={shards}", "chunk_bytes=20000", cache=cache))
    assert checksums(shards) == before
    run_before = checksums(run)
    refused(cli("prepare", *data, f"out={run}", cache=cache))
    assert checksums(run) == run_before


def test_extract_refusals_and_overwrite(world) -> None:
    """Findings 4 and 9, ``layer=9``, an image run on audio data."""
    root, cache, run = world["root"], world["cache"], world["run"]
    clash = root / "clash"
    for name in ("s1/a.wav", "s1/a.flac", "s2/b.wav"):
        write_tone(clash / name, 0.5)
    folder = ["data=audio_folder", f"data.root={clash}", f"data.cache_dir={cache}"]
    refused(cli("extract", f"run_dir={run}", f"out={root / 'F4'}", *folder, cache=cache),
            "would both write")  # fmt: skip
    assert not (root / "F4").exists()
    feats = root / "F"
    full = cli("extract", f"run_dir={run}", f"out={feats}", cache=cache)
    assert full.returncode == 0, full.stderr[-3000:]
    before = checksums(feats)
    refused(cli("extract", f"run_dir={run}", f"out={feats}", "overwrite=true", "layer=9",
                cache=cache), "layer=9 is out of range")  # fmt: skip
    audio = ["data=fsdd", f"data.root={world['data']}"]
    image_on_audio = cli("extract", f"run_dir={IMAGE_RUN}", f"out={feats}", "overwrite=true",
                         *audio, cache=cache)  # fmt: skip
    refused(image_on_audio, "reads image but data")
    assert checksums(feats) == before
    few = root / "few"
    few.mkdir()
    for src in sorted(world["data"].iterdir())[:6]:
        (few / src.name).symlink_to(src.resolve())
    fewer = cli("extract", f"run_dir={run}", f"out={feats}", "overwrite=true",
                f"data.root={few}", cache=cache)  # fmt: skip
    assert fewer.returncode == 0, fewer.stderr[-3000:]
    listed = json.loads((feats / "features.json").read_text())["files"]
    on_disk = sorted(p.relative_to(feats).as_posix() for p in feats.rglob("*.npy"))
    assert sorted(listed) == on_disk and len(on_disk) == 6  # finding 9: nothing old stays


def test_diverged_runs_wrong_checkpoints_and_bad_contexts(world) -> None:
    """Finding 6 (exit 0 only with a sane final loss), finding 8 (another run's checkpoint),
    ``context=masked_conv`` with audio."""
    root, base, cache, run = world["root"], world["base"], world["cache"], world["run"]
    diverged = root / "D"
    proc = cli("train", *base, "trainer.max_steps=8", "model.optimizer.lr=1e30",
               f"hydra.run.dir={diverged}", cache=cache)  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    final_loss_is_sane(diverged, proc)
    assert proc.returncode != 0
    before = checksums(run)
    other = make_run(root / "other") / "checkpoints" / "last.ckpt"
    refused(cli("evaluate", f"run_dir={run}", f"checkpoint={other}", "task=speakers",
                cache=cache))  # fmt: skip
    assert checksums(run) == before
    masked = root / "M"
    refused(cli("train", *base, "context=masked_conv", f"hydra.run.dir={masked}", cache=cache),
            "reads image patch grids")  # fmt: skip
    assert not masked.exists() or not any(masked.iterdir())
