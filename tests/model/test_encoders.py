"""Encoders: audio shapes, receptive field, norms; the patch ResNet's exact fast paths."""

import pytest
import torch

from cpc_lightning.model.encoders.audio import Conv1dEncoder, frame_mask


@pytest.mark.parametrize("norm", ["none", "layer", "channel", "batch", "instance"])
def test_paper_shapes(norm):
    enc = Conv1dEncoder(hidden_dim=32, out_dim=24, norm=norm)
    z = enc(torch.randn(2, 1, 20480))
    assert z.shape == (2, 128, 24)
    assert enc.downsampling == 160 and enc.out_dim == 24
    assert enc.num_frames(20480) == 128
    assert enc.receptive_field == 465


def test_num_frames_matches_forward_for_odd_lengths():
    enc = Conv1dEncoder(hidden_dim=8, out_dim=8)
    for length in (465, 1000, 16003, 20480 + 77):
        assert enc(torch.randn(1, 1, length)).shape[1] == enc.num_frames(length)


def test_layer_norm_has_no_cross_sample_statistics():
    enc = Conv1dEncoder(hidden_dim=16, out_dim=16, norm="layer").train()
    x = torch.randn(3, 1, 3200)
    alone = enc(x[:1])
    together = enc(torch.cat([x[:1], 100 * x[1:]]))
    torch.testing.assert_close(alone, together[:1])


def test_bad_norm_names_the_value():
    with pytest.raises(ValueError, match="encoder.norm='group'"):
        Conv1dEncoder(norm="group")


def test_frame_mask():
    mask = torch.ones(2, 800, dtype=torch.bool)
    mask[1, 500:] = False
    fm = frame_mask(mask, 5, 160)
    assert fm.tolist() == [[True] * 5, [True, True, True, False, False]]


@pytest.mark.parametrize("norm", ["none", "layer", "batch"])
def test_bf16_autocast_runs_the_stack_in_bf16_close_to_fp32(norm):
    torch.manual_seed(0)
    enc = Conv1dEncoder(hidden_dim=64, out_dim=48, norm=norm)
    x = torch.randn(2, 1, 3200)
    ref = enc(x)
    ref.square().mean().backward()
    ref_grads = [p.grad.clone() for p in enc.parameters()]
    enc.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = enc(x)
    assert z.dtype == torch.bfloat16  # no fp32 round trips between layers
    z.float().square().mean().backward()
    torch.testing.assert_close(z.float(), ref, atol=0.1, rtol=0.05)
    for p, g in zip(enc.parameters(), ref_grads, strict=True):
        assert p.grad.dtype == torch.float32  # parameters and their gradients stay fp32
        if g.norm() < 1e-6:  # a conv bias before BatchNorm: its true gradient is 0
            continue
        assert torch.nn.functional.cosine_similarity(p.grad.flatten(), g.flatten(), 0) > 0.98


@pytest.mark.parametrize(
    "cin,kernel,stride,padding,length",
    [(1, 10, 5, 3, 1003), (1, 7, 3, 2, 101), (8, 4, 2, 1, 50), (40, 8, 4, 2, 37), (80, 3, 1, 1, 9)],
)
def test_strided_conv_equals_conv1d_on_every_path(cin, kernel, stride, padding, length):
    """im2col (narrow input), block GEMM (kernel = 2 stride) and the conv1d fallback."""
    from cpc_lightning.model.encoders.audio import StridedConv

    torch.manual_seed(0)
    conv = StridedConv(cin, 6, kernel, stride, padding).double()
    x = torch.randn(2, length, cin, dtype=torch.float64, requires_grad=True)
    w = conv.weight
    ref = torch.nn.functional.conv1d(x.transpose(1, 2), w, conv.bias, stride, padding)
    torch.testing.assert_close(conv(x), ref.transpose(1, 2))
    torch.autograd.gradcheck(conv, (x[:, :30].detach().requires_grad_(),))


