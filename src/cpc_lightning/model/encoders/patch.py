"""Patch encoders: a grid of patches (B, G, G, C, P, P) -> one vector per patch (B, G, G, D).

Each patch runs through a ResNet on its own (the grid is folded into the batch), is mean-pooled
over space, and optionally projected to ``out_dim`` by a linear map. Normalisation defaults to
per-sample statistics (``norm="layer"``: GroupNorm with one group, i.e. LayerNorm over
(C, H, W)), because BatchNorm shares statistics across the patches of one image and lets the
model cheat at CPC (CPC v2). ``norm="batch"`` exists for that ablation only.

``PatchResNet``        pre-activation (ResNet-v2) network with named presets.
``TorchvisionResNet``  ``torchvision.models.resnet18/34/50`` with swappable norm, never pretrained.

Small patches shrink to 1x1 maps after a few strides (8x8 patches: from the second stage on), where
a convolution is a matrix product. ``PatchConv2d`` and ``PatchGroupNorm`` are ``nn.Conv2d`` and
``nn.GroupNorm`` (same parameters, same state_dict keys) that then run as ``F.linear`` /
``F.layer_norm``: the same sums, equal to float rounding, without oneDNN's slow backward of
convolutions whose taps mostly read zero padding. ``fast_paths(model, False)`` turns them off.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

#: ``encoder.norm`` values of the patch encoders.
PATCH_NORMS = ("layer", "group", "batch")

# preset -> (block, blocks per stage, widths per stage, stem)
PRESETS: dict[str, tuple[str, tuple[int, ...], tuple[int, ...], str]] = {
    # CPU-sized: 3x3 stem, one basic block per stage -> 128-d; fine on 8x8 or 64x64 patches
    "small": ("basic", (1, 1, 1), (32, 64, 128), "small"),
    # ResNet-v2-50/101 up to the third stage (as CPC v1 with 101), bottlenecks -> 4 * 256 = 1024-d
    "resnet50": ("bottleneck", (3, 4, 6), (64, 128, 256), "standard"),
    "resnet101": ("bottleneck", (3, 4, 23), (64, 128, 256), "standard"),
}


class PatchConv2d(nn.Conv2d):
    """``nn.Conv2d`` with exact matrix-product paths (``fast``, on by default).

    - the output map is 1x1 (a 3x3 padding-1 conv on a 1x1 map; a stride-2 conv on a 2x2 map):
      ``F.linear`` of the input over the kernel taps that land on it (never the padding);
    - a 1x1 kernel without padding: subsample by the stride, then a matmul over channels.
    Anything else (and ``groups``/``dilation``/non-zero padding modes) is the plain convolution.
    """

    fast = True

    def forward(self, x: Tensor) -> Tensor:
        simple = self.groups == 1 and self.dilation == (1, 1) and self.padding_mode == "zeros"
        if not (self.fast and simple and x.dim() == 4 and isinstance(self.padding, tuple)):
            return super().forward(x)
        (kh, kw), (ph, pw), (sh, sw) = self.kernel_size, self.padding, self.stride
        h, w = x.shape[-2:]
        if (h + 2 * ph - kh) // sh == 0 and (w + 2 * pw - kw) // sw == 0:  # 1x1 output
            hr, wr = min(h, kh - ph), min(w, kw - pw)  # input rows/cols the window covers
            if (kh, kw) == (1, 1):  # a view: no scatter into a zero tensor in backward
                weight = self.weight.flatten(1)
            elif hr == 1 and wr == 1:  # one tap: one select (one scatter in backward)
                weight = self.weight.flatten(2)[:, :, ph * kw + pw]
            elif hr > 0 and wr > 0:
                weight = self.weight[:, :, ph : ph + hr, pw : pw + wr].flatten(1)
            if hr > 0 and wr > 0:
                x = x if (h, w) == (hr, wr) else x[..., :hr, :wr]  # no slice (copy) if all used
                return F.linear(x.flatten(1), weight, self.bias)[..., None, None]
        if (kh, kw, ph, pw) == (1, 1, 0, 0):
            x = x[..., ::sh, ::sw] if (sh, sw) != (1, 1) else x
            n, c, h, w = x.shape
            out = torch.matmul(self.weight.flatten(1), x.reshape(n, c, h * w))
            if self.bias is not None:
                out = out + self.bias[:, None]
            return out.view(n, -1, h, w)
        return super().forward(x)


class PatchGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` computed by ``F.layer_norm`` over each group (``fast``, on by default):
    the same statistics, several times faster on CPU for wide, small maps."""

    fast = True

    def forward(self, x: Tensor) -> Tensor:
        if not (self.fast and self.affine and x.dim() == 4):
            return super().forward(x)
        n, c, h, w = x.shape
        if self.num_groups == 1 and h * w == 1:  # not a view: in-place ReLU stays cheap
            affine = self.weight.view(c, 1, 1), self.bias.view(c, 1, 1)
            return F.layer_norm(x, (c, 1, 1), *affine, self.eps)
        group = x.reshape(n, self.num_groups, -1)
        out = F.layer_norm(group, group.shape[-1:], eps=self.eps).view(n, c, h, w)
        return torch.addcmul(self.bias[:, None, None], out, self.weight[:, None, None])


