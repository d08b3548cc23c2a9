"""Several audio corpora read as one, for pre-training (``data=speech_mix``).

Each part is an audio DataModule config (its own root, layout and held-out split); the mix
trains on the union of the parts' training utterances and validates on the union of their
held-out ones. Speakers keep their corpus as a prefix (``fsdd/jackson``), so speaker-aware
negatives and samplers never merge two corpora's speakers; phone and class labels are dropped
(the parts' label sets differ), so the mix is unlabelled audio: evaluate a model trained on it
with ``data=<one of the parts>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cpc_lightning.data.audio.datamodules import AudioDataModule
from cpc_lightning.data.audio.manifest import Manifest


class ConcatAudioDataModule(AudioDataModule):
    """The union of ``parts`` (name -> audio DataModule, instantiated by Hydra) as one corpus.

    The mix's own keys (``window``, ``batch_size``, ``sampler``, ...) decide the windows and
    batches; each part contributes its utterances, resampled to the mix's ``sample_rate``.
    """

    def __init__(self, parts: Mapping[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.parts = dict(parts)
        if not self.parts:
            raise ValueError("data.parts is empty: list the corpora to mix")
        for name, part in self.parts.items():
            if not isinstance(part, AudioDataModule):
                raise ValueError(
                    f"data.parts.{name} is a {type(part).__name__}, not an audio data option"
                )
        self.root = Path(next(iter(self.parts.values())).root or ".")

    def _part_manifest(self, name: str, part: AudioDataModule, write: bool) -> Manifest:
        manifest = part._build_manifest(write)
        for r in manifest.records:
            r.uid = f"{name}/{r.uid}"
            r.speaker = f"{name}/{r.speaker}" if r.speaker is not None else None
            r.label, r.phones, r.phone_seq, r.segments = None, None, None, None
            r.meta = {**r.meta, "corpus": name}
        return manifest

    def _build_manifest(self, write: bool) -> Manifest:
        parts = [self._part_manifest(n, p, write) for n, p in self.parts.items()]
        return Manifest(
            records=[r for m in parts for r in m.records],
            corrupt=[c for m in parts for c in m.corrupt],
            label_ids_without_audio=[u for m in parts for u in m.label_ids_without_audio],
            unmatched=sum(m.unmatched for m in parts),
            probed=sum(m.probed for m in parts),
            from_cache=all(m.from_cache for m in parts),
        )
