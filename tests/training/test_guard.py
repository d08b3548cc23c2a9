"""The divergence guard: non-finite steps are skipped and counted, a streak stops the run with
one message, no checkpoint holds NaN, ranks decide together, GradScaler skips are not counted."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from helpers import run_train, tiny
from pytorch_lightning.plugins.precision import MixedPrecision
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cpc_lightning.training.checkpointing import AtomicModelCheckpoint
from cpc_lightning.training.guard import DivergenceGuard, TrainingDiverged


class Flaky(pl.LightningModule):
    """A linear model whose loss is NaN at ``nan_steps`` and whose gradient is inf (loss finite)
    at ``inf_grad_steps``; records its weights before every step."""

    def __init__(self, nan_steps=(), inf_grad_steps=(), scale=1.0) -> None:
        super().__init__()
        self.net = nn.Linear(4, 1)
        self.nan_steps, self.inf_grad_steps, self.scale = set(nan_steps), set(inf_grad_steps), scale
        self.before: dict[int, torch.Tensor] = {}

    def training_step(self, batch, batch_idx):
        self.before[self.global_step] = self.net.weight.detach().clone()
        loss = self.net(batch[0]).pow(2).mean() * self.scale
        if self.global_step in self.nan_steps:
            loss = loss * float("nan")
        if self.global_step in self.inf_grad_steps:  # d sqrt(x)/dx at 0 is inf; the value is 0
            loss = loss + (self.net.weight[0, 0] * 0).abs().sqrt()
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.05)


def fit(tmp_path: Path, model: Flaky, steps: int, guard: DivergenceGuard, **kw) -> pl.Trainer:
    ckpt = AtomicModelCheckpoint(
        dirpath=tmp_path / "checkpoints",
        filename="step{step:07d}",
        auto_insert_metric_name=False,
        save_last=True,
        save_top_k=-1,
        every_n_train_steps=1,
    )
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        callbacks=[guard, ckpt],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kw,
    )
    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(64, 4)), batch_size=4)
    trainer.fit(model, data)
    return trainer


def finite(path: Path) -> bool:
    state = torch.load(path, weights_only=False)["state_dict"]
    return all(bool(torch.isfinite(v).all()) for v in state.values())


def test_isolated_bad_steps_are_skipped_counted_and_leave_the_weights_alone(tmp_path):
    model = Flaky(nan_steps={2}, inf_grad_steps={5})
    guard = DivergenceGuard(max_consecutive=3)
    trainer = fit(tmp_path, model, 8, guard)
    assert guard.skipped == 2 and guard.consecutive == 0
    assert trainer.callback_metrics["guard/skipped_steps"] == 2
    for bad in (2, 5):  # the step was not applied ...
        assert torch.equal(model.before[bad], model.before[bad + 1])
    assert not torch.equal(model.before[3], model.before[4])  # ... the others were
    assert torch.isfinite(model.net.weight).all()
    adam = trainer.optimizers[0].state[model.net.weight]
    assert int(adam["step"]) == 8 - 2  # the optimizer never saw the skipped steps
    # no checkpoint from a skipped step's state; every other step has its checkpoint
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("step*.ckpt"))
    assert "step0000003.ckpt" not in names and "step0000006.ckpt" not in names
    assert "step0000004.ckpt" in names and "step0000008.ckpt" in names
    assert all(finite(p) for p in (tmp_path / "checkpoints").glob("*.ckpt"))


def test_a_streak_stops_the_run_with_one_message_and_a_finite_last_ckpt(tmp_path):
    model = Flaky(nan_steps=set(range(4, 100)))
    guard = DivergenceGuard(max_consecutive=3)
    with pytest.raises(TrainingDiverged) as err:
        fit(tmp_path, model, 20, guard)
    msg = str(err.value)
    assert "\n" not in msg
    assert "3 steps in a row (steps 4-6" in msg and "callbacks.guard.max_consecutive=3" in msg
    # step<N>.ckpt holds the weights step N starts from: step 4's gave the first NaN
    assert "from before step 4 is " in msg and "step0000003.ckpt (step 3)" in msg
    assert "model.optimizer.lr" in msg and "gradient_clip_val" in msg
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert finite(last)
    state = torch.load(last, weights_only=False)
    torch.testing.assert_close(state["state_dict"]["net.weight"], model.before[4])
    assert not list((tmp_path / "checkpoints").glob("step000000[5-9].ckpt"))


def test_no_checkpoint_from_non_finite_weights(tmp_path):
    """Weights that overflow with finite gradients (a huge step): nothing NaN is written."""
    model = Flaky()
    guard = DivergenceGuard(max_consecutive=2)
    with torch.no_grad():
        model.net.weight.fill_(float("inf"))
    with pytest.raises(TrainingDiverged):
        fit(tmp_path, model, 10, guard)
    assert not list((tmp_path / "checkpoints").glob("*.ckpt"))


def test_grad_scaler_overflows_are_not_counted(tmp_path):
    """16-mixed: the GradScaler skips steps whose gradients overflow (and lowers its scale);
    the guard counts only the step with a non-finite loss."""
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    model = Flaky(nan_steps={6}, inf_grad_steps={2, 3})
    guard = DivergenceGuard(max_consecutive=2)
    plugin = MixedPrecision("16-mixed", "cpu", scaler)
    fit(tmp_path, model, 8, guard, plugins=[plugin])
    assert guard.skipped == 1  # step 6 only
    assert scaler.get_scale() < 2.0**8  # the scaler handled the overflows
    for bad in (2, 3, 6):
        assert torch.equal(model.before[bad], model.before[bad + 1])


@pytest.mark.parametrize("at,min_history", [(8, 4), (1, None)])
def test_a_loss_explosion_warns_once(at, min_history, caplog):
    """Finding 1, lr=1e6: the loss went 4.9 -> 4.6e13 from step 1 on without a warning."""
    model = Flaky()
    kw = {} if min_history is None else {"min_history": min_history}
    guard = DivergenceGuard(max_consecutive=3, max_loss_ratio=10.0, **kw)

    class Explode(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            pl_module.scale = 1e4 if trainer.global_step >= at else 1.0

    trainer = pl.Trainer(
        max_steps=12,
        accelerator="cpu",
        callbacks=[guard, Explode()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with caplog.at_level(logging.WARNING, logger="cpc_lightning.guard"):
        trainer.fit(model, DataLoader(TensorDataset(torch.randn(64, 4)), batch_size=4))
    exploded = [r.getMessage() for r in caplog.records if "exploded" in r.getMessage()]
    assert len(exploded) == 1 and f"step {at}:" in exploded[0]  # one excursion, one warning
    assert "running median" in exploded[0] and "model.optimizer.lr" in exploded[0]
    assert guard.spikes == 1 and guard.skipped == 0


def test_guard_state_is_in_the_checkpoint(tmp_path):
    guard = DivergenceGuard(max_consecutive=5)
    fit(tmp_path, Flaky(nan_steps={1}), 4, guard)
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    saved = next(v for k, v in state["callbacks"].items() if k.startswith("DivergenceGuard"))
    assert saved["skipped"] == 1 and len(saved["history"]) == 3  # the 3 finite steps
    again = DivergenceGuard(max_consecutive=5)
    again.load_state_dict(saved)
    assert again.skipped == 1 and list(again._history) == saved["history"]


def test_bad_guard_settings_are_named():
    with pytest.raises(ValueError, match="callbacks.guard.max_consecutive=0"):
        DivergenceGuard(max_consecutive=0)
    with pytest.raises(ValueError, match="callbacks.guard.max_loss_ratio=1"):
        DivergenceGuard(max_loss_ratio=1)


# ------------------------------------------------------------------------------ the CLI
def test_lr_1e30_stops_with_one_message_and_no_diverged_checkpoint(tmp_path):
    """Finding 1: lr=1e30 gave NaN from step 1, exit code 0 and NaN checkpoints."""
    run = tmp_path / "run"
    proc = run_train(
        *tiny("model.optimizer.lr=1e30", "trainer.max_steps=40", "trainer.val_check_interval=40"),
        f"hydra.run.dir={run}",
        env={"CPC_CACHE_DIR": str(tmp_path / "cache")},
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    assert "training diverged" in errors[0] and "model.optimizer.lr" in errors[0]
    # step 0's update gave the NaN: no checkpoint holds weights whose loss was finite, and the
    # weights of the streak are not saved as if they were
    assert "no checkpoint is from before step 1" in errors[0]
    assert json.loads((run / "result.json").read_text())["status"] == "diverged"
    for ckpt in (run / "checkpoints").glob("*.ckpt"):
        assert finite(ckpt), ckpt
    assert not (run / "checkpoints" / "last.ckpt").exists()


class OneRankNaN(Flaky):
    """Rank 1's loss *value* is NaN at step 1 while every gradient stays finite: only rank 1
    sees a bad step, so the ranks must agree to skip it."""

    def __init__(self, out_dir: str) -> None:
        super().__init__()
        self.out_dir = out_dir

    def training_step(self, batch, batch_idx):
        self.before[self.global_step] = self.net.weight.detach().clone()
        loss = self.net(batch[0]).pow(2).mean()
        if self.global_step == 1 and self.global_rank == 1:
            loss = loss + torch.tensor(float("nan"))  # a constant: the gradient is unchanged
        return loss

    def on_train_end(self):
        torch.save(
            {"before": self.before, "weight": self.net.weight.detach().clone()},
            f"{self.out_dir}/rank{self.global_rank}.pt",
        )


@pytest.mark.slow
def test_ddp_ranks_skip_together(tmp_path):
    trainer = pl.Trainer(
        max_steps=3,
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        callbacks=[DivergenceGuard(max_consecutive=3)],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    data = DataLoader(TensorDataset(torch.randn(64, 4)), batch_size=4)
    trainer.fit(OneRankNaN(str(tmp_path)), data)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    torch.testing.assert_close(ranks[0]["weight"], ranks[1]["weight"], atol=0, rtol=0)
    for r in ranks:  # step 1 was skipped on both ranks, steps 0 and 2 applied
        assert torch.equal(r["before"][1], r["before"][2])
        assert not torch.equal(r["before"][0], r["before"][1])


def test_a_ddp_spawn_worker_error_comes_back_as_one_user_error():
    from torch.multiprocessing import ProcessRaisedException

    from cpc_lightning.errors import user_error_from_worker

    text = (
        "\n\n-- Process 1 terminated with the following error:\nTraceback (most recent call "
        'last):\n  File "x.py", line 1\ncpc_lightning.training.guard.TrainingDiverged: training '
        "diverged: the loss ... To fix: lower model.optimizer.lr\n"
    )
    err = user_error_from_worker(ProcessRaisedException(text, 1, 1234))
    assert str(err) == "training diverged: the loss ... To fix: lower model.optimizer.lr"
    assert user_error_from_worker(RuntimeError(text)) is None
