"""Evaluation settings: the dataclass defaults are the packaged YAML's, and every settings class
is built from its composed config node one way (``from_node``)."""

from __future__ import annotations

from dataclasses import asdict, fields

import pytest
from helpers import CONF, compose_entry
from omegaconf import OmegaConf

from cpc_lightning.eval.settings import (
    ABXSettings,
    CTCSettings,
    EvalSettings,
    RunProbeSettings,
)


def test_probe_defaults_are_conf_probe_linear_yaml():
    yaml = OmegaConf.to_container(OmegaConf.load(CONF / "probe" / "linear.yaml"))
    defaults = asdict(EvalSettings())
    assert {k: defaults[k] for k in yaml} == yaml
    assert set(yaml) <= {f.name for f in fields(EvalSettings)}


def test_entry_keys_and_task_options_default_to_evaluate_yaml():
    cfg = compose_entry("evaluate", [])
    assert EvalSettings.from_node(cfg.probe) == EvalSettings()
    for key in ("feature", "layer", "pool", "device", "normalise"):
        assert getattr(EvalSettings(), key) == cfg[key], key
    assert str(cfg.precision) == EvalSettings().precision
    assert ABXSettings.from_node(cfg.abx) == ABXSettings() == ABXSettings.from_node(None)
    assert CTCSettings.from_node(cfg.phone_recognition) == CTCSettings()


def test_from_node_puts_values_on_top_and_checks_them():
    cfg = compose_entry("evaluate", ["probe=mlp", "probe.seeds=3", "feature=z"])
    s = EvalSettings.from_node(cfg.probe, feature=cfg.feature, layer=None, precision=32)
    assert (s.hidden, s.seeds, s.feature, s.layer, s.precision) == (256, [3], "z", None, "32")
    assert not s.linear and "NOT linear" in s.probe_kind
    ctc = CTCSettings.from_node(cfg.phone_recognition, seeds=s.seeds)
    assert ctc.seeds == [3] and ctc.linear
    with pytest.raises(ValueError, match="pool='max' must be 'mean' or 'meanstd'"):
        EvalSettings.from_node(cfg.probe, pool="max")


def test_run_probe_settings_from_the_train_config():
    cfg = compose_entry("train", ["probe.min_steps=7", "seed=5"])
    s = RunProbeSettings.from_node(cfg.probe, seed=cfg.seed)
    assert s.tasks == list(cfg.probe.tasks) and s.baselines == cfg.probe.baselines
    assert (s.probe.min_steps, s.probe.seeds, s.probe.feature) == (7, [5], cfg.probe.feature)


def test_end_of_run_probes_fit_one_penalty_when_unset() -> None:
    from cpc_lightning.eval.settings import RunProbeSettings

    got = RunProbeSettings.from_node({"tasks": ["classes"], "weight_decay": None}, seed=3)
    assert got.probe.weight_decay == 0.0 and got.probe.seeds == [3]
    kept = RunProbeSettings.from_node({"weight_decay": [0.0, 1e-3]}, seed=3)
    assert kept.probe.weight_decay == [0.0, 1e-3]
