"""Data: datasets and LightningDataModules. Knows no model.

Batch contract (what every DataModule's loaders yield, a dict):

Audio (``modality = "audio"``: ``data=synthetic_speech|librispeech|audio_folder|fsdd|...``):
    x        float32 (B, 1, L)   waveform windows at ``sample_rate``; L = ``window``
    mask     bool    (B, L)      True on real samples, False on padding
    speaker  int64   (B,)        speaker index into ``datamodule.speakers`` (IGNORE_INDEX if none)
    phones   int64   (B, L//160) label frame t (10 ms hop) of the window, IGNORE_INDEX if unknown
    label    int64   (B,)        utterance class index into ``datamodule.classes`` (or IGNORE_INDEX)
    index    int64   (B,)        utterance index in the split

Images (``modality = "image"``: ``data=imagenet_patches|cifar10_patches``):
    x        float32 (B, G, G, C, P, P)  grid of overlapping patches, x[:, i, j] = row i, column j
    label    int64   (B,)                 class index into ``datamodule.classes``
    index    int64   (B,)                 sample index in its split

Splits are ``train`` and ``test`` (the held-out split); Lightning's validation loop runs on
``test``. :class:`DataModule` is the contract the training and evaluation code relies on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

#: Label value for "unknown" (PyTorch's cross-entropy ``ignore_index``).
IGNORE_INDEX = -100
MODALITIES = ("audio", "image")
#: Label kinds a DataModule may have (``labels``): ``phones`` (a label per 10 ms frame),
#: ``speakers`` and ``classes`` (at least two of them), ``phone_sequences`` (each utterance's phone
#: sequence; frame phones give them too). Which evaluation tasks need which kinds is
#: ``cpc_lightning.eval.registry``'s business, not the data's.
LABELS = ("phones", "speakers", "classes", "phone_sequences")
SPLITS = ("train", "test")


@runtime_checkable
class DataModule(Protocol):
    """What ``train``, ``evaluate``, ``extract`` and the probes read from a DataModule.

    Every DataModule (a ``pytorch_lightning.LightningDataModule``) has, after ``setup()``:

    - ``modality``: ``"audio"`` or ``"image"`` (declared, never guessed from tensors);
    - ``root``: the dataset folder it reads;
    - ``batch_size``; ``handles_distributed`` (True: its batch samplers shard across DDP ranks
      themselves, so the Trainer must not replace them);
    - ``speakers``, ``classes``: label names (index = label id); ``num_phones``: frame classes
      (``phone_names`` their names, or empty for numbered labels);
    - ``provides_speakers``: every sequence of a batch has a speaker id;
    - ``labels``: the label kinds (of :data:`LABELS`, or a new task's own) it has;
    - ``stats``: counts of what was read and skipped (for reports).

    Audio modules also have ``sample_rate``, ``window`` (samples per training window),
    ``items(split)`` (utterance records) and ``load(record)`` (the whole waveform ``(n,)``);
    image modules have ``grid_size`` (G) and ``feature_loader(split, batch_size)``
    (unaugmented batches in a fixed order). Audio file modules also say how batches are drawn,
    ``sampler_name`` and ``windows_per_speaker`` (what ``NegativeSampler.check`` reads to see
    whether every batch holds two sequences of each speaker; absent: it does not).
    """

    modality: str
    batch_size: int
    handles_distributed: bool
    speakers: list[str]
    classes: list[str]
    num_phones: int
    phone_names: list[str]
    provides_speakers: bool
    stats: dict[str, Any]

    @property
    def labels(self) -> list[str]: ...

    def prepare_data(self) -> None: ...

    def setup(self, stage: str | None = None) -> None: ...


def labels_with(
    num_phones: int, speakers: Sequence[str], classes: Sequence[str], sequences: bool = False
) -> list[str]:
    """Label kinds: frame phones (which also give phone sequences), at least two speakers or
    classes, phone sequences."""
    out = []
    if num_phones > 0:
        out.append("phones")
    if len(speakers) > 1:
        out.append("speakers")
    if len(classes) > 1:
        out.append("classes")
    if num_phones > 0 or sequences:
        out.append("phone_sequences")
    return out


def label_index(names: Iterable[str | None]) -> dict[str, int]:
    """Sorted distinct names -> index (the ids the batches carry)."""
    return {n: i for i, n in enumerate(sorted({n for n in names if n is not None}))}
