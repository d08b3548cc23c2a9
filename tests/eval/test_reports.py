"""Typed reports: each kind reads and writes today's JSON exactly (keys, values, key order), reads
older files, and gives its headline; the one Markdown table writer."""

from __future__ import annotations

import json
import math

import pytest

from cpc_lightning.eval.registry import headline, read_report, report_from_json
from cpc_lightning.eval.report import (
    ABSENT,
    ABXReport,
    PERReport,
    ProbeReport,
    Report,
    markdown_table,
)

META = {
    "run_dir": "/runs/a",
    "checkpoint": "/runs/a/checkpoints/last.ckpt",
    "global_step": 40,
    "data": {"target": "x.SyntheticSpeechDataModule", "root": "/data", "window": 3200},
    "random_init_seed": 0,
}
TAIL = {"wall_seconds": 1.5, "feature": "c", "layer": None, "normalise": "none"}
PROBE = {
    "task": "speakers",
    **META,
    "feature": "c",
    "layer": None,
    "pool": "mean",
    "class_names": ["a", "b"],
    "probe": {"kind": "linear softmax", "linear": True, "seeds": [0]},
    "sources": {"cpc": {"label": "CPC (trained)", "accuracy": 0.75}, "mfcc": {"accuracy": 0.5}},
    "table": "| features | speakers |",
    "combined_table": "| features | speakers |",
    "wall_seconds": 2.0,
    "normalise": "none",
}
ABX = {
    "task": "abx",
    **META,
    "abx": {"modes": ["within", "across"], "seed": 0},
    "sources": {"cpc": {"within": 10.0, "across": 20.0, "per_pair": {"within": {"a": {"b": 5.0}}}}},
    "items": {"file": None, "tokens": 12},
    "comparison": {},
    "table": "| features | within | across |",
    **TAIL,
}
ABX_FEATURES = {  # task=abx features=<extract dir>: its own key order
    "task": "abx",
    "features": "/feats",
    "feature": "c",
    "out_dir": "/feats/eval",
    "abx": {"modes": ["within"]},
    "items": {"file": "items.txt", "tokens": 3, "files_missing": []},
    "sources": {"cpc": {"label": "c features of /runs/a", "within": 12.5}},
    "table": "| features | within | across |",
}
PER = {
    "task": "phone_recognition",
    **META,
    "ctc": {"head": "linear", "seeds": [0]},
    "head": "linear CTC head",
    "linear": True,
    "sources": {
        "cpc": {"per": 40.0, "utterance_edits": [1.0, 3.0], "utterance_phones": [4, 6]},
        "mfcc": {"per": 50.0},
    },
    "comparison": {"mfcc": {"PER": {"difference": -10.0}}},
    "table": "| features | PER |",
    **TAIL,
}
END_OF_RUN = {k: v for k, v in PROBE.items() if k not in ("wall_seconds", "normalise")}
OLD_PER = {k: v for k, v in PER.items() if k not in ("comparison", "normalise")}  # release 0.1


@pytest.mark.parametrize(
    "kind,data",
    [
        (ProbeReport, PROBE),
        (ProbeReport, END_OF_RUN),
        (ABXReport, ABX),
        (ABXReport, ABX_FEATURES),
        (PERReport, PER),
        (PERReport, OLD_PER),
        (ABXReport, {"sources": ABX["sources"]}),  # recipe_table's synthetic reports
    ],
)
def test_reports_round_trip_their_json_exactly(kind, data):
    report = kind.from_json(json.loads(json.dumps(data)))
    out = report.to_json()
    assert out == data and list(out) == list(data)
    assert json.dumps(out, indent=2) == json.dumps(data, indent=2)
    name = {ProbeReport: "speakers", ABXReport: "abx", PERReport: "phone_recognition"}[kind]
    assert type(report_from_json(data, name)) is kind  # by its task, else the file's name