# ------------------------------------------------------------------ image: PatchResNet fast paths
def _fast_and_plain(enc: torch.nn.Module, x: torch.Tensor):
    """Outputs and parameter gradients of ``enc`` with its matrix-product paths on, then off."""
    import copy

    from cpc_lightning.model.encoders.patch import fast_paths

    results = []
    for fast in (True, False):
        net = fast_paths(copy.deepcopy(enc), fast).train()
        xi = x.clone().requires_grad_(True)
        z = net(xi)
        (z * torch.linspace(-1, 1, z.shape[-1], dtype=z.dtype)).square().sum().backward()
        grads = {n: p.grad for n, p in net.named_parameters()}
        results.append((z.detach(), xi.grad, grads))
    return results


@pytest.mark.parametrize("norm", ["layer", "group", "batch"])
@pytest.mark.parametrize(
    "kwargs,patch",
    [
        ({"preset": "small"}, 8),
        ({"preset": "resnet50", "widths": [8, 16, 32]}, 16),
        ({"preset": "resnet101", "widths": [4, 8, 8]}, 8),
        ({"preset": "resnet50", "blocks": [1, 1, 1, 2], "widths": [8, 8, 16, 8]}, 8),
        ({"preset": "resnet50", "blocks": [1, 2], "widths": [8, 8], "stem": "small"}, 5),
    ],
    ids=["small", "resnet50-16px", "resnet101", "bolts-like", "odd-map"],
)
def test_patch_resnet_fast_paths_equal_the_convolutions(kwargs, patch, norm):
    """The 1x1-map / 1x1-kernel matmuls and the layer_norm GroupNorm: same z and gradients."""
    from cpc_lightning.model.encoders.patch import PatchResNet

    torch.manual_seed(0)
    enc = PatchResNet(norm=norm, out_dim=12, expansion=None, **kwargs).double()
    for p in enc.parameters():  # non-trivial affine parameters
        p.data.add_(0.1 * torch.randn_like(p))
    x = torch.randn(1, 2, 2, 3, patch, patch, dtype=torch.float64)
    (z, gx, grads), (z_ref, gx_ref, grads_ref) = _fast_and_plain(enc, x)
    torch.testing.assert_close(z, z_ref)
    torch.testing.assert_close(gx, gx_ref)
    for name, g in grads_ref.items():
        torch.testing.assert_close(grads[name], g, msg=name)


def test_patch_resnet_fast_paths_float32_and_expansion():
    """bolts' CPC v2 shapes (expansion 4, 4, 8, 4) in float32: equal to float32 rounding."""
    from cpc_lightning.model.encoders.patch import PatchResNet

    torch.manual_seed(0)
    enc = PatchResNet(
        "resnet50", blocks=[1, 1, 1, 1], widths=[8, 16, 32, 32], stem="standard",
        expansion=[4, 4, 8, 4], out_dim=16,
    )  # fmt: skip
    assert enc.feature_dim == 128 and enc.body[4].conv3.out_channels == 256
    x = torch.randn(2, 7, 7, 3, 8, 8)
    (z, gx, grads), (z_ref, gx_ref, grads_ref) = _fast_and_plain(enc, x)
    torch.testing.assert_close(z, z_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-4, atol=1e-5)
    for name, g in grads_ref.items():
        torch.testing.assert_close(grads[name], g, rtol=1e-4, atol=1e-5, msg=name)


def test_patch_resnet_state_dict_keys_unchanged_and_expansion_checked():
    from cpc_lightning.model.encoders.patch import PatchResNet

    enc = PatchResNet("resnet50", blocks=[1, 1], widths=[4, 8])
    keys = set(enc.state_dict())
    assert {"body.2.conv1.weight", "body.2.norm1.weight", "body.2.shortcut.weight"} <= keys
    assert (
        PatchResNet("resnet50", blocks=[1, 1], widths=[4, 8], expansion=4).state_dict().keys()
        == keys
    )
    with pytest.raises(ValueError, match="expansion"):
        PatchResNet("small", expansion=2)
    with pytest.raises(ValueError, match="expansion"):
        PatchResNet("resnet50", expansion=[4, 8])
