"""ZeroSpeech 2021 formats, as the zerospeech/benchmarks toolkit (``zrc``) reads them (the layout
is matched here; the toolkit is never imported).

ABX-LS submission (the tree ``zrc submission:init abxLS <dir>`` creates and
``zrc submission:verify`` checks), written by ``extract format=zerospeech``:

- ``<out>/dev-clean/<file id>.npy`` (and ``dev-other``, ``test-clean``, ``test-other``): one 2-D
  array ``(frames, dims)`` per audio file of that LibriSpeech subset, named after the file. The
  toolkit compares the file names (without suffix) with its dataset's wav list, loads each with
  ``numpy.load`` and requires dtype ``float`` (float64), 2 dimensions and one column count per
  subset; its documentation asks for at least 2 frames per file.
- ``<out>/params.yaml``: the ABX parameters; ``feature_size`` is the frame hop in seconds and
  ``distance_mode`` the distance (the other keys keep the toolkit's defaults).
- ``<out>/meta.yaml``: the submission's description. What the run knows is filled in; the fields
  only the submitter knows keep a ``<...>`` marker, which the toolkit's check refuses until they
  are replaced.
- ``<out>/scores/``: empty (the toolkit writes its scores there); subset folders the data root
  lacks are made empty, as in the toolkit's template.

``quantized_outputs.txt`` (the ZeroSpeech 2021 baseline's ``quantize_audio.py``): one line per
file, ``<file id>\\t<u1>,<u2>,...``, written by ``quantize``.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

log = logging.getLogger(__name__)

#: The subset folders of an ABX-LS submission (LibriSpeech's dev and test sets).
SUBSETS = ("dev-clean", "dev-other", "test-clean", "test-other")
#: ``distance_mode`` values the toolkit accepts (its spelling).
DISTANCES = ("cosine", "euclidian", "kl", "kl_symmetric")
#: The dtype the toolkit's check requires (``numpy.dtype("float")``).
DTYPE = "float64"
#: Frames each file must have at least.
MIN_FRAMES = 2
#: The toolkit's default ABX parameters (everything but ``feature_size`` and ``distance_mode``).
ABX_DEFAULTS: dict[str, Any] = {
    "context": "all",
    "cuda": True,
    "max_size_group": 10,
    "max_x_across": 5,
    "quiet": False,
    "result_filename": "score_all_phonetic",
    "score_file_type": ".npy",
    "seed": 3459,
    "speaker_mode": "all",
}


def subset_of(rel: str) -> str | None:
    """The submission subset of an input path relative to the data root (its first folder when
    that is a subset name: ``dev-clean/84/121123/84-121123-0000.flac``), else None."""
    parts = PurePosixPath(rel).parts
    return parts[0] if len(parts) > 1 and parts[0] in SUBSETS else None


def submission_file(rel: str) -> str | None:
    """``<subset>/<file id>.npy`` for an input under a subset folder, else None."""
    subset = subset_of(rel)
    return None if subset is None else f"{subset}/{PurePosixPath(rel).stem}.npy"


def submission_records(records: Sequence[Any], root: Path) -> list[Any]:
    """The records (``.rel``: path under ``root``) under a subset folder; a ``ValueError``
    naming the folders found when there are none."""
    kept = [r for r in records if subset_of(r.rel) is not None]
    if not kept:
        found = sorted({PurePosixPath(r.rel).parts[0] for r in records if "/" in r.rel})
        raise ValueError(
            f"data.root={root} has no audio under {', '.join(SUBSETS)} (found: "
            f"{', '.join(found) or 'no subset folders'}); nothing was written: ZeroSpeech "
            "ABX-LS scores LibriSpeech's dev and test sets, point data.root at a LibriSpeech "
            "folder that holds them"
        )
    if len(kept) < len(records):
        log.info("%d files outside the subset folders skipped", len(records) - len(kept))
    return kept


def abx_params(frame_seconds: float, distance: str) -> dict[str, Any]:
    """``params.yaml``: the toolkit's defaults with this feature's hop and distance."""
    return {**ABX_DEFAULTS, "distance_mode": distance, "feature_size": float(frame_seconds)}


def submission_meta(system_description: str, train_set: str) -> dict[str, Any]:
    """``meta.yaml`` (the toolkit's template keys): the model and its training set filled in;
    author, institution and links left to the submitter as ``<...>`` markers."""
    return {
        "benchmark_name": "abxLS",
        "code_url": "<optional: URL of the code that trained this system>",
        "model_info": {
            "gpu_budget": "<optional: GPU hours used to train the system>",
            "system_description": system_description,
            "train_set": train_set,
        },
        "open_source": True,
        "publication": {
            "author_label": "<required: short label, e.g. Name et al.>",
            "authors": "<required: full names of the authors, comma separated>",
            "institution": "<required: university, company, ...>",
            "paper_title": "<optional: title of the paper describing the system>",
            "paper_url": "<optional: URL of the paper>",
            "publication_year": datetime.date.today().year,
            "team": "<optional: team name>",
        },
        "submission_id": None,
        "username": "<set by zrc when submitting: your zerospeech.com user name>",
    }


def write_yaml(path: Path, data: Mapping[str, Any]) -> None:
    """``data`` as block YAML, keys sorted (as the toolkit writes its files)."""
    path.write_text(yaml.safe_dump(dict(data), default_flow_style=False, sort_keys=True))


def write_submission_files(
    folder: Path, frame_seconds: float, distance: str, description: str, train_set: str
) -> dict[str, Any]:
    """``params.yaml``, ``meta.yaml`` and ``scores/`` into ``folder``; what ``features.json``
    records of them."""
    params = abx_params(frame_seconds, distance)
    write_yaml(folder / "params.yaml", params)
    write_yaml(folder / "meta.yaml", submission_meta(description, train_set))
    make_folders(folder)
    return {"submission": "zerospeech abxLS", "params": params, "dtype": DTYPE}


def make_folders(folder: Path) -> None:
    """The template's folders (every subset, ``scores``), empty where nothing goes into them."""
    for name in (*SUBSETS, "scores"):
        (folder / name).mkdir(parents=True, exist_ok=True)


def quantized_line(file_id: str, units: Iterable[int]) -> str:
    """One ``quantized_outputs.txt`` line (without the newline)."""
    return file_id + "\t" + ",".join(str(int(u)) for u in units)
