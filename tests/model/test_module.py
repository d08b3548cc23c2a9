"""CPCModule: loss wiring, padding, image directions, a real optimisation signal."""

import math

import pytest
import torch
from helpers.training import adam_losses
from torch import nn

from cpc_lightning.model.context.sequence import GRUContext
from cpc_lightning.model.encoders.audio import Conv1dEncoder
from cpc_lightning.model.heads import PredictionHeads
from cpc_lightning.model.layout import grid_to_columns, rotate_grid
from cpc_lightning.model.module import CPCModule
from cpc_lightning.model.negatives import NegativeSampler

STEP = {"down": (1, 0), "up": (-1, 0), "left": (0, -1), "right": (0, 1)}


def audio_module(k=3, mode="batch", n: int | str = 8):
    enc = Conv1dEncoder(hidden_dim=16, out_dim=16)
    return CPCModule(
        enc,
        GRUContext(16, 8),
        PredictionHeads(8, 16, k),
        NegativeSampler(mode, n),
        prediction_steps=k,
    )


@pytest.mark.parametrize("direction", sorted(STEP))
def test_direction_rotation_maps_to_the_right_targets(direction):
    h, w = 4, 5
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    grid = torch.stack([rows, cols], -1)[None].float()  # (1, H, W, 2): original coordinates
    seq = grid_to_columns(rotate_grid(grid, direction))  # the loss's column sequences
    # In every column sequence, step t+1 is the original patch one step in `direction`.
    delta = seq[:, 1:] - seq[:, :-1]
    assert (delta == torch.tensor(STEP[direction]).float()).all()


def test_loss_shapes_and_metrics_keys():
    m = audio_module()
    batch = {"x": torch.randn(4, 1, 3200), "mask": torch.ones(4, 3200, dtype=torch.bool)}
    out = m.compute_loss(batch)
    assert out.loss_k.shape == (3,) and out.loss.ndim == 0
    assert torch.isfinite(out.loss)
    assert out.num_anchors.tolist() == [4 * (20 - 3)] * 3


def test_padding_removes_anchors_and_positives():
    m = audio_module(k=2)
    mask = torch.ones(2, 3200, dtype=torch.bool)
    mask[1, 1600:] = False  # sequence 1: 10 of 20 frames valid
    out = m.compute_loss({"x": torch.randn(2, 1, 3200), "mask": mask})
    # seq 0: 18 anchors per k; seq 1: anchors t with t + k < 10 -> 10 - k
    assert out.num_anchors.tolist() == [18 + 9, 18 + 8]


def test_too_short_window_is_a_clear_error():
    m = audio_module(k=12)
    with pytest.raises(ValueError, match="data.window"):
        m.compute_loss({"x": torch.randn(2, 1, 1600)})


class GridEncoder(nn.Module):
    """Flattens each patch: (B, G, G, C, P, P) -> (B, G, G, C*P*P)."""

    modality = "image"

    def __init__(self, d):
        super().__init__()
        self.out_dim = d

    def forward(self, x):
        return x.flatten(3)


@pytest.mark.parametrize("share", [True, False])
def test_images_four_directions_with_a_sequence_context(share):
    dirs = ["down", "up", "left", "right"]
    enc = GridEncoder(12)
    heads = PredictionHeads(6, 12, 2, num_sets=1 if share else 4)
    m = CPCModule(
        enc,
        GRUContext(12, 6),
        heads,
        NegativeSampler("batch", 5),
        prediction_steps=2,
        step_offset=1,
        directions=dirs,
    )
    x = torch.randn(2, 5, 5, 3, 2, 2)
    out = m.compute_loss({"x": x})
    assert m.steps == [2, 3]
    # per direction: B * W columns, each with H - 3 anchors
    assert out.num_anchors.tolist() == [2 * 5 * 2] * 2
    out.loss.backward()
    assert all(p.grad is not None for p in heads.parameters())


def test_a_few_adam_steps_reduce_the_loss():
    torch.manual_seed(0)
    first, last = adam_losses(audio_module(k=2, n=16))
    assert last < first - 0.5


