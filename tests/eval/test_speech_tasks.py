"""``evaluate task=abx|phone_recognition`` on a run, beside the baselines, and ABX of an extract
output directory (``features=<dir> items=<file>``)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import compose_entry, make_run
from helpers.corpora import nltk_tree

from cpc_lightning.eval.abx import read_items, write_items
from cpc_lightning.eval.speech_tasks import ABXSettings, items_for


@pytest.fixture(scope="module")
def timit_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("speech")
    return make_run(root), nltk_tree(root / "timit", n=8000, minimal_pairs=True)


def _evaluate(run: Path, tree: Path, tmp: Path, *extra: str):
    from cpc_lightning.evaluate import evaluate

    cfg = compose_entry(
        "evaluate",
        [
            f"run_dir={run}",
            "data=timit",
            f"data.root={tree}",
            "data.test_speakers=null",
            "data.num_test_speakers=2",
            f"data.cache_dir={tmp / 'cache'}",
            "data.window=3200",
            f"out_dir={tmp / 'eval'}",
            *extra,
        ],
    )
    return evaluate(cfg)


def test_items_keep_silence_as_context_but_never_as_the_phone():
    recs = [
        SimpleNamespace(
            uid="u1",
            speaker="s1",
            phones=None,
            segments=[(0.0, 0.1, "sil"), (0.1, 0.2, "t"), (0.2, 0.3, "iy"), (0.3, 0.4, "sil")],
        )
    ]
    items = items_for(recs, [], ABXSettings())
    assert list(zip(items.prev, items.phone, items.next, strict=True)) == [
        ("sil", "t", "iy"),
        ("t", "iy", "sil"),
    ]


def test_abx_task_reports_every_source(timit_run, tmp_path):
    run, tree = timit_run
    report = _evaluate(run, tree, tmp_path, "task=abx", "abx.max_size_group=null")
    saved = json.loads((tmp_path / "eval" / "abx.json").read_text())
    assert set(saved["sources"]) == {"cpc", "random_init", "mfcc"}
    for src in saved["sources"].values():
        assert 0 <= src["within"] <= 100 and 0 <= src["across"] <= 100
        assert src["num_triples"]["across"] > 0 and src["frame_rate_hz"] == 100.0
        assert src["per_pair"]["within"]  # per ordered phone pair
    assert report["items"]["tokens"] > 10 and "within" in report["table"]
    # the trained net against each baseline, per mode, on the phone pairs both scored
    assert set(saved["comparison"]) == {"random_init", "mfcc"}
    for other, modes in saved["comparison"].items():
        for mode, c in modes.items():
            ours, theirs = saved["sources"]["cpc"][mode], saved["sources"][other][mode]
            if c["units"] == len(saved["sources"]["cpc"]["per_pair"][mode]):
                assert c["difference"] == pytest.approx(ours - theirs, abs=1e-9)
            assert c["interval"][0] <= c["difference"] <= c["interval"][1]
    assert "minus each baseline" in report["table"] and "vs MFCC (39-d): within" in report["table"]
    assert "phone pairs)" in report["table"]


def test_phone_recognition_task_reports_per(timit_run, tmp_path):
    run, tree = timit_run
    report = _evaluate(
        run, tree, tmp_path, "task=phone_recognition", "phone_recognition.min_steps=20"
    )
    assert report["linear"] and set(report["sources"]) == {"cpc", "random_init", "mfcc"}
    for src in report["sources"].values():
        assert src["per"] >= 0 and src["num_test_phones"] > 0
        assert sum(src["utterance_phones"]) == src["num_test_phones"]
        per = 100 * sum(src["utterance_edits"]) / src["num_test_phones"]
        assert per == pytest.approx(src["per"])  # one head seed: its edits give its PER
        assert src["num_train_utterances"] == 6  # 2 speakers x 3 sentences
        assert src["num_test_utterances"] == 4  # 2 speakers x 2: their sa1 is excluded
    assert "PER" in report["table"]
    # the trained net minus each baseline, over the test utterances
    for other in ("random_init", "mfcc"):
        c = report["comparison"][other]["PER"]
        want = report["sources"]["cpc"]["per"] - report["sources"][other]["per"]
        assert c["difference"] == pytest.approx(want) and c["unit"] == "utterance"
        assert c["interval"][0] <= c["difference"] <= c["interval"][1]
    assert "utterances)" in report["table"]


def test_phone_recognition_chooses_weight_decay_on_training_speakers(timit_run, tmp_path):
    run, tree = timit_run
    report = _evaluate(
        run,
        tree,
        tmp_path,
        "task=phone_recognition",
        "phone_recognition.min_steps=20",
        "phone_recognition.weight_decay=[0,1000]",
        "phone_recognition.dev_speakers=1",
    )
    for src in report["sources"].values():
        assert set(src["dev_pers"]) == {"0.0", "1000.0"}
        assert src["weight_decay"] == min((0.0, 1000.0), key=lambda w: src["dev_pers"][repr(w)])
        assert src["num_train_utterances"] == 6  # chosen on 3 of them, then trained on all 6
    assert "weight decay chosen on 1 training speakers" in report["table"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("phone_recognition.weight_decay=[0,-1]", "weight_decay=[0, -1]: give a value >= 0"),
        ("phone_recognition.dev_speakers=2", "dev_speakers=2: the training split has only 2"),
    ],
)
def test_phone_recognition_rejects_a_bad_choice(timit_run, tmp_path, override, message):
    from cpc_lightning.errors import UserError

    run, tree = timit_run
    with pytest.raises(UserError, match=re.escape(message)):
        _evaluate(
            run,
            tree,
            tmp_path,
            "task=phone_recognition",
            "phone_recognition.min_steps=5",
            "phone_recognition.weight_decay=[0,0.01]",
            override,
        )


def test_abx_of_an_extract_output_dir(timit_run, tmp_path):
    from cpc_lightning.evaluate import evaluate
    from cpc_lightning.extract import extract

    run, tree = timit_run
    feats = tmp_path / "feats"
    extract(
        compose_entry(
            "extract",
            [
                f"run_dir={run}",
                f"out={feats}",
                "data=timit",
                f"data.root={tree}",
                "data.test_speakers=null",
                "data.num_test_speakers=2",
                f"data.cache_dir={tmp_path / 'cache'}",
            ],
        )
    )
    scored = _evaluate(run, tree, tmp_path, "task=abx")
    items = tmp_path / "test.item"
    # the items of the run's own evaluation, written in Libri-light's format and read back
    write_items(_items_of(scored, tree, tmp_path), items)
    assert len(read_items(items)) == scored["items"]["tokens"]
    cfg = compose_entry("evaluate", ["task=abx", f"features={feats}", f"items={items}"])
    report = evaluate(cfg)
    assert (feats / "eval" / "abx.json").is_file()
    # same features, same items: the same ABX as the run's own evaluation of its c features
    assert report["sources"]["cpc"]["within"] == pytest.approx(scored["sources"]["cpc"]["within"])
    assert report["sources"]["cpc"]["across"] == pytest.approx(scored["sources"]["cpc"]["across"])


def _items_of(report, tree: Path, tmp_path: Path):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = compose_entry(
        "evaluate",
        ["data=timit", f"data.root={tree}", "data.test_speakers=null", "data.num_test_speakers=2"],
    )
    data = OmegaConf.to_container(cfg.data, resolve=False)
    data["cache_dir"] = str(tmp_path / "cache")
    dm = instantiate(OmegaConf.merge(cfg, {"data": data}).data)
    dm.setup()
    return items_for(dm.items("test"), dm.phone_names, ABXSettings(**report["abx"]))


def test_features_mode_refuses_what_it_cannot_score(tmp_path):
    from cpc_lightning.errors import UserError
    from cpc_lightning.evaluate import evaluate

    with pytest.raises((UserError, FileNotFoundError), match="no features.json"):
        evaluate(compose_entry("evaluate", ["task=abx", f"features={tmp_path}", "items=x"]))
    with pytest.raises((UserError, ValueError), match="scores task=abx only"):
        evaluate(compose_entry("evaluate", ["task=phones", f"features={tmp_path}"]))


def test_features_mode_picks_the_layer_folder_of_a_multi_layer_extract():
    """``extract feature=all`` writes one folder per layer: ``features=`` scores the one asked."""
    from cpc_lightning.eval.speech_tasks import _feature_folder

    meta = {
        "layers": [
            {"dir": "z", "feature": "z", "layer": None},
            {"dir": "layer_0", "feature": "c", "layer": 0},
            {"dir": "layer_1", "feature": "c", "layer": 1},
        ]
    }
    cfg = SimpleNamespace(get=lambda k, d=None: {"feature": "c", "layer": None}.get(k, d))
    assert _feature_folder(meta, cfg) == "layer_1"  # c: the top context layer
    cfg = SimpleNamespace(get=lambda k, d=None: {"feature": "c", "layer": 0}.get(k, d))
    assert _feature_folder(meta, cfg) == "layer_0"
    cfg = SimpleNamespace(get=lambda k, d=None: {"feature": "z", "layer": None}.get(k, d))
    assert _feature_folder(meta, cfg) == "z"
    assert _feature_folder({"files": []}, cfg) == ""  # one feature: files in the folder itself
    cfg = SimpleNamespace(get=lambda k, d=None: {"feature": "c", "layer": 5}.get(k, d))
    with pytest.raises(ValueError, match="feature=c layer=5 is not among"):
        _feature_folder(meta, cfg)


def test_normalise_utterance_standardises_learned_features_and_leaves_mfcc_raw(timit_run, tmp_path):
    import torch

    from cpc_lightning.eval.features import Source, normalise_utterance, utterance_features
    from cpc_lightning.eval.settings import EvalSettings
    from cpc_lightning.evaluate import settings_of
    from cpc_lightning.runs import open_data, open_run

    run_dir, tree = timit_run
    over = [f"run_dir={run_dir}", "data=timit", f"data.root={tree}", "data.window=3200"]
    over += [f"data.cache_dir={tmp_path / 'cache'}", "data.test_speakers=null"]
    over.append("data.num_test_speakers=2")
    cfg = compose_entry("evaluate", [*over, "normalise=utterance"])
    run = open_run(cfg.run_dir, None)
    dm = open_data(cfg, run.config)
    normed, raw = settings_of(cfg), EvalSettings.from_mapping({})
    assert normed.normalise == "utterance" and raw.normalise == "none"
    records = dm.items("test")
    cpc = Source("cpc", run.model)
    got = utterance_features(cpc, dm, records, normed)
    plain = utterance_features(cpc, dm, records, raw)
    for g, p in zip(got, plain, strict=True):
        assert torch.allclose(g.mean(0), torch.zeros(g.shape[1]), atol=1e-4)
        assert torch.allclose(g.std(0, unbiased=False), torch.ones(g.shape[1]), atol=1e-3)
        assert torch.allclose(g, normalise_utterance(p)) and not torch.allclose(g, p)
    mfcc = Source("mfcc")
    for a, b in zip(
        utterance_features(mfcc, dm, records, normed),
        utterance_features(mfcc, dm, records, raw),
        strict=True,
    ):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="normalise='speaker'"):
        EvalSettings.from_mapping({"normalise": "speaker"})
