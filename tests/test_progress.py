"""Progress: a bar on a terminal, log lines with rate and ETA elsewhere, nothing when off."""

from __future__ import annotations

import logging

import pytest

from cpc_lightning.progress import Progress, track


def test_log_mode_reports_count_rate_and_eta(monkeypatch, caplog):
    monkeypatch.setenv("CPC_PROGRESS", "log")
    monkeypatch.setenv("CPC_PROGRESS_EVERY", "0")
    caplog.set_level(logging.INFO, logger="cpc_lightning.progress")
    assert list(track(range(4), "probe phones", unit="epoch")) == [0, 1, 2, 3]
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("probe phones: 1/4 epoch (25 %)") and "ETA" in lines[0]
    assert "4/4 epoch (100 %)" in lines[-1]


def test_off_is_silent_and_bad_modes_are_refused(monkeypatch, caplog, capsys):
    monkeypatch.setenv("CPC_PROGRESS", "off")
    caplog.set_level(logging.INFO, logger="cpc_lightning.progress")
    with Progress("x", total=3) as p:
        p.update(3)
    assert not caplog.records and not capsys.readouterr().err
    monkeypatch.setenv("CPC_PROGRESS", "loud")
    with pytest.raises(ValueError, match="CPC_PROGRESS='loud'"):
        Progress("x")


def test_bar_mode_draws_on_stderr(monkeypatch, capsys):
    monkeypatch.setenv("CPC_PROGRESS", "bar")
    with Progress("features cpc train", total=10, unit="utt") as p:
        p.update(10)
    err = capsys.readouterr().err
    assert "features cpc train" in err and "/10" in err and "utt" in err
