"""Every command line of README.md runs, exactly as written there apart from paths and small step
counts (``trainer.max_steps=2``, a short probe). Lines that need GPUs or a SLURM cluster are
composed (``--cfg job``) instead when the machine has no GPU; the test says which."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch
from helpers import REPO, SHARED_DATA, SHARED_FIXTURES, make_image_tree, run_train

SMALL_STEPS = ["trainer.max_steps=2"]
SMALL_PROBE = ["probe.epochs=1", "probe.min_steps=10"]
DATASETS = {
    "/path/to/LibriSpeech": "librispeech_sample",
    "<LibriSpeech root>": "librispeech_sample",
    "/path/to/fsdd": "fsdd",
    "/path/to/speech_commands": "speech_commands_subset",
    "/path/to/cifar10": "cifar10_subset",
    "/path/to/timit": "timit_sample",
    "<LibriSpeech>": "librispeech_sample",
    "<speechocean762_subset>": "speechocean762_subset",
}
CPC_AUDIO_RUN = SHARED_FIXTURES / "cpc_audio" / "train_run"


def readme_commands() -> list[str]:
    """``python -m cpc_lightning.*`` lines of the README's bash blocks (continuations joined,
    trailing comments dropped)."""
    text = (REPO / "README.md").read_text()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith("python -m cpc_lightning."):
                out.append(line)
    return out


def needs_cluster(args: list[str]) -> str | None:
    """Why this line cannot run on this machine (None: it can)."""
    if "launcher=slurm" in args:
        return "needs a SLURM cluster"
    if any(a in ("trainer=ddp", "trainer=gpu") for a in args) and not torch.cuda.is_available():
        return "needs a GPU"
    return None


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Paths the README's placeholders stand for; a trained run dir (the default pipeline)."""
    if not SHARED_DATA.is_dir() or not CPC_AUDIO_RUN.is_dir():
        pytest.skip(f"shared example datasets or fixtures absent: {SHARED_DATA}, {CPC_AUDIO_RUN}")
    root = tmp_path_factory.mktemp("readme")
    cache = root / "cache"
    run = root / "default_run"
    proc = run_train(
        *SMALL_STEPS, *SMALL_PROBE, f"hydra.run.dir={run}", env={"CPC_CACHE_DIR": str(cache)}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    items = write_item_file(run, root / "test.item")
    converted = root / "converted"
    proc = run_train(
        f"checkpoint={CPC_AUDIO_RUN}",
        f"out={converted}",
        module="cpc_lightning.convert",
        env={"CPC_CACHE_DIR": str(cache)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    shards = root / "shards"  # what `data.streaming=true data.root=<that dir or URL>` reads
    prep = run_train(
        "data=librispeech", f"data.root={SHARED_DATA / 'librispeech_sample'}", f"out={shards}",
        f"paths.cache_dir={cache}", module="cpc_lightning.prepare",
    )  # fmt: skip
    assert prep.returncode == 0, prep.stderr[-3000:]
    out = {k: str(SHARED_DATA / v) for k, v in DATASETS.items()}
    out.update(
        {
            "/path/to/imagenet": str(make_image_tree(root / "imagenet", per_class=2)),
            "<training run dir>": str(run),
            "<run dir>": str(run),
            "<dir>/checkpoints/step0000400.ckpt": str(run / "checkpoints" / "last.ckpt"),
            "<dir>": str(run),
            "<folder>": str(root / "features"),
            "<new folder>": str(root / "features_converted"),
            "<item file>": str(items),
            "<partition>": "gpu",
            "/path/to/CPC_audio/run": str(CPC_AUDIO_RUN),
            "<converted run dir>": str(converted),
            "<dir or s3://...>": str(root / "shards_cli"),
            "<that dir or URL>": str(shards),
            "cache": str(cache),
            "root": str(root),
        }
    )
    return out


def write_item_file(run: Path, path: Path) -> Path:
    """An item file (Libri-light format) of the held-out utterances of ``run``'s own data: what
    `extract run_dir=<dir> out=<folder>` writes features for."""
    from cpc_lightning.build import build_datamodule
    from cpc_lightning.eval.abx import write_items
    from cpc_lightning.eval.speech_tasks import ABXSettings, items_for
    from cpc_lightning.runs import load_run_config

    dm = build_datamodule(load_run_config(run).data)
    dm.setup()
    records = dm.items("test")
    items = items_for(records, dm.phone_names, ABXSettings())
    # item file ids are the feature paths without suffix: the audio paths relative to data.root
    rel = {r.uid: Path(r.rel).with_suffix("").as_posix() for r in records}
    items.file = [rel[u] for u in items.file]
    write_items(items, path)
    return path


COMMANDS = readme_commands()


def test_the_readme_has_the_commands_users_quote():
    assert len(COMMANDS) >= 25
    assert any("encoder=resnet data=imagenet_patches" in c for c in COMMANDS)
    assert any(c.startswith("python -m cpc_lightning.evaluate") for c in COMMANDS)


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS, ids=[f"{i:02d}" for i in range(len(COMMANDS))])
def test_readme_command_runs(command: str, places: dict[str, str], tmp_path: Path) -> None:
    for placeholder in sorted(places, key=len, reverse=True):
        if placeholder not in ("cache", "root"):
            command = command.replace(placeholder, places[placeholder])
    args = shlex.split(command)[2:]
    module, args = args[0], args[1:]
    # a search's trial count: 2 trials of 2 steps are enough to show it runs
    args = [
        "hydra.sweeper.n_trials=2" if a.startswith("hydra.sweeper.n_trials=") else a for a in args
    ]
    left = re.findall(r"(?<!\?P)<[^<>]+>", " ".join(args))  # a regex's (?P<name>) is no placeholder
    assert not left, f"unhandled placeholder {left} in: {command}"
    extra: list[str] = []
    if module == "cpc_lightning.evaluate":
        extra += SMALL_PROBE
    if module == "cpc_lightning.train":
        extra += [*SMALL_STEPS, *SMALL_PROBE]
        if not any(a.startswith(("hydra.run.dir", "resume=")) for a in args):
            extra.append(f"hydra.run.dir={tmp_path / 'run'}")
        if "-m" in args:
            extra.append(f"hydra.sweep.dir={tmp_path / 'sweep'}")
    if module == "cpc_lightning.convert":  # a new run dir each time
        args = [f"out={tmp_path / 'converted'}" if a.startswith("out=") else a for a in args]
    reason = needs_cluster(args)
    if reason is not None:
        args = [a for a in args if a != "-m"]
        extra = ["--cfg", "job"] if "--cfg" not in args else []
    # a sweep runs every point with its end-of-run probes: the 12-point grid takes over 10 min
    timeout = 2400 if "-m" in args else 600
    env = {"CPC_CACHE_DIR": places["cache"]}
    proc = run_train(*args, *extra, module=module, env=env, timeout=timeout)
    assert proc.returncode == 0, f"{command}\n{proc.stderr[-3000:]}"
    if reason is not None:
        print(f"composed only ({reason}): {command}")