def fast_paths(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Turn the exact matrix-product paths of ``PatchConv2d``/``PatchGroupNorm`` on or off."""
    for m in model.modules():
        if isinstance(m, PatchConv2d | PatchGroupNorm):
            m.fast = enabled
    return model


def norm_layer(kind: str) -> Callable[[int], nn.Module]:
    """Factory ``channels -> norm module`` for ``kind`` in ``layer|group|batch``.

    ``layer``: GroupNorm(1, C) (per-sample LayerNorm over C, H, W); ``group``: GroupNorm with
    up to 32 groups (the largest divisor of C not above 32); ``batch``: BatchNorm2d (leaks
    statistics across samples; for ablations).
    """
    if kind == "layer":
        return lambda c: PatchGroupNorm(1, c)
    if kind == "group":
        return lambda c: PatchGroupNorm(max(g for g in range(1, 33) if c % g == 0), c)
    if kind == "batch":
        return nn.BatchNorm2d
    raise ValueError(f"encoder.norm must be one of {PATCH_NORMS}, got {kind!r}")


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return PatchConv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return PatchConv2d(cin, cout, 1, stride=stride, bias=False)


class _PreActBlock(nn.Module):
    """Pre-activation residual block: ``x + conv_n(act(norm_n(... conv_1(act(norm_1(x))))))``.

    ``stages`` are ``(channels in, conv)`` pairs, registered as ``norm<i>`` / ``conv<i>``. When
    the shape changes the shortcut is a strided 1x1 conv of the first activated input."""

    expansion = 1

    def __init__(
        self,
        cin: int,
        cout: int,
        stride: int,
        norm: Callable[[int], nn.Module],
        stages: list[tuple[int, nn.Conv2d]],
    ):
        super().__init__()
        for i, (channels, conv) in enumerate(stages, 1):
            setattr(self, f"norm{i}", norm(channels))
            setattr(self, f"conv{i}", conv)
        self.depth = len(stages)
        self.act = nn.ReLU(inplace=True)
        self.shortcut = _conv1x1(cin, cout, stride) if stride != 1 or cin != cout else None

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.norm1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        for i in range(2, self.depth + 1):
            out = getattr(self, f"conv{i}")(self.act(getattr(self, f"norm{i}")(out)))
        return out + skip


class PreActBasicBlock(_PreActBlock):
    """ResNet-v2 basic block: x + conv(act(norm(conv(act(norm(x))))))."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int, norm: Callable[[int], nn.Module]):
        cout = width * self.expansion
        stages = [(cin, _conv3x3(cin, width, stride)), (width, _conv3x3(width, cout))]
        super().__init__(cin, cout, stride, norm, stages)


class PreActBottleneck(_PreActBlock):
    """ResNet-v2 bottleneck: 1x1 -> 3x3 (stride) -> 1x1 (x ``expansion``, default 4), each after
    norm + ReLU."""

    expansion = 4

    def __init__(
        self,
        cin: int,
        width: int,
        stride: int,
        norm: Callable[[int], nn.Module],
        expansion: int | None = None,
    ):
        expansion = int(expansion or self.expansion)
        cout = width * expansion
        stages = [
            (cin, _conv1x1(cin, width)),
            (width, _conv3x3(width, width, stride)),
            (width, _conv1x1(width, cout)),
        ]
        super().__init__(cin, cout, stride, norm, stages)
        self.expansion = expansion


def _apply_per_patch(net: nn.Module, x: Tensor) -> Tensor:
    """Run ``net`` ((N, C, P, P) -> (N, D)) on patches (..., C, P, P) -> (..., D)."""
    if x.dim() < 4:
        raise ValueError(f"expected patches (..., C, P, P), e.g. (B, G, G, C, P, P); got {x.shape}")
    lead = x.shape[:-3]
    out = net(x.reshape(-1, *x.shape[-3:]))
    return out.reshape(*lead, out.shape[-1])


def _expansions(
    expansion: int | Sequence[int] | None, stages: int, bottleneck: bool
) -> tuple[int, ...] | None:
    """``encoder.expansion`` as one int per stage (None: each block's default)."""
    if expansion is None:
        return None
    if not bottleneck:
        raise ValueError(f"encoder.expansion={expansion!r} needs bottleneck blocks")
    out = (int(expansion),) * stages if isinstance(expansion, int) else tuple(map(int, expansion))
    if len(out) != stages or min(out) < 1:
        raise ValueError(f"encoder.expansion={expansion!r}: one positive int or {stages} of them")
    return out


def _projection(features: int, out_dim: int | None) -> tuple[nn.Module, int]:
    if out_dim is None or out_dim == features:
        return nn.Identity(), features
    return nn.Linear(features, out_dim), out_dim


class PatchResNet(nn.Module):
    """Pre-activation ResNet over patches: (B, G, G, C, P, P) -> z (B, G, G, out_dim).

    ``preset`` (``small|resnet50|resnet101``, see ``PRESETS``) sets block type, blocks and
    widths per stage, and stem; ``blocks``/``widths``/``bottleneck``/``stem`` override it.
    ``expansion`` (bottlenecks only; an int or one per stage, default 4) sets each stage's output
    width to ``expansion * width`` (lightning-bolts' CPC v2 encoder: 4, 4, 8, 4).
    ``stem="small"`` is a 3x3 stride-1 conv (tiny patches), ``"standard"`` a 7x7 stride-2 conv
    + 3x3 max-pool. Stages after the first halve the resolution. The last stage is followed by
    norm + ReLU and a spatial mean; a linear map to ``out_dim`` is added when ``out_dim`` is set
    and differs from the feature width (``feature_dim``). Any leading dims are accepted:
    (..., C, P, P) -> (..., D).
    """

    modality = "image"

    def __init__(
        self,
        preset: str = "small",
        in_channels: int = 3,
        norm: str = "layer",
        out_dim: int | None = None,
        blocks: Sequence[int] | None = None,
        widths: Sequence[int] | None = None,
        bottleneck: bool | None = None,
        stem: str | None = None,
        expansion: int | Sequence[int] | None = None,
    ):
        super().__init__()
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
        p_block, p_blocks, p_widths, p_stem = PRESETS[preset]
        blocks = tuple(int(b) for b in (blocks if blocks is not None else p_blocks))
        widths = tuple(int(w) for w in (widths if widths is not None else p_widths))
        if len(blocks) != len(widths) or not blocks:
            raise ValueError(f"blocks {blocks} and widths {widths} must be non-empty, same length")
        use_bottleneck = (p_block == "bottleneck") if bottleneck is None else bool(bottleneck)
        stem = stem or p_stem
        make_norm = norm_layer(norm)
        block_cls = PreActBottleneck if use_bottleneck else PreActBasicBlock
        expansions = _expansions(expansion, len(widths), use_bottleneck)

        if stem == "small":
            layers: list[nn.Module] = [_conv3x3(in_channels, widths[0])]
        elif stem == "standard":
            layers = [
                nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False),
                nn.MaxPool2d(3, stride=2, padding=1),
            ]
        else:
            raise ValueError(f"stem must be 'small' or 'standard', got {stem!r}")
        cin = widths[0]
        for stage, (n, width) in enumerate(zip(blocks, widths, strict=True)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                extra = (expansions[stage],) if expansions else ()
                layers.append(block_cls(cin, width, stride, make_norm, *extra))
                cin = layers[-1].expansion * width
        layers += [make_norm(cin), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.feature_dim = cin
        self.proj, self.out_dim = _projection(cin, out_dim)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _per_patch(self, x: Tensor) -> Tensor:
        return self.proj(self.body(x).mean(dim=(-2, -1)))

    def forward(self, x: Tensor) -> Tensor:
        """(B, G, G, C, P, P) -> (B, G, G, out_dim)."""
        return _apply_per_patch(self._per_patch, x)


class TorchvisionResNet(nn.Module):
    """``torchvision.models.<arch>`` (resnet18/34/50) over patches, random init, no download.

    (B, G, G, C, P, P) -> (B, G, G, out_dim). ``norm`` replaces BatchNorm through torchvision's
    ``norm_layer``; ``small_input`` swaps the stem for a 3x3 stride-1 conv without max-pool;
    the classifier is removed and the final feature map mean-pooled (512-d for resnet18/34,
    2048-d for resnet50), then projected to ``out_dim`` if that differs.
    """

    ARCHS = ("resnet18", "resnet34", "resnet50")
    modality = "image"

    def __init__(
        self,
        arch: str = "resnet18",
        in_channels: int = 3,
        norm: str = "layer",
        small_input: bool = True,
        out_dim: int | None = None,
    ):
        super().__init__()
        import torchvision.models as tvm

        if arch not in self.ARCHS:
            raise ValueError(f"arch must be one of {self.ARCHS}, got {arch!r}")
        net = getattr(tvm, arch)(weights=None, norm_layer=norm_layer(norm))
        if small_input:
            net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.feature_dim = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net
        self.proj, self.out_dim = _projection(self.feature_dim, out_dim)

    def _per_patch(self, x: Tensor) -> Tensor:
        return self.proj(self.net(x))

    def forward(self, x: Tensor) -> Tensor:
        """(B, G, G, C, P, P) -> (B, G, G, out_dim)."""
        return _apply_per_patch(self._per_patch, x)
