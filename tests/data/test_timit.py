"""TIMIT: both layouts (NLTK sample, LDC with NIST headers), 61 -> 39 folding, label-frame
boundaries, the speaker-disjoint split with ``sa`` sentences on one side, and bad input."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import soundfile as sf
from helpers import make_cfg
from helpers.corpora import ldc_tree, nltk_tree
from hydra.utils import instantiate

from cpc_lightning.data import IGNORE_INDEX
from cpc_lightning.data.audio.frames import expected_phone_frames


def timit(root: Path, tmp_path: Path, *overrides: str):
    """``data=timit`` on ``root``; the generated trees' speakers are not the sample's, so the
    configured test speakers are dropped unless an override lists others."""
    listed = any(o.startswith("data.test_speakers=") for o in overrides)
    base = ["data=timit", f"data.root={root}", "data.window=1600"]
    cfg = make_cfg([*base, *([] if listed else ["data.test_speakers=null"]), *overrides], tmp_path)
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup()
    return dm, cfg


def test_nltk_layout_folds_phones_onto_the_label_grid(tmp_path):
    dm, cfg = timit(nltk_tree(tmp_path / "timit"), tmp_path, "data.num_test_speakers=1")
    assert dm.num_phones == 39 and dm.phone_names[dm.phone_names.index("sil")] == "sil"
    rec = next(r for r in dm.items("train") + dm.items("test") if r.uid.endswith("sx12"))
    assert rec.meta["dialect"] in ("dr1", "dr2") and rec.meta["sex"] == rec.speaker[0]
    ids = {p: i for i, p in enumerate(dm.phone_names)}
    frames = rec.phones
    assert len(frames) == expected_phone_frames(6400) == 38
    # frame t is labelled by the phone at its centre, sample 160 t + 200
    centre = lambda t: 160 * t + 200  # noqa: E731
    for t in range(len(frames)):
        c = centre(t)
        want = (
            "sil"
            if c < 2000 or c >= 4800 or 3500 <= c < 4000
            else "sh"
            if c < 2600
            else "ih"
            if c < 3400
            else None
            if c < 3500
            else "ah"
        )
        assert frames[t] == (IGNORE_INDEX if want is None else ids[want]), t
    # boundaries: centres 1960 (t=11) and 2040 (t=12) straddle the h#/sh boundary at 2000
    assert frames[11] == ids["sil"] and frames[12] == ids["sh"]
    assert frames[20] == IGNORE_INDEX  # centre 3400: the dropped glottal stop q
    # sequences and segments: repeats merged, q dropped (tcl -> sil stays one token)
    assert [dm.phone_names[i] for i in rec.phone_seq] == ["sil", "sh", "ih", "sil", "ah", "sil"]
    assert rec.segments[1] == (2000 / 16000, 2600 / 16000, "sh")
    assert [p for _, _, p in rec.segments] == ["sil", "sh", "ih", "sil", "ah", "sil"]
    assert "phones" in dm.labels and "phone_sequences" in dm.labels  # abx, phone_recognition


def test_abx_tokens_merge_a_closure_with_its_release():
    from cpc_lightning.data.audio.timit import fold

    spans = [(0, 100, "h#"), (100, 150, "tcl"), (150, 200, "t"), (200, 260, "kcl"), (260, 300, "s")]
    phones = ["t", "s", "sil"]
    mapping = {"h#": "sil", "tcl": "sil", "t": "t", "kcl": "sil", "s": "s"}
    a = fold(spans, Path("x.phn"), mapping, {p: i for i, p in enumerate(phones)}, 300, 16000, 16000)
    assert [(s, e, p) for s, e, p in a.segments] == [
        (0.0, 100 / 16000, "sil"),
        (100 / 16000, 200 / 16000, "t"),  # tcl + t: one token
        (200 / 16000, 260 / 16000, "sil"),  # kcl before s: no release, folds to sil
        (260 / 16000, 300 / 16000, "s"),
    ]
    assert a.sequence == [2, 0, 2, 1]  # frames and sequences keep the 39-class folding


def test_split_is_speaker_disjoint_and_keeps_sa_on_one_side(tmp_path):
    dm, _ = timit(nltk_tree(tmp_path / "timit"), tmp_path, "data.test_speakers=[mdef0,fghi0]")
    train, test = dm.items("train"), dm.items("test")
    assert {r.speaker for r in test} == {"mdef0", "fghi0"}
    assert {r.speaker for r in train} == {"fabc0", "mjkl0"}
    sa = re.compile(r"/sa\d+$")
    assert not any(sa.search(r.uid) for r in test)  # test speakers' sa: in neither split
    assert sum(bool(sa.search(r.uid)) for r in train) == 2
    assert dm.stats["excluded_from_split"] == 2
    seeded, _ = timit(nltk_tree(tmp_path / "t2"), tmp_path / "c2", "data.num_test_speakers=2")
    again, _ = timit(nltk_tree(tmp_path / "t3"), tmp_path / "c3", "data.num_test_speakers=2")
    assert {r.speaker for r in seeded.items("test")} == {r.speaker for r in again.items("test")}
    assert len({r.speaker for r in seeded.items("test")}) == 2


def test_ldc_layout_reads_nist_headers_and_the_official_split(tmp_path):
    root = ldc_tree(tmp_path / "TIMIT")
    assert (root / "TRAIN" / "DR1" / "FABC0" / "SX12.WAV").read_bytes()[:7] == b"NIST_1A"
    dm, _ = timit(root, tmp_path)
    assert {r.speaker for r in dm.items("test")} == {"mdef0", "mjkl0"}  # TEST/ folders
    rec = dm.items("train")[0]
    assert rec.file_frames == 6400 and len(rec.phones) == 38
    assert rec.meta == {"sex": rec.speaker[0], "dialect": rec.uid.split("/")[1].lower()}
    listed, _ = timit(root, tmp_path / "c2", "data.test_speakers=[fabc0]")
    assert {r.speaker for r in listed.items("test")} == {"fabc0"}


def test_sex_and_dialect_as_classes(tmp_path):
    dm, _ = timit(
        nltk_tree(tmp_path / "timit"), tmp_path, "data.label=sex", "data.num_test_speakers=2"
    )
    assert dm.classes == ["f", "m"] and "classes" in dm.labels
    dm, _ = timit(
        nltk_tree(tmp_path / "t2"),
        tmp_path / "c2",
        "data.label=dialect",
        "data.num_test_speakers=2",
    )
    assert dm.classes == ["dr1", "dr2"]


@pytest.mark.parametrize(
    "damage,needle",
    [
        ("missing", r"fabc0/sx12\.wav: no phone alignment sx12\.phn"),
        ("past_end", r"sx12\.phn: the segment 4800-9999 'h#' ends past the end of the audio"),
        ("unknown", r"sx12\.phn: unknown phone symbol 'zz'"),
        ("garbage", r"sx12\.phn:2: expected '<start> <end> <phone>'"),
    ],
)
def test_bad_alignment_is_one_message_naming_the_file(tmp_path, damage, needle):
    from cpc_lightning.errors import UserError, user_errors

    root = nltk_tree(tmp_path / "timit")
    phn = root / "dr1-fabc0" / "sx12.phn"
    text = phn.read_text()
    if damage == "missing":
        phn.unlink()
    elif damage == "past_end":
        phn.write_text(text.replace("4800 6400 h#", "4800 9999 h#"))
    elif damage == "unknown":
        phn.write_text(text.replace(" sh\n", " zz\n"))
    else:
        phn.write_text(text.replace("2000 2600 sh", "2000 sh"))
    with pytest.raises(UserError, match=needle) as err, user_errors("data"):
        timit(root, tmp_path, "data.num_test_speakers=1")
    assert "\n" not in str(err.value)


def test_a_split_is_required_without_official_folders(tmp_path):
    with pytest.raises(ValueError, match="data.num_test_speakers"):
        timit(nltk_tree(tmp_path / "timit"), tmp_path, "data.num_test_speakers=null")


def test_the_shared_sample(shared_data, tmp_path):
    cfg = make_cfg(["data=timit", f"data.root={shared_data / 'timit_sample'}"], tmp_path)
    dm = instantiate(cfg.data)
    dm.setup()
    assert len(dm.speakers) == 12
    assert {r.speaker for r in dm.items("test")} == {"mcpm0", "falk0", "mbgt0", "fapb0"}
    assert dm.stats["utterances"] == 120 and dm.stats["excluded_from_split"] == 8
    rec = dm.items("train")[0]
    assert len(rec.phones) == expected_phone_frames(sf.info(rec.path).frames)
    used = {int(p) for r in dm.items("train") for p in r.phones if p >= 0}
    assert len(used) >= 36  # nearly all 39 classes occur in 80 sentences


def test_the_validation_split_never_holds_a_test_speaker(shared_data, tmp_path):
    """data=timit_val: only data=timit's training speakers, two of them held out."""
    root = shared_data / "timit_sample"
    test_side = set(instantiate(make_cfg(["data=timit", f"data.root={root}"], tmp_path).data)
                    .split_rule.test_speakers)  # fmt: skip
    cfg = make_cfg(["data=timit_val", f"data.root={root}"], tmp_path / "v")
    dm = instantiate(cfg.data)
    dm.setup()
    train = {r.speaker for r in dm.items("train")}
    val = {r.speaker for r in dm.items("test")}
    assert val == {"faem0", "maeb0"} and len(train) == 6
    assert not (train | val) & test_side
    assert dm.stats["excluded_from_split"] == 4 * 10 + 2 * 2  # 4 speakers; sa* of 2 val ones


def test_an_unknown_excluded_speaker_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"data.exclude_speakers: \['nobody'\]"):
        timit(nltk_tree(tmp_path / "timit"), tmp_path, "data.num_test_speakers=1",
              "data.exclude_speakers=[nobody]")  # fmt: skip
