"""Audio encoders ``g_enc``: waveform ``(B, 1, L)`` -> frame features ``z`` ``(B, T, D)``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cpc_lightning.model.encoders.norms import AUDIO_NORMS, make_norm


class _ShiftAdd(torch.autograd.Function):
    """``(y (B, T+1, 2, O), bias (O,)) -> y[:, :-1, 0] + y[:, 1:, 1] + bias`` in one output buffer,
    with a backward that writes each gradient element once (autograd's slice backward zero-fills
    two full-size buffers). Large activations are memory-bound on CPU: every pass saved counts."""

    @staticmethod
    def forward(ctx, y: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.shape = y.shape
        out = torch.add(y[:, :-1, 0], y[:, 1:, 1])
        return out.add_(bias.to(out.dtype))

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        grad = g.new_empty(ctx.shape)
        grad[:, :-1, 0] = g
        grad[:, -1, 0] = 0
        grad[:, 1:, 1] = g
        grad[:, 0, 1] = 0
        # summed in g's dtype (CPU reductions accumulate bf16 in float32): ``dtype=float32``
        # would first copy all of g to float32
        return grad, g.sum((0, 1)).float()


class _PadTime(torch.autograd.Function):
    """``x (B, L, C) -> (B, size, C)``: ``out[:, i] = x[:, i - left]`` where that exists, else 0.

    ``F.pad`` + slicing zero-fills the whole output and its backward clones the gradient; here
    only the border rows are zeroed and the gradient is a view."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, left: int, size: int) -> torch.Tensor:  # type: ignore[override]
        b, length, c = x.shape
        n = max(0, min(length, size - left))  # rows of x that land in the output
        ctx.meta = (length, left, n)
        out = x.new_empty(b, size, c)
        out[:, :left] = 0
        out[:, left + n :] = 0
        out[:, left : left + n] = x[:, :n]
        return out

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        length, left, n = ctx.meta
        grad = g[:, left : left + n]
        if n < length:
            grad = torch.cat([grad, g.new_zeros(g.shape[0], length - n, g.shape[2])], 1)
        return grad, None, None


class StridedConv(nn.Module):
    """A Conv1d on channels-last sequences ``(B, L, C_in) -> (B, T, C_out)``.

    Parameters have ``nn.Conv1d``'s shapes. When ``kernel == 2 * stride`` (every layer of the
    paper's encoder) the input is cut into blocks of ``stride`` frames and the convolution is one
    GEMM ``(B * blocks, stride * C_in) x (stride * C_in, 2 * C_out)`` plus a shifted add: no
    im2col copy, and the surrounding LayerNorm/ReLU run on contiguous channels-last memory.
    A narrow input (``C_in * kernel <= max_im2col_width``, e.g. the waveform) is windowed
    directly (im2col) into one GEMM. Otherwise it falls back to ``F.conv1d``.
    """

    max_im2col_width = 64

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, padding: int):
        super().__init__()
        conv = nn.Conv1d(in_channels, out_channels, kernel, stride=stride, padding=padding)
        self.weight, self.bias = conv.weight, conv.bias
        self.kernel, self.stride, self.padding = kernel, stride, padding
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, c = x.shape
        k, s, p = self.kernel, self.stride, self.padding
        t = (length + 2 * p - k) // s + 1
        if c * k <= self.max_im2col_width:
            # a narrow input (the waveform): its windows are a small copy, and one GEMM writes
            # the output without the shifted add's double-width intermediate
            cols = _PadTime.apply(x, p, (t - 1) * s + k).unfold(1, k, s).reshape(b, t, c * k)
            w = self.weight.to(x.dtype).view(self.out_channels, c * k)
            return F.linear(cols, w, self.bias.to(x.dtype))
        if k != 2 * s:
            y = F.conv1d(x.transpose(1, 2), self.weight, self.bias, stride=s, padding=p)
            return y.transpose(1, 2)
        need = s * (t + 1)  # padded samples covered by t windows of 2 blocks
        blocks = _PadTime.apply(x, p, need).view(b, t + 1, s * c)
        # weight (O, C, 2, s) -> rows (j, c), columns (half, o); cast first: half the bytes moved
        w = self.weight.to(x.dtype).view(self.out_channels, c, 2, s)
        w = w.permute(3, 1, 2, 0).reshape(s * c, -1)
        y = torch.matmul(blocks, w).view(b, t + 1, 2, self.out_channels)
        return _ShiftAdd.apply(y, self.bias)


