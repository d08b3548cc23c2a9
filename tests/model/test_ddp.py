"""Global negatives across 2 DDP CPU processes (gloo, ddp_spawn) vs. one process.

With ``negatives=global`` each rank scores its anchors against the z of the whole global batch,
gathered with gradients. Tolerance: 1e-5 absolute on the loss and on every parameter after one
SGD step (float32, different reduction orders across processes).
"""

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from cpc_lightning.model.context.sequence import GRUContext
from cpc_lightning.model.encoders.audio import Conv1dEncoder
from cpc_lightning.model.heads import PredictionHeads
from cpc_lightning.model.module import CPCModule
from cpc_lightning.model.negatives import NegativeSampler

B, L, WORLD = 3, 3200, 2
TOL = 1e-5


class SeededGlobalSampler(NegativeSampler):
    """``global`` mode with draws that depend only on the call count, for all candidate
    sequences at once, so one process and two ranks see the same negatives."""

    def __init__(self, num_negatives: int):
        super().__init__("global", num_negatives)
        self.calls = 0
        self.candidate_sizes: list[int] = []

    def sample(self, valid, speaker, anchor_seqs, num_anchor_steps, num_steps):
        self.candidate_sizes.append(valid.numel())
        g = torch.Generator().manual_seed(1000 + self.calls)
        self.calls += 1
        c, t = valid.shape
        full = torch.randint(0, c * t, (1, c, num_anchor_steps, self.num_negatives), generator=g)
        return full[:, anchor_seqs].reshape(1, -1, self.num_negatives)


class Waves(Dataset):
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(WORLD * B, 1, L, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "mask": torch.ones(L, dtype=torch.bool)}


class Recorder(CPCModule):
    def __init__(self, out_dir, **kw):
        super().__init__(**kw)
        self.out_dir = out_dir

    def training_step(self, batch, batch_idx):
        out = self.compute_loss(batch)
        torch.save(
            {"loss": out.loss.detach(), "sizes": self.negatives.candidate_sizes, "x": batch["x"]},
            f"{self.out_dir}/loss_rank{self.global_rank}.pt",
        )
        return out.loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)

    def on_train_end(self):
        state = {k: v.detach().clone() for k, v in self.state_dict().items()}
        torch.save(state, f"{self.out_dir}/params_rank{self.global_rank}.pt")


def make_model(out_dir):
    torch.manual_seed(0)
    return Recorder(
        out_dir,
        encoder=Conv1dEncoder(hidden_dim=8, out_dim=8),
        context=GRUContext(8, 8),
        heads=PredictionHeads(8, 8, 2),
        negatives=SeededGlobalSampler(6),
        prediction_steps=2,
    )


def test_global_negatives_match_single_process(tmp_path):
    model = make_model(str(tmp_path))
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=WORLD,
        strategy="ddp_spawn",
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    loader = DataLoader(Waves(), batch_size=B, shuffle=False)
    trainer.fit(model, loader)

    ranks = [torch.load(tmp_path / f"loss_rank{r}.pt") for r in range(WORLD)]
    params = [torch.load(tmp_path / f"params_rank{r}.pt") for r in range(WORLD)]
    frames = Conv1dEncoder(8, 8).num_frames(L)
    # the candidate set is the global batch on every rank
    assert all(r["sizes"] == [WORLD * B * frames] for r in ranks)
    # the ranks' parameters are identical after the step
    for key in params[0]:
        torch.testing.assert_close(params[0][key], params[1][key], atol=0, rtol=0)

    # one process, the ranks' batches concatenated in rank order (= the gathered order)
    x = torch.cat([r["x"] for r in ranks])
    assert sorted(x[:, 0, 0].tolist()) == sorted(Waves().x[:, 0, 0].tolist())
    batch = {"x": x, "mask": torch.ones(WORLD * B, L, dtype=torch.bool)}
    single = make_model(str(tmp_path))
    opt = torch.optim.SGD(single.parameters(), lr=0.5)
    loss = single.compute_loss(batch).loss
    expected = torch.stack([r["loss"] for r in ranks]).mean()
    assert abs(loss.item() - expected.item()) < TOL
    opt.zero_grad()
    loss.backward()
    opt.step()
    moved = 0
    for key, value in single.state_dict().items():
        torch.testing.assert_close(params[0][key], value, atol=TOL, rtol=0)
        moved += int(not torch.equal(value, make_model(str(tmp_path)).state_dict()[key]))
    assert moved > 0  # the step really changed the parameters
