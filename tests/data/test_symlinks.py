"""Finding 8: a data root assembled from symbolic links (``ln -s /corpus/spk1 mydata/``) works in
every entry point; link loops and dangling links do not break indexing."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from helpers import BASE, compose_entry, make_cfg, tiny, write_tone

from cpc_lightning.data.audio.manifest import AudioDataWarning
from cpc_lightning.data.audio.probe import scan_tree

SYNTHETIC = tuple(k for k in BASE if k.startswith("data.synthetic."))


def linked_librispeech(corpus: Path, root: Path) -> Path:
    """``root/train-clean-100/<spk>`` -> links to the speaker folders of ``corpus``, and a link
    to its phone label file."""
    (root / "train-clean-100").mkdir(parents=True)
    for spk in sorted((corpus / "train-clean-100").iterdir()):
        (root / "train-clean-100" / spk.name).symlink_to(spk, target_is_directory=True)
    (root / "converted_aligned_phones.txt").symlink_to(corpus / "converted_aligned_phones.txt")
    return root


@pytest.fixture
def linked_run(libri_tree, tmp_path) -> tuple[Path, Path]:
    """A 2-step run trained on a root of symlinked speaker folders: (root, run dir)."""
    from cpc_lightning.train import train

    root = linked_librispeech(libri_tree, tmp_path / "mydata")
    data = ["data=librispeech", f"data.root={root}", "data.test_fraction=0.3"]
    train(make_cfg(tiny(*data, "trainer.max_steps=2", drop=SYNTHETIC), tmp_path))
    run = tmp_path / "run"
    assert f"root: {root}" in (run / "config_resolved.yaml").read_text()  # the link root
    return root, run


def test_extract_and_the_evaluation_data_on_symlinked_speaker_folders(linked_run, tmp_path):
    from cpc_lightning.extract import extract
    from cpc_lightning.runs import open_data, open_run

    root, run = linked_run
    opened = open_run(run)
    dm = open_data(compose_entry("evaluate", [f"run_dir={run}"]), opened.config)  # evaluate's
    records = dm.items("train") + dm.items("test")
    assert len(records) == 14 and all(
        r.path.startswith(f"{root}/train-clean-100/") for r in records
    )
    assert all(dm.load(r).numel() == r.num_samples for r in records)

    out = tmp_path / "feats"
    summary = extract(compose_entry("extract", [f"run_dir={run}", f"out={out}"]))
    files = json.loads((out / "features.json").read_text())["files"]
    assert len(files) == summary["num_files"] == 14
    assert all(f.startswith("train-clean-100/") for f in files)  # paths as seen from the root
    assert (out / "train-clean-100" / "11" / "100" / "11-100-0000.npy").is_file()


@pytest.mark.slow
def test_evaluate_cli_on_symlinked_speaker_folders(linked_run, tmp_path):
    from helpers import run_train

    _, run = linked_run
    proc = run_train(
        f"run_dir={run}",
        "task=speakers",
        "probe.epochs=1",
        "probe.min_steps=10",
        module="cpc_lightning.evaluate",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (
        json.loads((run / "eval" / "speakers.json").read_text())["sources"]["cpc"]["accuracy"] >= 0
    )


def test_symlinked_files_a_loop_and_a_dangling_link(tmp_path):
    real = tmp_path / "real"
    for i in range(3):
        write_tone(real / f"{i}.wav", 0.3, seed=i)
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    for i in range(3):
        (root / "a" / f"tone{i}.wav").symlink_to(real / f"{i}.wav")
    (root / "a" / "loop").symlink_to(root, target_is_directory=True)
    (root / "a" / "gone.wav").symlink_to(tmp_path / "nowhere.wav")
    with pytest.warns(AudioDataWarning, match=r"gone.wav: .*broken symbolic link"):
        found = scan_tree(root, ["wav"])
    assert sorted(found) == ["a/tone0.wav", "a/tone1.wav", "a/tone2.wav"]


def test_a_symlinked_root_keeps_its_own_paths(tmp_path):
    from cpc_lightning.data.audio.datamodules import AudioFolderDataModule

    real = tmp_path / "real"
    for spk in ("ann", "bob"):
        for i in range(3):
            write_tone(real / spk / f"{i}.wav", 0.5, seed=i)
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AudioDataWarning)
        dm = AudioFolderDataModule(
            root=str(link),
            pattern="(?P<speaker>[a-z]+)/",
            cache_dir=str(tmp_path / "c"),
            window=1600,
            batch_size=2,
        )
        dm.setup()
    recs = dm.items("train") + dm.items("test")
    assert len(recs) == 6 and all(Path(r.path).is_file() for r in recs)
    assert all(r.path == f"{dm.root}/{r.rel}" for r in recs)
