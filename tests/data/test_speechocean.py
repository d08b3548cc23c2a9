"""speechocean762: speakers, per-utterance phone sequences from text-phone (marks stripped),
a speaker-disjoint held-out split, and bad metadata named."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_cfg, write_tone
from hydra.utils import instantiate

from cpc_lightning.data.audio.speechocean import clean_phone


def speechocean(root: Path, tmp_path: Path, *overrides: str):
    cfg = make_cfg(["data=speechocean762", f"data.root={root}", *overrides], tmp_path)
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup()
    return dm


def mini_corpus(root: Path) -> Path:
    """3 speakers x 2 utterances, two words each."""
    lines, utt2spk = [], []
    for s, spk in enumerate(("0001", "0002", "0003")):
        for u in range(2):
            utt = f"00{spk}{u:03d}0"[:9]
            write_tone(root / spk / f"{utt}.flac", 1.5, seed=s * 2 + u)
            lines += [f"{utt}.1\tK_B AO0_I L_E", f"{utt}.0\tW_B IY0_E"]
            utt2spk.append(f"{utt} {spk}")
    (root / "text-phone").write_text("\n".join(lines) + "\n")
    (root / "utt2spk").write_text("\n".join(utt2spk) + "\n")
    (root / "spk2gender").write_text("0001\tm\n0002\tf\n0003\tf\n")
    return root


def test_clean_phone_strips_stress_and_position():
    assert clean_phone("IY0_E", True, True) == "IY"
    assert clean_phone("AO1", True, True) == "AO" and clean_phone("K_B", True, True) == "K"
    assert clean_phone("IY0_E", False, True) == "IY0"


def test_sequences_follow_word_order_and_the_split_is_by_speaker(tmp_path):
    dm = speechocean(mini_corpus(tmp_path / "so"), tmp_path, "data.num_test_speakers=1")
    recs = dm.items("train") + dm.items("test")
    assert len(recs) == 6 and len(dm.speakers) == 3
    names = [dm.phone_names[i] for i in recs[0].phone_seq]
    assert names == ["W", "IY", "K", "AO", "L"]  # word 0 before word 1
    test_spk = {r.speaker for r in dm.items("test")}
    assert len(test_spk) == 1 and test_spk.isdisjoint(r.speaker for r in dm.items("train"))
    assert dm.labels == ["speakers", "phone_sequences"]  # phone_recognition, not abx
    assert {r.meta["sex"] for r in recs} == {"m", "f"}
    by_sex = speechocean(
        tmp_path / "so", tmp_path / "c2", "data.num_test_speakers=1", "data.label=sex"
    )
    assert by_sex.classes == ["f", "m"]


def test_unknown_phone_and_missing_metadata_are_named(tmp_path):
    root = mini_corpus(tmp_path / "so")
    text = (root / "text-phone").read_text()
    (root / "text-phone").write_text(text.replace("W_B IY0_E", "W_B QQ0_E", 1))
    with pytest.raises(ValueError, match=r"text-phone:2: phone 'QQ0_E' \('QQ'\) is not in"):
        speechocean(root, tmp_path, "data.num_test_speakers=1")
    (root / "text-phone").unlink()
    with pytest.raises(FileNotFoundError, match=r"text-phone is missing"):
        speechocean(root, tmp_path, "data.num_test_speakers=1")


def test_the_shared_subset(shared_data, tmp_path):
    dm = speechocean(shared_data / "speechocean762_subset", tmp_path)
    train, test = dm.items("train"), dm.items("test")
    assert (len(train), len(test)) == (1000, 250) and len(dm.speakers) == 125
    assert {r.speaker for r in test}.isdisjoint(r.speaker for r in train)
    assert all(r.phone_seq for r in train + test) and dm.num_phones == 0
    used = {p for r in train for p in r.phone_seq}
    assert len(used) == len(dm.phone_names) == 39
    # for speaker identification: an utterance split, every speaker on both sides
    by_utt = speechocean(
        shared_data / "speechocean762_subset",
        tmp_path / "u",
        "data.num_test_speakers=null",
        "data.test_fraction=0.2",
    )
    assert len(by_utt.items("test")) == 250
    assert {r.speaker for r in by_utt.items("test")} <= {r.speaker for r in by_utt.items("train")}
