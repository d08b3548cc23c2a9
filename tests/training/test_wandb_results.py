"""``logger=wandb`` results, offline and read back: the end-of-run probe table and the per-k
figure in the training run, each ``evaluate`` report in a run of the same group, and the model
card of ``export to=safetensors`` showing the numbers W&B holds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers import compose_entry, make_cfg, tiny
from helpers.exports import exported
from helpers.wandb_offline import offline_env, offline_runs

from cpc_lightning.eval.report import ABXReport, markdown_table
from cpc_lightning.run_dir import RunDir
from cpc_lightning.training import wandb as wandb_setup
from cpc_lightning.training.per_k_plot import per_k_figure, per_k_rows

#: The default pipeline (`make train`), tiny, with its end-of-run probes (few updates).
PROBED = tiny(
    "model.prediction_steps=2",
    "trainer.max_steps=2",
    "probe.enabled=true",
    "probe.tasks=[phones,speakers]",
    "probe.baselines=[random_init]",
    "probe.min_steps=10",
    "probe.epochs=1",
    "logger=wandb",
    "logger.wandb.project=cpc_test",
)


def _offline(mp: pytest.MonkeyPatch, home: Path) -> None:
    """W&B offline under ``home`` (``offline_env``); restored after the test."""
    for key, value in offline_env(home).items():
        if value is None:
            mp.delenv(key, raising=False)
        else:
            mp.setenv(key, value)


@pytest.fixture(scope="module")
def wandb_run(tmp_path_factory: pytest.TempPathFactory):
    """A tiny `make train` run with logger=wandb (offline), then `evaluate task=speakers`."""
    pytest.importorskip("wandb")
    from cpc_lightning.evaluate import evaluate
    from cpc_lightning.train import train

    tmp = tmp_path_factory.mktemp("wandb")
    with pytest.MonkeyPatch.context() as mp:
        _offline(mp, tmp / "home")
        try:
            result = train(make_cfg(PROBED, tmp))
        finally:
            wandb_setup.finish()  # what train's entry point does
        run_dir = tmp / "run"
        evaluate(
            compose_entry(
                "evaluate",
                [f"run_dir={run_dir}", "task=speakers", "baseline=random_init"]
                + ["probe.min_steps=10", "probe.epochs=1", "wandb=auto"],
            )
        )
        yield run_dir, result


def test_the_training_run_holds_the_probe_table_and_the_per_k_figure(wandb_run):
    run_dir, result = wandb_run
    (run,) = offline_runs(run_dir)
    record = json.loads(RunDir(run_dir).wandb_run.read_text())
    assert run.run.run_id == record["id"] and record["mode"] == "offline"
    assert run.run.run_group == record["group"] == "train-run"  # its own group: <task>-<dir>
    assert run.run.job_type == record["job_type"] == "train"
    table = run.table("probe/table")
    assert table["columns"] == ["features", "phones", "speakers"]
    labels = [row[0] for row in table["data"]]
    assert labels[0] == "CPC (trained)" and "majority class" in labels
    # the table's numbers are those of result.json (in %, as its table prints them)
    cpc = table["data"][0]
    for task, value in zip(table["columns"][1:], cpc[1:], strict=True):
        accuracy = result["metrics"][f"probe/{task}/cpc"]
        assert value == float(f"{100 * accuracy:.1f}")
        assert run.logged[f"probe/{task}/cpc"] == pytest.approx(accuracy)  # in its summary
    png = run.image("plots/per_k")
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"


def test_evaluate_logs_its_report_into_the_training_runs_group(wandb_run):
    run_dir, _ = wandb_run
    (train_run,) = offline_runs(run_dir)
    (run,) = offline_runs(run_dir / "eval")
    assert run.run.job_type == "evaluate" and run.run.run_group == train_run.run.run_group
    assert run.run.display_name == f"{train_run.run.run_id}-speakers"
    report = json.loads((run_dir / "eval" / "speakers.json").read_text())
    assert run.logged["eval/speakers/cpc/accuracy"] == pytest.approx(
        report["sources"]["cpc"]["accuracy"]
    )
    columns, rows = wandb_setup.markdown_rows(report["table"])
    assert run.table("eval/speakers/table") == {"columns": columns, "data": rows}


def test_the_model_card_shows_the_numbers_wandb_holds(wandb_run, tmp_path):
    pytest.importorskip("safetensors")
    run_dir, _ = wandb_run
    out = exported(run_dir, tmp_path / "model", to="safetensors")
    card = (out / "README.md").read_text()
    (train_run,) = offline_runs(run_dir)
    (eval_run,) = offline_runs(run_dir / "eval")
    sections = card.split("### ")[1:]
    probe = next(s for s in sections if s.startswith("End-of-run"))
    speakers = next(s for s in sections if s.startswith("evaluate task=speakers"))
    for section, run, key in (
        (probe, train_run, "probe/table"),
        (speakers, eval_run, "eval/speakers/table"),
    ):
        columns, rows = wandb_setup.markdown_rows(section)
        assert run.table(key) == {"columns": columns, "data": rows}
    scores = json.loads((out / "config.json").read_text())["provenance"]["probe_scores"]
    assert scores and all(train_run.logged[k] == pytest.approx(v) for k, v in scores.items())


def test_markdown_rows_read_back_what_markdown_table_writes():
    rows = {"CPC": {"phones": 51.234, "speakers": None}, "mfcc": {"phones": math.nan}}
    text = markdown_table(rows, ["phones", "speakers"], "probe: linear")
    assert wandb_setup.markdown_rows(text + "\n\n| not | this |") == (
        ["features", "phones", "speakers"],
        [["CPC", 51.2, None], ["mfcc", None, None]],
    )
    assert wandb_setup.markdown_rows("no table") == ([], [])


def test_report_figures_follow_the_report_type():
    report = ABXReport(task="abx", sources={"cpc": {"within": 10.0, "across": 12.5}, "mfcc": {}})
    assert wandb_setup.report_figures(report) == {
        "eval/abx/cpc/within": 10.0,
        "eval/abx/cpc/across": 12.5,
    }


def test_the_per_k_figure_reads_the_validation_rows(tmp_path):
    csv = tmp_path / "metrics.csv"
    csv.write_text(
        "step,train/loss,val/acc_k1,val/acc_k2,val/mi_k1,val/mi_k2\n"
        "0,2.0,,,,\n"
        "1,,0.5,0.25,0.4,0.2\n"
        "3,,0.75,0.5,0.9,0.5\n"
    )
    rows = per_k_rows(csv)
    assert [step for step, _ in rows] == [1, 3]
    assert rows[-1][1] == {"acc": {1: 0.75, 2: 0.5}, "mi": {1: 0.9, 2: 0.5}}
    assert len(per_k_figure(csv).axes) == 2
    csv.write_text("step,train/loss\n0,2.0\n")
    assert per_k_figure(csv) is None and per_k_figure(tmp_path / "absent.csv") is None


def test_a_sweep_summary_goes_to_the_sweeps_group(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from omegaconf import OmegaConf

    _offline(monkeypatch, tmp_path / "home")
    sweep = tmp_path / "2026-01-01_00-00-00"
    sweep.mkdir()
    (sweep / "summary.csv").write_text("job,model.prediction_steps,status,val/loss\n0,2,ok,1.5\n")
    from matplotlib.figure import Figure

    Figure(figsize=(2, 2)).savefig(sweep / "summary.png")
    config = OmegaConf.create({"task_name": "train", "logger": {"wandb": {"project": "p"}}})
    wandb_setup.log_sweep_summary(config, sweep, sweep / "summary.csv", sweep / "summary.png")
    (run,) = offline_runs(sweep)
    assert run.run.run_group == "train-2026-01-01_00-00-00" and run.run.job_type == "sweep_summary"
    assert run.table("sweep/table") == {
        "columns": ["job", "model.prediction_steps", "status", "val/loss"],
        "data": [[0.0, 2.0, "ok", 1.5]],
    }
    assert run.image("sweep/plot").is_file()


def test_logger_kwargs_name_the_group_and_job_type(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from omegaconf import OmegaConf

    _offline(monkeypatch, tmp_path / "home")
    cfg = OmegaConf.create({"a": 1})
    node = OmegaConf.create({"project": "p", "group": None, "job_type": None, "offline": False})
    kwargs = wandb_setup.logger_kwargs(cfg, node, tmp_path, False, "train-sweep", sweep=True)
    assert kwargs["group"] == "train-sweep" and kwargs["job_type"] == "sweep_point"
    assert "resume" not in kwargs  # offline: a fresh run per process
    saved = json.loads(RunDir(tmp_path).wandb_run.read_text())
    assert saved["id"] == kwargs["id"] and saved["job_type"] == "sweep_point"
    node.job_type, node.group = "mine", "g"
    kwargs = wandb_setup.logger_kwargs(cfg, node, tmp_path, False, "train-x", sweep=False)
    assert "job_type" not in kwargs and "group" not in kwargs  # the config's own win
    assert json.loads(RunDir(tmp_path).wandb_run.read_text())["group"] == "g"