class Conv1dEncoder(nn.Module):
    """The CPC paper's strided Conv1d stack: one ``z`` every ``prod(strides)`` samples.

    Defaults are the paper's: kernels (10, 8, 4, 4, 4), strides (5, 4, 2, 2, 2), 512 channels,
    ReLU; padding (3, 2, 1, 1, 1) as in the reference code gives exactly ``L // 160`` frames when
    ``L`` is a multiple of 160. Frame ``t`` is aligned with samples ``[160 t, 160 (t + 1))``.
    ``standardize`` scales each input sequence to zero mean and unit variance first.
    """

    modality = "audio"

    def __init__(
        self,
        hidden_dim: int = 512,
        out_dim: int = 512,
        kernels: Sequence[int] = (10, 8, 4, 4, 4),
        strides: Sequence[int] = (5, 4, 2, 2, 2),
        paddings: Sequence[int] = (3, 2, 1, 1, 1),
        norm: str = "layer",
        in_channels: int = 1,
        standardize: bool = True,
    ) -> None:
        super().__init__()
        kernels, strides, paddings = list(kernels), list(strides), list(paddings)
        if not (len(kernels) == len(strides) == len(paddings)) or not kernels:
            raise ValueError(
                f"encoder.kernels/strides/paddings must have the same non-zero length, got "
                f"{kernels}, {strides}, {paddings}"
            )
        if norm not in AUDIO_NORMS:
            raise ValueError(f"encoder.norm={norm!r} is not one of {AUDIO_NORMS}")
        layers: list[nn.Module] = []
        channels = in_channels
        for i, (k, s, p) in enumerate(zip(kernels, strides, paddings, strict=True)):
            out = out_dim if i == len(kernels) - 1 else hidden_dim
            layers += [
                StridedConv(channels, out, k, s, p),
                make_norm(norm, out),
                nn.ReLU(inplace=True),
            ]
            channels = out
        self.net = nn.Sequential(*layers)
        self.kernels, self.strides, self.paddings = kernels, strides, paddings
        self.out_dim = out_dim
        self.standardize = standardize
        self.downsampling = int(torch.tensor(strides).prod())

    @property
    def receptive_field(self) -> int:
        """Input samples seen by one output frame."""
        field, jump = 1, 1
        for k, s in zip(self.kernels, self.strides, strict=True):
            field += (k - 1) * jump
            jump *= s
        return field

    def num_frames(self, num_samples: int) -> int:
        """Number of frames ``T`` for an input of ``num_samples`` samples."""
        n = num_samples
        for k, s, p in zip(self.kernels, self.strides, self.paddings, strict=True):
            n = (n + 2 * p - k) // s + 1
        return max(n, 0)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``(B, 1, L)`` or ``(B, L)`` -> ``z`` ``(B, T, D)``.

        ``lengths`` ``(B,)``: valid samples of each right-padded sequence. Every sequence then
        gets the frames it gets alone (its padding is left out of ``standardize`` and zeroed
        after every layer, as the convolutions' own zero padding is); frames past its
        ``num_frames`` are zero.
        """
        x = x.transpose(1, 2) if x.dim() == 3 else x.unsqueeze(-1)  # channels-last (B, L, 1)
        if lengths is not None:
            return self._forward_padded(x, lengths.to(x.device).long())
        if self.standardize:
            # Raw speech is quiet (RMS ~0.05): without this the first conv's bias dominates, the
            # per-frame LayerNorm turns z into a constant and InfoNCE sits at log(N + 1).
            var, mean = torch.var_mean(x, dim=1, keepdim=True)
            x = (x - mean) * torch.rsqrt(var + 1e-7)
        lowp = autocast_lowp_dtype(x.device.type)
        if lowp is None:
            return self.net(x)
        # Mixed precision: the whole stack on bf16 activations (parameters cast per use, norms
        # accumulate in fp32 inside the kernel). Autocast would run each norm in fp32 and cast
        # every activation back and forth: most of a CPU bf16 step went to those copies.
        with torch.autocast(x.device.type, enabled=False):
            return self.net(x.to(lowp))

    def _forward_padded(self, x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        blocks = [self.net[i : i + 3] for i in range(0, len(self.net), 3)]  # conv, norm, ReLU
        if any(getattr(b[1], "spans_time", False) for b in blocks):  # e.g. instance norm
            out = [self.forward(x[i : i + 1, : int(n[i])].transpose(1, 2)) for i in range(len(x))]
            return nn.utils.rnn.pad_sequence([o[0] for o in out], batch_first=True)

        def keep(count: torch.Tensor, size: int) -> torch.Tensor:
            return (torch.arange(size, device=x.device) < count[:, None]).unsqueeze(-1)

        valid = keep(n, x.shape[1])
        if self.standardize:  # over the valid samples only, unbiased as torch.var_mean
            m = valid.to(x.dtype)
            mean = (x * m).sum(1, keepdim=True) / n.clamp(min=1)[:, None, None]
            dev = (x - mean) * m
            var = (dev * dev).sum(1, keepdim=True) / (n - 1).clamp(min=1)[:, None, None]
            x = (x - mean) * torch.rsqrt(var + 1e-7)
        x = x * valid
        for conv, norm, act in blocks:
            x = act(norm(conv(x)))
            n = ((n + 2 * conv.padding - conv.kernel) // conv.stride + 1).clamp(min=0)
            x = x * keep(n, x.shape[1])
        return x


def autocast_lowp_dtype(device_type: str) -> torch.dtype | None:
    """The autocast dtype when autocast is on for ``device_type`` with bfloat16, else None."""
    if device_type not in ("cpu", "cuda") or not torch.is_autocast_enabled(device_type):
        return None
    dtype = torch.get_autocast_dtype(device_type)
    return dtype if dtype == torch.bfloat16 else None


def frame_mask(mask: torch.Tensor, num_frames: int, downsampling: int) -> torch.Tensor:
    """Sample mask ``(B, L)`` -> frame mask ``(B, T)``: a frame is valid if all its samples are."""
    b, length = mask.shape
    need = num_frames * downsampling
    if length < need:
        mask = F.pad(mask, (0, need - length), value=False)
    return mask[:, :need].reshape(b, num_frames, downsampling).all(-1)
