"""Features from Python: ``cpc_lightning.load(path).features(waveforms)``.

For downstream tools (SUPERB/s3prl-style benchmarks, k-means unit pipelines, notebooks)::

    import cpc_lightning
    model = cpc_lightning.load("outputs/train/runs/<date>_<time>")  # or a .ckpt, or CPC_audio's
    out = model.features([wav_a, wav_b], sample_rate=16000)          # 1-D waveforms, any lengths
    out["c"], out["z"], out["hidden_states"], out["mask"], out["frame_rate"]

Frame ``t`` covers samples ``[hop t, hop t + hop)`` (hop 160 = 10 ms at 16 kHz). A padded batch
gives every waveform the frames it gets alone (the audio encoder masks each sequence's padding
after every layer; the context is causal), and frames past a waveform's end are zero.

An image run gives an :class:`ImageFeatureExtractor`::

    model = cpc_lightning.load("outputs/train/runs/<image run>")
    out = model.features([pil_a, pil_b], pool="grid2")  # or uint8 (N, H, W, 3), float (N, 3, H, W)
    out["z"], out["c"], out["hidden_states"], out["z_pooled"], out["c_pooled"]

Each image gets the run's data option's held-out preprocessing (resize, centre crop, normalisation,
patch grid: :class:`cpc_lightning.data.images.preprocess.ImagePreprocess`, the code the
DataModule's validation and ``extract`` run), so features equal those ``extract`` writes.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch import nn

from cpc_lightning.build import build_datamodule
from cpc_lightning.data.audio.reader import resample
from cpc_lightning.data.images.preprocess import ImagePreprocess, as_unit_images
from cpc_lightning.errors import UserError
from cpc_lightning.interop.model_dir import FILES, is_model_dir, read_model_dir
from cpc_lightning.interop.run_dir import convert_cpc_audio
from cpc_lightning.model.module import CPCModule
from cpc_lightning.model.pooling import GRID_POOLS, pool_grid
from cpc_lightning.runs import open_run
from cpc_lightning.training.checkpoint_files import check_torch_file

Waveforms = torch.Tensor | np.ndarray | Sequence[torch.Tensor | np.ndarray]
Images = Image.Image | np.ndarray | torch.Tensor | Sequence[Image.Image | np.ndarray | torch.Tensor]


class _Frozen(nn.Module):
    """A CPC model kept in eval mode with no gradients; ``source``: where it was loaded from."""

    def __init__(self, model: CPCModule, source: dict[str, Any], modality: str) -> None:
        super().__init__()
        if model.modality != modality:
            raise UserError(
                f"{type(self).__name__} takes {modality} models; this is an {model.modality} "
                "model (cpc_lightning.load picks the right extractor)"
            )
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.source = source
        self.eval()

    def train(self, mode: bool = True) -> _Frozen:
        """Stays in eval mode: a feature extractor is frozen (no dropout, fixed statistics)."""
        return super().train(False)

    def features(self, inputs: Any, **kwargs: Any) -> dict[str, Any]:
        """The features of ``inputs`` (each modality's extractor says which inputs)."""
        raise NotImplementedError

    def forward(self, inputs: Any, **kwargs: Any) -> dict[str, Any]:
        """Same as :meth:`features`."""
        return self.features(inputs, **kwargs)


def _looks_like_images(x: Any) -> bool:
    """PIL images, uint8 arrays/tensors or 4-D batches: never waveforms."""
    if isinstance(x, Image.Image):
        return True
    if isinstance(x, (np.ndarray, torch.Tensor)):
        return x.ndim >= 4 or (x.ndim >= 2 and x.dtype in (np.uint8, torch.uint8))
    return False


#: Integer PCM and its full scale: ``x / scale`` is what soundfile reads as float.
PCM_SCALE = {"int16": 2.0**15, "int32": 2.0**31}


def _as_float(w: Any, what: str) -> torch.Tensor:
    """A float32 tensor of ``w``: floats as they are, int16 / int32 PCM scaled like soundfile
    (/ 2^15, / 2^31); other dtypes (uint8, int8, int64, bool: no one scale) are refused."""
    x = torch.as_tensor(w)
    name = str(x.dtype).removeprefix("torch.")
    if x.is_floating_point():
        return x.to(torch.float32)
    if name in PCM_SCALE:
        return x.to(torch.float32) / PCM_SCALE[name]
    raise ValueError(
        f"{what} {name}: give float waveforms in [-1, 1], or int16 / int32 PCM (scaled like "
        "soundfile: / 2^15, / 2^31); convert other integer samples to float first"
    )


def _sample_rate(rate: Any) -> int:
    """``sample_rate`` as an int: a positive whole number of Hz (16000.0 is 16000)."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)):
        raise ValueError(f"sample_rate={rate!r} must be a positive whole number of Hz")
    if rate <= 0:
        raise ValueError(f"sample_rate={rate!r} must be a positive whole number of Hz")
    if float(rate) != int(rate):
        raise ValueError(f"sample_rate={rate!r} must be a whole number of Hz (e.g. 16000)")
    return int(rate)


def _unpad(x: torch.Tensor, lengths: Any) -> list[torch.Tensor]:
    """The waveforms of a ``(L,)``, ``(B, L)`` or ``(B, 1, L)`` batch, each cut to ``lengths``
    (0 <= each <= L; None: all of L)."""
    if x.dim() == 1:
        x = x[None]
    if x.dim() == 3 and x.shape[1] == 1:
        x = x[:, 0]
    if x.dim() != 2:
        raise ValueError(f"waveforms of shape {tuple(x.shape)}: give (L,), (B, L) or a list")
    size = x.shape[1]
    n = [size] * len(x) if lengths is None else torch.as_tensor(lengths).flatten().tolist()
    if len(n) != len(x) or any(v != int(v) or not 0 <= v <= size for v in n):
        raise ValueError(
            f"lengths={n} do not fit waveforms of shape {tuple(x.shape)}: give one per waveform, "
            f"each a whole number of samples between 0 and {size}"
        )
    return [x[i, : int(n[i])] for i in range(len(x))]


class FeatureExtractor(_Frozen):
    """A frozen audio CPC model (eval mode, no gradients) turning waveforms into features.

    ``model`` is the :class:`CPCModule`, ``sample_rate`` the rate it was trained at,
    ``frame_rate`` its frames per second, ``source`` where it was loaded from.
    """

    def __init__(self, model: CPCModule, sample_rate: int, source: dict[str, Any]) -> None:
        super().__init__(model, source, "audio")
        self.sample_rate = int(sample_rate)
        self.hop = int(getattr(model.encoder, "downsampling", 160))
        self.frame_rate = self.sample_rate / self.hop
        signature = inspect.signature(model.encoder.forward).parameters
        self._pads_exactly = "lengths" in signature

    def _waveforms(self, waveforms: Waveforms, lengths: Any, rate: Any) -> list[torch.Tensor]:
        rate = _sample_rate(rate)
        items = waveforms if isinstance(waveforms, (list, tuple)) else [waveforms]
        if any(_looks_like_images(w) for w in items):
            raise ValueError(
                "features(): this is an audio model: give mono float waveforms (1-D, a list of "
                "them or a padded (B, L) batch), not images"
            )
        if isinstance(waveforms, (torch.Tensor, np.ndarray)):
            items = _unpad(_as_float(waveforms, "waveforms are"), lengths)
        else:
            if lengths is not None:
                raise ValueError("lengths= goes with a padded (B, L) batch, not a list")
            items = [_as_float(w, f"waveform {i} is") for i, w in enumerate(waveforms)]
            for i, w in enumerate(items):
                if w.dim() != 1:
                    raise ValueError(
                        f"waveform {i} has shape {tuple(w.shape)}: give mono 1-D waveforms "
                        "(mix channels first, e.g. wav.mean(1) for soundfile's (L, C))"
                    )
        if not items:
            raise ValueError("no waveforms given")
        self._check_samples(items, rate)
        return [resample(w, rate, self.sample_rate) for w in items]

    def _check_samples(self, items: list[torch.Tensor], rate: int) -> None:
        """Every waveform finite and at least the encoder's receptive field long (at ``rate``)."""
        field = max(1, int(getattr(self.model.encoder, "receptive_field", 1)))
        need = math.ceil(field * rate / self.sample_rate)
        at = "" if rate == self.sample_rate else f" at {rate} Hz ({field} at {self.sample_rate} Hz)"
        for i, w in enumerate(items):
            bad = int((~torch.isfinite(w)).sum())
            if bad:
                raise ValueError(
                    f"waveform {i} holds {bad} non-finite sample{'s' * (bad > 1)} (NaN or inf) "
                    f"of {len(w)}: its features would be NaN; clean it first (torch.nan_to_num)"
                )
            if len(w) < need:
                raise ValueError(
                    f"waveform {i} has {len(w)} samples: the encoder's receptive field needs at "
                    f"least {need} samples{at} for one frame"
                )

    def _encode(self, wavs: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        device = next(self.model.parameters()).device
        n = torch.tensor([len(w) for w in wavs], device=device)
        x = nn.utils.rnn.pad_sequence(wavs, batch_first=True).to(device)[:, None]
        if bool((n == n[0]).all()):
            return self.model.all_features(x)
        if self._pads_exactly:
            return self.model.all_features(x, lengths=n)
        parts = [self.model.all_features(x[i : i + 1, :, : int(n[i])]) for i in range(len(wavs))]
        z = nn.utils.rnn.pad_sequence([p[0][0] for p in parts], batch_first=True)
        states = [
            nn.utils.rnn.pad_sequence([p[1][j][0] for p in parts], batch_first=True)
            for j in range(len(parts[0][1]))
        ]
        return z, states

    def _frames(self, wavs: list[torch.Tensor], total: int) -> torch.Tensor:
        count = getattr(self.model.encoder, "num_frames", lambda n: n // self.hop)
        return torch.tensor([min(int(count(len(w))), total) for w in wavs])

    @torch.no_grad()
    def features(
        self,
        waveforms: Waveforms,
        lengths: Sequence[int] | torch.Tensor | None = None,
        sample_rate: int = 16000,
    ) -> dict[str, Any]:
        """Features of mono waveforms: a list of 1-D waveforms (any lengths), one ``(L,)``
        waveform, or a right-padded ``(B, L)`` batch with ``lengths`` ``(B,)`` (samples).

        Input at another ``sample_rate`` is resampled to the model's. Returns ``z`` ``(B, T, D)``
        (encoder), ``c`` ``(B, T, C)`` (context, ``hidden_states[-1]``), ``hidden_states``
        (every context layer, bottom to top, each ``(B, T, C_i)``), ``mask`` ``(B, T)`` (True on
        a waveform's own frames), ``lengths`` ``(B,)`` frames, and ``frame_rate`` (Hz).
        """
        wavs = self._waveforms(waveforms, lengths, sample_rate)
        z, states = self._encode(wavs)
        frames = self._frames(wavs, z.shape[1]).to(z.device)
        mask = torch.arange(z.shape[1], device=z.device)[None] < frames[:, None]
        keep = mask[..., None].to(z.dtype)
        states = [s * keep for s in states]
        return {
            "z": z * keep,
            "c": states[-1],
            "hidden_states": states,
            "mask": mask,
            "lengths": frames,
            "frame_rate": self.frame_rate,
        }


class ImageFeatureExtractor(_Frozen):
    """A frozen image CPC model turning images into feature grids.

    ``preprocess`` is the run's data option's held-out preprocessing (the one its DataModule
    validates with); ``grid_size`` is ``G``, the patches per side.
    """

    def __init__(self, model: CPCModule, preprocess: ImagePreprocess, source: dict[str, Any]):
        super().__init__(model, source, "image")
        self.preprocess = preprocess
        self.grid_size = preprocess.grid_size

    def grids(self, images: Images) -> torch.Tensor:
        """Images -> the patch grids ``(N, G, G, 3, P, P)`` the model reads (see :meth:`features`
        for what ``images`` may be)."""
        items = as_unit_images(images)
        return torch.stack([self.preprocess.grid(x, f"image {i}") for i, x in enumerate(items)])

    @torch.no_grad()
    def features(self, images: Images, pool: str = "mean") -> dict[str, Any]:
        """Features of a batch of images of any sizes, each preprocessed as the run's held-out
        images are (resize if the data option resizes, centre crop, normalisation, patch grid).

        ``images``: PIL images (converted to RGB, as image files are read); uint8 numpy arrays
        ``(H, W, 3)`` (RGB; ``(H, W)`` or ``(H, W, 1)`` grayscale, copied to the 3 channels),
        as a list or one ``(N, H, W, 3)`` array; or a float tensor ``(N, 3, H, W)`` (or a list of
        ``(3, H, W)``) with values in [0, 1] (= uint8 / 255). One PIL image is a batch of one.
        Anything else (other dtypes or layouts, an empty batch) is a ``ValueError``.

        Returns what :meth:`grid_features` returns.
        """
        return self.grid_features(self.grids(images), pool)

    @torch.no_grad()
    def grid_features(self, grids: torch.Tensor, pool: str = "mean") -> dict[str, Any]:
        """Features of preprocessed patch grids ``(N, G, G, 3, P, P)`` (:meth:`grids`, or a
        DataModule batch's ``x``): ``z`` ``(N, G, G, D)`` (encoder), ``c`` ``(N, G, G, C)``
        (context, ``hidden_states[-1]``), ``hidden_states`` (every context layer, bottom to top),
        ``z_pooled`` and ``c_pooled`` (``pool_grid(..., pool)``: ``mean`` ``(N, D)``, ``grid2``
        ``(N, 4 D)``, ``grid4`` ``(N, 16 D)``, ``none`` ``(N, G G D)``) and ``pool``."""
        if pool not in GRID_POOLS:
            raise ValueError(f"pool={pool!r} must be one of {', '.join(GRID_POOLS)}")
        device = next(self.model.parameters()).device
        z, states = self.model.all_features(grids.to(device, torch.float32))
        return {
            "z": z,
            "c": states[-1],
            "hidden_states": states,
            "z_pooled": pool_grid(z, pool),
            "c_pooled": pool_grid(states[-1], pool),
            "pool": pool,
        }


def _is_cpc_audio(path: Path) -> bool:
    if path.is_dir():
        return (path / "checkpoint_args.json").is_file()
    return path.suffix == ".pt"


def image_preprocess(data: DictConfig) -> ImagePreprocess:
    """The held-out preprocessing of a run's saved image data config, from its own DataModule
    (built, not set up: its data need not be here)."""
    data = OmegaConf.create(OmegaConf.to_container(data, resolve=True))
    if data.get("root") in (None, "", "???"):
        data.root = "."  # never read: the preprocessing needs no dataset
    return build_datamodule(data).eval_preprocess()


#: What ``load`` reads (the hint of a refused file).
LOADABLE = (
    "give a run dir, a .ckpt file of one, a CPC_audio checkpoint (run dir, .pt) or an exported "
    "model folder (config.json + model.safetensors)"
)


def load(
    path: str | Path, device: str | torch.device = "cpu"
) -> FeatureExtractor | ImageFeatureExtractor:
    """A :class:`FeatureExtractor` (audio) or :class:`ImageFeatureExtractor` (image run) from a
    run dir (its last checkpoint), a ``.ckpt`` file in one, a CPC_audio checkpoint (a
    ``cpc/train.py`` run dir, ``checkpoint_<n>.pt`` or hub file), converted in memory, or a
    model folder written by ``export to=safetensors`` (or one of its files). Bad paths raise
    :class:`~cpc_lightning.errors.UserError`."""
    p = Path(path).expanduser().resolve()
    if not p.exists():
        raise UserError(f"cpc_lightning.load: {p} does not exist")
    if p.is_file() and p.name in FILES and is_model_dir(p.parent):
        p = p.parent
    if p.is_file():
        check_torch_file(p, "cpc_lightning.load: ", LOADABLE)
    if is_model_dir(p):
        cfg, model = read_model_dir(p)
        source = {"model_dir": str(p)}
    elif _is_cpc_audio(p):
        converted = convert_cpc_audio(p)
        model, cfg = converted.model, converted.config
        source = {"converted_from": str(converted.source.source)}
    else:
        run = open_run(checkpoint=p) if p.is_file() else open_run(run_dir=p)
        model, cfg = run.model, run.config
        source = {"run_dir": str(run.run_dir), "checkpoint": str(run.checkpoint)}
    if model.modality == "image":
        return ImageFeatureExtractor(model, image_preprocess(cfg.data), source).to(device)
    rate = int(cfg.get("data", {}).get("sample_rate", 16000) or 16000)
    return FeatureExtractor(model, rate, source).to(device)