def test_features_is_the_one_feature_path():
    """``features``: z, c and any context layer, in the modality's layout."""
    torch.manual_seed(0)
    enc = Conv1dEncoder(hidden_dim=16, out_dim=16)
    m = CPCModule(
        enc,
        GRUContext(16, 8, num_layers=2),
        PredictionHeads(8, 16, 2),
        NegativeSampler(),
        None,
        prediction_steps=2,
    ).eval()
    x = torch.randn(2, 1, 3200)
    with torch.no_grad():
        z, c = m(x)
        assert torch.equal(m.features(x, "z"), z) and torch.equal(m.features(x), c)
        torch.testing.assert_close(m.features(x, "c", layer=-1), c)
        assert m.features(x, "c", layer=0).shape == (2, 20, 8)
    with pytest.raises(ValueError, match="layer=2 is out of range"):
        m.features(x, "c", layer=2)
    with pytest.raises(ValueError, match="feature='q'"):
        m.features(x, "q")


@pytest.mark.parametrize("grid_context", [True, False])
def test_image_features_are_grids(grid_context):
    from cpc_lightning.model.context.grid import MaskedConvContext

    ctx = MaskedConvContext(12, 6, num_layers=1) if grid_context else GRUContext(12, 6)
    m = CPCModule(
        GridEncoder(12), ctx, PredictionHeads(6, 12, 2), NegativeSampler(), None, prediction_steps=2
    ).eval()
    x = torch.randn(2, 5, 5, 3, 2, 2)
    with torch.no_grad():
        c = m.features(x)
        assert c.shape == (2, 5, 5, 6)
        # the "down" context of column j is the context run over column j's sequence
        if not grid_context:
            col = ctx(m.features(x, "z")[:, :, 1])
            torch.testing.assert_close(c[:, :, 1], col)


def test_an_encoder_without_a_declared_modality_is_refused():
    with pytest.raises(ValueError, match="must declare modality"):
        CPCModule(
            nn.Linear(2, 2),
            GRUContext(2, 2),
            PredictionHeads(2, 2, 1),
            NegativeSampler(),
            prediction_steps=1,
        )


# ------------------------------------------- CPC v2's loss: num_negatives=all, model.all_anchors
def reference_sequence_loss(m, z, c, valid, all_anchors):
    """Per step k, loops over anchors (b, t) whose t + k exists and is valid: a float64
    cross-entropy over the positive and every other valid frame of the batch."""
    b, t, _ = z.shape
    pred = m.heads(c, 0).double()  # (K, B, T, D)
    flat, vflat = z.reshape(b * t, -1).double(), valid.reshape(-1)
    losses, counts = [], []
    for i, s in enumerate(m.steps):
        total, n = 0.0, 0
        for bb in range(b):
            for tt in range(t - s if all_anchors else t - m.steps[-1]):
                if not (valid[bb, tt] and valid[bb, tt + s]):
                    continue
                p = bb * t + tt + s
                cols = [p] + [j for j in range(b * t) if vflat[j] and j != p]
                total = total - torch.log_softmax(flat[cols] @ pred[i, bb, tt], 0)[0]
                n += 1
        losses.append(total / n)
        counts.append(n)
    return torch.stack(losses), counts


def _audio_case(seed=0):
    g = torch.Generator().manual_seed(seed)
    z, c = torch.randn(3, 12, 16, generator=g), torch.randn(3, 12, 8, generator=g)
    valid = torch.ones(3, 12, dtype=torch.bool)
    valid[1, 7:] = False  # padding: 7 valid frames
    valid[2, 10:] = False
    return z, c, valid


@pytest.mark.parametrize("all_anchors", [False, True])
def test_all_negatives_equal_a_slow_reference_over_every_valid_frame(all_anchors):
    torch.manual_seed(0)
    m = audio_module(k=3, n="all")
    m.all_anchors = all_anchors
    z, c, valid = _audio_case()
    out = m.sequence_loss(z, c, valid, None)
    ref, counts = reference_sequence_loss(m, z, c, valid, all_anchors)
    torch.testing.assert_close(out.loss_k.double(), ref, atol=1e-5, rtol=1e-5)
    assert out.num_anchors.tolist() == counts
    # N + 1 = every valid frame of the batch, for every anchor
    n1 = int(valid.sum())
    torch.testing.assert_close(out.mi_k, math.log(n1) - out.loss_k.detach())