def test_fresh_reports_write_keys_in_todays_order():
    probe = ProbeReport(task="speakers", meta=dict(META), feature="c", layer=None, pool="mean")
    probe.class_names, probe.probe, probe.sources = PROBE["class_names"], PROBE["probe"], {}
    probe.sources.update(PROBE["sources"])
    probe.table, probe.combined_table = PROBE["table"], PROBE["combined_table"]
    assert list(probe.to_json()) == list(END_OF_RUN)
    probe.wall_seconds, probe.feature, probe.layer, probe.normalise = 2.0, "c", None, "none"
    assert probe.to_json() == PROBE and list(probe.to_json()) == list(PROBE)
    abx = ABXReport(task="abx", meta=dict(META), abx=ABX["abx"], sources=ABX["sources"])
    abx.items, abx.comparison, abx.table = ABX["items"], {}, ABX["table"]
    abx.wall_seconds, abx.feature, abx.layer, abx.normalise = 1.5, "c", None, "none"
    assert list(abx.to_json()) == list(ABX) and abx.to_json() == ABX
    per = PERReport(task="phone_recognition", meta=dict(META), ctc=PER["ctc"])
    per.head, per.linear, per.sources = PER["head"], True, PER["sources"]
    per.comparison, per.table = PER["comparison"], PER["table"]
    per.wall_seconds, per.feature, per.layer, per.normalise = 1.5, "c", None, "none"
    assert list(per.to_json()) == list(PER) and per.to_json() == PER


def test_headlines_and_figures():
    assert headline(PROBE) == 0.75 == ProbeReport.from_json(PROBE).headline
    assert headline(ABX) == 10.0 and headline(PER) == 40.0
    assert math.isnan(headline({**PER, "sources": {"cpc": {}}}))
    assert math.isnan(Report.from_json({"task": "unknown", "sources": {}}).headline)
    per = PERReport.from_json(OLD_PER)
    assert per.figure("mfcc", "per") == 50.0 and per.figure("random_init", "per") is None
    assert per.utterance_edits("cpc") == [1.0, 3.0] and per.utterance_edits("mfcc") is None
    abx = ABXReport.from_json(ABX)
    assert (
        abx.per_pair("cpc", "within") == {"a": {"b": 5.0}} and abx.per_pair("cpc", "across") == {}
    )
    assert abx.normalise == "none" and ABXReport.from_json(ABX_FEATURES).layer is ABSENT


def test_feature_label_of_old_and_new_reports():
    assert ProbeReport.from_json({"sources": {}}).feature_label == "c"
    assert ProbeReport.from_json({**PROBE, "layer": 1, "feature": "c"}).feature_label == "c layer 1"
    assert ABXReport.from_json({**ABX, "feature": "z", "normalise": "utterance"}).feature_label == (
        "z + CMVN"
    )


def test_read_report_takes_the_kind_from_the_file_name_when_the_json_has_no_task(tmp_path):
    (tmp_path / "phone_recognition.json").write_text(json.dumps({"sources": PER["sources"]}))
    (tmp_path / "abx.json").write_text(json.dumps(ABX))
    assert isinstance(read_report(tmp_path / "phone_recognition.json"), PERReport)
    assert isinstance(read_report(tmp_path / "abx.json"), ABXReport)


def test_one_markdown_table_writer():
    rows = {"CPC (trained)": {"within": 10.04, "across": float("nan")}, "MFCC": {"within": None}}
    assert markdown_table(rows, ["within", "across"], "ABX error") == (
        "| features | within | across |\n|---|---|---|\n| CPC (trained) | 10.0 % | - |\n"
        "| MFCC | - | - |\n\nABX error"
    )
    assert (
        markdown_table({"a": {"x": 50.0}}, ["x"]) == "| features | x |\n|---|---|\n| a | 50.0 % |"
    )


def test_a_report_without_sources_has_no_figures():
    empty = ProbeReport.from_json({"task": "phones"})
    assert empty.figure("cpc", "accuracy") is None and math.isnan(empty.headline)
    assert PERReport().utterance_edits("cpc") is None and ABXReport().per_pair("cpc", "x") == {}
