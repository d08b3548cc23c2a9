"""``extract format=zerospeech``: the ZeroSpeech 2021 ABX-LS submission tree, checked against
the rules of the zerospeech/benchmarks toolkit (``zrc submission:verify abxLS``): a ``.npy`` per
wav of each subset, named after it, 2-D float64 with one column count per subset and at least 2
frames, ``params.yaml`` with the toolkit's keys, ``meta.yaml`` with its template's keys."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from helpers import compose_entry, make_run, run_train

from cpc_lightning.model.encoders.audio import Conv1dEncoder

#: The subsets the sample's 9 files are linked into (the rest stay in train-clean-100).
LINKED = {"dev-clean": 3, "test-other": 3}
PARAMS_KEYS = {
    *("context", "cuda", "distance_mode", "feature_size", "max_size_group", "max_x_across"),
    *("quiet", "result_filename", "score_file_type", "seed", "speaker_mode"),
}
META_KEYS = {
    "benchmark_name": None,
    "code_url": None,
    "model_info": {"gpu_budget", "system_description", "train_set"},
    "open_source": None,
    "publication": {
        *("author_label", "authors", "institution", "paper_title", "paper_url"),
        *("publication_year", "team"),
    },
    "submission_id": None,
    "username": None,
}


@pytest.fixture
def libri_dev_test(shared_data: Path, tmp_path: Path) -> Path:
    """A LibriSpeech-layout root whose dev-clean and test-other hold links to the shared sample's
    files (``<subset>/<speaker>/<chapter>/<id>.flac``) and train-clean-100 the others."""
    sample = shared_data / "librispeech_sample"
    if not sample.is_dir():
        pytest.skip(f"LibriSpeech sample absent: {sample}")
    files = sorted(sample.rglob("*.flac"))
    subsets = [s for s, n in LINKED.items() for _ in range(n)]
    root = tmp_path / "LibriSpeech"
    for i, src in enumerate(files):
        subset = subsets[i] if i < len(subsets) else "train-clean-100"
        dest = root / subset / src.relative_to(sample / "train-clean-100")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.symlink_to(src)
    return root


def check_submission(out: Path, root: Path, hop_seconds: float) -> dict[str, list[Path]]:
    """The toolkit's layout rules; the arrays written per subset."""
    written = {}
    for subset in ("dev-clean", "dev-other", "test-clean", "test-other"):
        assert (out / subset).is_dir(), subset  # the template has every subset folder
        wavs = (
            sorted(p.stem for p in (root / subset).rglob("*.flac"))
            if (root / subset).is_dir()
            else []
        )
        arrays = sorted((out / subset).rglob("*.npy"))
        assert sorted(p.stem for p in arrays) == wavs, subset  # file stems = the subset's wavs
        columns = set()
        for path in arrays:
            x = np.load(path)
            assert x.dtype == np.dtype("float") and x.ndim == 2 and len(x) >= 2, path
            columns.add(x.shape[1])
        assert len(columns) <= 1, (subset, columns)  # one feature size per subset
        written[subset] = arrays
    assert not list(out.glob("train-clean-100")) and (out / "scores").is_dir()
    params = yaml.safe_load((out / "params.yaml").read_text())
    assert set(params) == PARAMS_KEYS
    assert params["feature_size"] == pytest.approx(hop_seconds)
    assert params["distance_mode"] == "cosine" and params["score_file_type"] == ".npy"
    meta = yaml.safe_load((out / "meta.yaml").read_text())
    assert set(meta) == set(META_KEYS) and meta["benchmark_name"] == "abxLS"
    for key, sub in META_KEYS.items():
        if sub is not None:
            assert set(meta[key]) == sub, key
    template = re.compile(r"<.*>")  # what the toolkit's check refuses until filled in
    assert not template.match(meta["model_info"]["system_description"])
    assert not template.match(meta["model_info"]["train_set"])
    assert template.match(meta["publication"]["authors"])
    assert isinstance(meta["publication"]["publication_year"], int)
    return written


def test_extract_writes_an_abx_ls_submission(libri_dev_test: Path, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    out = tmp_path / "submission"
    proc = run_train(
        f"run_dir={run}", "format=zerospeech", "data=librispeech", f"data.root={libri_dev_test}",
        f"out={out}", module="cpc_lightning.extract",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = check_submission(out, libri_dev_test, 160 / 16000)
    assert [len(written[s]) for s in LINKED] == list(LINKED.values())
    for path in written["dev-clean"]:
        src = next(libri_dev_test.joinpath("dev-clean").rglob(path.stem + ".flac"))
        assert np.load(path).shape == (Conv1dEncoder().num_frames(sf.info(str(src)).frames), 16)
    meta = json.loads((out / "features.json").read_text())
    assert meta["format"] == "zerospeech" and meta["dtype"] == "float64"
    assert meta["num_files"] == sum(LINKED.values())


def test_a_root_without_dev_or_test_sets_is_refused(shared_data: Path, tmp_path: Path) -> None:
    from cpc_lightning.errors import UserError
    from cpc_lightning.extract import extract

    sample = shared_data / "librispeech_sample"
    if not sample.is_dir():
        pytest.skip(f"LibriSpeech sample absent: {sample}")
    run, out = make_run(tmp_path), tmp_path / "submission"
    base = [f"run_dir={run}", "format=zerospeech", f"out={out}"]
    libri = ["data=librispeech", f"data.root={sample}", f"data.cache_dir={tmp_path / 'cache'}"]
    with pytest.raises(UserError, match=r"has no audio under dev-clean.*found: train-clean-100"):
        extract(compose_entry("extract", [*base, *libri]))
    with pytest.raises(UserError, match="format=zerospeech submits one feature: drop layers=all"):
        extract(compose_entry("extract", [*base, "layers=all"]))
    with pytest.raises(UserError, match="zerospeech.distance=l2 must be one of cosine"):
        extract(compose_entry("extract", [*base, "zerospeech.distance=l2"]))
    assert not out.exists()
