"""Audio loader settings: the one typed home of the keys that say how windows are cut and batched.

Both audio DataModules (files: :class:`~cpc_lightning.data.audio.datamodules.AudioDataModule`,
prepared shards: :class:`~cpc_lightning.data.audio.streaming.StreamingAudioDataModule`) build a
:class:`LoaderSettings` from their flat ``data.*`` keyword arguments, and
``build.build_datamodule`` hands every field (:func:`loader_keys`) to the streaming one. Each
field says how streaming treats it (``streaming=``): :data:`STREAMED` (honoured),
:data:`FILES_ONLY` (a value other than the default is refused at start-up with
``data.streaming=true``) or :data:`SPEAKER_SAMPLER` (read only by the speaker samplers, which
streaming refuses through ``sampler``). So a new loader key reaches both DataModules, or is
refused by name under streaming; it is never dropped without a word.

The corpus keys (layout, labels, split, bad files, file caches) are not loader settings: the
file DataModule applies them, and ``prepare`` bakes their effect into the shards.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from cpc_lightning.errors import UserError

__all__ = [
    "FILES_ONLY",
    "SPEAKER_SAMPLER",
    "STREAMED",
    "LoaderSettings",
    "check_streaming",
    "loader_key",
    "loader_keys",
    "loader_settings",
    "plain",
]

#: The streaming DataModule honours the key as the file DataModule does.
STREAMED = "streamed"
#: Only the file DataModule implements it: a non-default value is refused under streaming.
FILES_ONLY = "files_only"
#: Read only by the speaker samplers (``sampler=same_speaker|speaker_groups``), which streaming
#: refuses through ``sampler``; the uniform sampler ignores it in both DataModules.
SPEAKER_SAMPLER = "speaker_sampler"
STREAMING_TAGS = (STREAMED, FILES_ONLY, SPEAKER_SAMPLER)


def plain(value: Any) -> Any:
    """OmegaConf containers -> builtin lists/dicts (Hydra passes them through ``instantiate``)."""
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


def loader_key(default: Any, *, streaming: str, refusal: str = "") -> Any:
    """A :class:`LoaderSettings` field: its default, how streaming treats it and, for
    :data:`FILES_ONLY`, the reason and fix of the start-up refusal."""
    if streaming not in STREAMING_TAGS:
        raise ValueError(f"streaming={streaming!r} is not one of {', '.join(STREAMING_TAGS)}")
    return field(default=default, metadata={"streaming": streaming, "refusal": refusal})


@dataclass
class LoaderSettings:
    """How an audio DataModule cuts and batches windows (the keys of ``conf/data/base/audio.yaml``
    that both DataModules share; each key's meaning is commented there)."""

    sample_rate: int = loader_key(16000, streaming=STREAMED)
    window: int = loader_key(20480, streaming=STREAMED)
    windows_per_utterance: int = loader_key(
        1,
        streaming=FILES_ONLY,
        refusal="shards give one window per utterance per epoch; set it to 1 (or train more "
        "epochs)",
    )
    short: str = loader_key("pad", streaming=STREAMED)
    batch_size: int = loader_key(8, streaming=STREAMED)
    num_workers: int = loader_key(0, streaming=STREAMED)
    sampler: str = loader_key(
        "uniform",
        streaming=FILES_ONLY,
        refusal="streamed batches are uniform shuffles of chunks; use data.sampler=uniform (and a "
        "negatives mode that needs no speaker-grouped batches)",
    )
    speakers_per_batch: int | None = loader_key(None, streaming=SPEAKER_SAMPLER)
    windows_per_speaker: int | None = loader_key(None, streaming=SPEAKER_SAMPLER)
    drop_last: bool = loader_key(True, streaming=STREAMED)
    seed: int = loader_key(0, streaming=STREAMED)
    cache_dir: str | os.PathLike[str] | None = loader_key(None, streaming=STREAMED)
    augment: list[str] | None = loader_key(None, streaming=STREAMED)
    augment_params: Mapping[str, Mapping[str, Any]] | None = loader_key(None, streaming=STREAMED)

    def __post_init__(self) -> None:
        for name in ("sample_rate", "window", "windows_per_utterance", "num_workers", "seed"):
            setattr(self, name, int(getattr(self, name)))
        self.drop_last = bool(self.drop_last)
        self.augment, self.augment_params = plain(self.augment), plain(self.augment_params)
        if self.short not in ("pad", "skip"):
            raise ValueError(f"data.short must be 'pad' or 'skip', got {self.short!r}")

    @property
    def cache_path(self) -> Path:
        """``cache_dir`` as a path (default ``./.cache``)."""
        return Path(self.cache_dir) if self.cache_dir is not None else Path.cwd() / ".cache"


def loader_keys() -> tuple[str, ...]:
    """The ``data.*`` keys that are loader settings (every field of :class:`LoaderSettings`)."""
    return tuple(f.name for f in fields(LoaderSettings))


def loader_settings(kwargs: Mapping[str, Any]) -> LoaderSettings:
    """:class:`LoaderSettings` from flat ``data.*`` keyword arguments (unknown keys: TypeError,
    as a constructor would raise)."""
    known = set(loader_keys())
    for key in kwargs:
        if key not in known:
            raise TypeError(f"unexpected keyword argument {key!r}: not a data key of this option")
    return LoaderSettings(**kwargs)


def check_streaming(settings: LoaderSettings) -> None:
    """Refuse, naming the key, a loader setting the streaming DataModule does not implement."""
    for f in fields(settings):
        tag = f.metadata.get("streaming", FILES_ONLY)  # untagged: refused unless at its default
        default = f.default
        if default is MISSING and f.default_factory is not MISSING:
            default = f.default_factory()
        value = getattr(settings, f.name)
        if tag != FILES_ONLY or value == default:
            continue
        why = f.metadata.get("refusal") or (
            "the streaming DataModule does not implement it; set it back to "
            f"{default} or train from the files (data.streaming=false)"
        )
        raise UserError(f"data.{f.name}={value} with data.streaming=true: {why}")
