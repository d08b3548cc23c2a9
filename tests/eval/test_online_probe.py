"""The online probe: its state is in the checkpoint (a resumed run continues it), and its
validation accuracy pools counts instead of averaging per-batch ratios."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from helpers import make_cfg, tiny

from cpc_lightning.eval.online_probe import OnlineProbe


def _probe_state(path) -> dict:
    ckpt = torch.load(path, weights_only=False)
    (key,) = [k for k in ckpt["callbacks"] if k.startswith("OnlineProbe")]
    return ckpt["callbacks"][key]


def test_online_probe_state_is_checkpointed_and_resumed(tmp_path):
    from cpc_lightning.train import train

    result = train(make_cfg(tiny("callbacks=online_probe", "trainer.max_steps=4"), tmp_path))
    assert "val/online_probe_acc" in result["metrics"]
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    first = _probe_state(last)
    assert first["task"] == "phones" and first["num_classes"] > 1
    assert first["optimizer"]["state"][0]["step"] == 4  # one probe update per training step
    more = tiny("callbacks=online_probe", "trainer.max_steps=6", "ckpt_path=last")
    cfg = make_cfg(more, tmp_path)
    train(cfg)
    second = _probe_state(last)
    assert second["optimizer"]["state"][0]["step"] == 6  # continued, not restarted (would be 2)


class _Recorder:
    device = torch.device("cpu")

    def __init__(self) -> None:
        self.logged: dict[str, float] = {}

    def log(self, name, value, **kw) -> None:
        self.logged[name] = float(value)


def test_validation_accuracy_pools_counts():
    probe = OnlineProbe()
    probe.task, probe.num_classes = "speakers", 2
    probe.probe = torch.nn.Linear(1, 2)
    with torch.no_grad():  # predicts class 1 when x > 0
        probe.probe.weight.copy_(torch.tensor([[-1.0], [1.0]]))
        probe.probe.bias.zero_()
    from torchmetrics.classification import MulticlassAccuracy

    probe.val_accuracy = MulticlassAccuracy(2, average="micro", ignore_index=-100)
    module = _Recorder()
    module.encoder = SimpleNamespace(downsampling=160)
    trainer = SimpleNamespace(world_size=1)
    probe.on_validation_epoch_start(trainer, module)
    # batch 1: 1 of 1 right; batch 2: 1 of 3 right -> pooled 2/4 (a mean of ratios gives 2/3)
    for xs, ys in (([1.0], [1]), ([1.0, 1.0, -1.0], [1, 0, 1])):
        c = torch.tensor(xs)[:, None, None].expand(-1, 3, 1)  # (B, T, 1), constant over time
        batch = {
            "x": torch.zeros(len(xs), 1, 480),
            "mask": torch.ones(len(xs), 480, dtype=bool),
            "speaker": torch.tensor(ys),
        }
        probe.on_validation_batch_end(trainer, module, {"context": c}, batch, 0)
    probe.on_validation_epoch_end(trainer, module)
    assert module.logged["val/online_probe_acc"] == 0.5