def test_all_negatives_ignore_the_sampler_rng_and_invalid_frames():
    m = audio_module(k=2, n="all")
    z, c, valid = _audio_case(1)
    torch.manual_seed(0)
    first = m.sequence_loss(z, c, valid, None).loss
    torch.manual_seed(123)
    assert torch.equal(m.sequence_loss(z, c, valid, None).loss, first)
    # padded frames are never candidates: whatever they hold, the loss is the same
    z2 = torch.where(valid[..., None], z, torch.randn_like(z) * 100)
    torch.testing.assert_close(m.sequence_loss(z2, c, valid, None).loss, first)


def test_all_negatives_on_images_use_every_patch_of_the_batch():
    dirs = ["down", "up", "left", "right"]
    m = CPCModule(
        GridEncoder(12),
        GRUContext(12, 6),
        PredictionHeads(6, 12, 2),
        NegativeSampler("batch", "all"),
        prediction_steps=2,
        directions=dirs,
    )
    out = m.compute_loss({"x": torch.randn(2, 5, 5, 3, 2, 2)})
    # N + 1 = B * H * W positions per anchor, in every direction
    torch.testing.assert_close(out.mi_k, math.log(2 * 5 * 5) - out.loss_k.detach())
    out.loss.backward()


@pytest.mark.parametrize(
    "k,offset,all_anchors,rows",
    [
        (5, 0, False, [2] * 5),  # t < 7 - 5 for every k
        (5, 0, True, [6, 5, 4, 3, 2]),  # t + k < 7
        (3, 1, True, [5, 4, 3]),  # steps 2, 3, 4
    ],
)
def test_anchors_each_step_sees_on_a_7_row_grid(k, offset, all_anchors, rows):
    m = CPCModule(
        GridEncoder(12),
        GRUContext(12, 6),
        PredictionHeads(6, 12, k),
        NegativeSampler("batch", 8),
        prediction_steps=k,
        step_offset=offset,
        all_anchors=all_anchors,
    )
    out = m.compute_loss({"x": torch.randn(2, 7, 7, 3, 2, 2)})
    assert out.num_anchors.tolist() == [2 * 7 * r for r in rows]  # B * W columns
    assert torch.isfinite(out.loss)


def test_all_anchors_with_padding_and_sampled_negatives():
    m = audio_module(k=2)
    m.all_anchors = True
    mask = torch.ones(2, 3200, dtype=torch.bool)
    mask[1, 1600:] = False  # sequence 1: 10 of 20 frames valid
    out = m.compute_loss({"x": torch.randn(2, 1, 3200), "mask": mask})
    # seq 0: t + k < 20 -> 20 - k; seq 1: t + k < 10 -> 10 - k
    assert out.num_anchors.tolist() == [19 + 9, 18 + 8]


def test_a_few_adam_steps_reduce_the_loss_with_all_negatives_and_anchors():
    torch.manual_seed(0)
    m = audio_module(k=2, n="all")
    m.all_anchors = True
    first, last = adam_losses(m)
    assert last < first - 0.5


# --------------------------------------------------------- context.per_direction (image grids)
def test_per_direction_grid_context_trains_every_direction():
    from cpc_lightning.model.context.grid import MaskedConvContext

    torch.manual_seed(0)
    dirs = ["down", "up", "left", "right"]
    ctx = MaskedConvContext(12, 6, num_layers=1, per_direction=True, directions=dirs)
    m = CPCModule(
        GridEncoder(12),
        ctx,
        PredictionHeads(6, 12, 2, num_sets=4),
        NegativeSampler("batch", "all"),
        prediction_steps=2,
        step_offset=1,
        directions=dirs,
        all_anchors=True,
    )
    x = torch.randn(2, 7, 7, 3, 2, 2)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):  # a fit step: loss, backward, optimiser step
        out = m.compute_loss({"x": x})
        opt.zero_grad()
        out.loss.backward()
        for d in dirs:  # every direction's own network learns from its own direction
            assert all(
                p.grad is not None and p.grad.abs().sum() > 0 for p in ctx.nets[d].parameters()
            )
        opt.step()
        losses.append(out.loss.item())
    assert losses[-1] < losses[0]
    with torch.no_grad():  # the feature path reads the "down" network
        torch.testing.assert_close(m.features(x), ctx.nets["down"](x.flatten(3)))
    with pytest.raises(ValueError, match="context.directions"):
        CPCModule(
            GridEncoder(12),
            MaskedConvContext(12, 6, num_layers=1, per_direction=True, directions=["down"]),
            PredictionHeads(6, 12, 2),
            NegativeSampler(),
            prediction_steps=2,
            directions=["down", "up"],
        )
