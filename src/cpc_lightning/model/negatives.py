"""Negative samplers: which candidates each anchor is contrasted with (CPC paper, Table 2).

A sampler returns indices only (drawn under ``no_grad``);
:func:`cpc_lightning.model.infonce.info_nce` scores then gathers. Candidates are the frames of
``C`` sequences flattened as ``seq * T + t``.

Every mode is one rule: a sequence belongs to a *group* (the whole batch, itself, or its
speaker) and negatives are drawn uniformly, with replacement, from the valid (non-padded)
frames of the anchor's group, optionally excluding the anchor's own sequence:

| mode               | group              | own sequence excluded |
|--------------------|--------------------|-----------------------|
| batch              | whole batch        | no (positive may be drawn) |
| batch_excl         | whole batch        | yes                   |
| same_sequence      | the sequence       | no (positive may be drawn) |
| same_speaker       | anchor's speaker   | no                    |
| same_speaker_excl  | anchor's speaker   | yes                   |
| global             | batch of all ranks | no                    |

``num_negatives: all`` (CPC v2, lightning-bolts) draws nothing: every valid frame of the anchor's
group is a negative (:meth:`NegativeSampler.candidate_mask`), scored from the one score matrix.
"""

from __future__ import annotations

from typing import Any

import torch

MODES: dict[str, tuple[str, bool]] = {
    "batch": ("batch", False),
    "batch_excl": ("batch", True),
    "same_sequence": ("sequence", False),
    "same_speaker": ("speaker", False),
    "same_speaker_excl": ("speaker", True),
    "global": ("batch", False),
}

#: ``num_negatives`` value for "every valid candidate of the anchor's group" (no draws).
ALL = "all"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_num_negatives(value: Any) -> None:
    """Raise ValueError (key, value, fix) unless ``negatives.num_negatives`` is an integer >= 1
    or ``all`` (checked on the config, before the sampler is built)."""
    if value != ALL and (not _is_int(value) or value < 1):
        raise ValueError(
            f"negatives.num_negatives={value!r} must be an integer >= 1 (paper: 128) or all"
        )


class NegativeSampler:
    """Draws ``num_negatives`` candidate indices per anchor for one of :data:`MODES`.

    ``share_across_steps=True`` (default) draws one set of negatives per anchor and uses it for
    every step k, as the reference implementation (facebookresearch/CPC_audio) does;
    ``False`` draws fresh negatives for each k.
    """

    def __init__(
        self, mode: str = "batch", num_negatives: int | str = 128, share_across_steps: bool = True
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"negatives.mode={mode!r} is not one of {sorted(MODES)}")
        # "all" is a count, not a mode: it combines with every mode's support
        self.use_all = num_negatives == ALL
        if not self.use_all and int(num_negatives) < 1:
            raise ValueError(f"negatives.num_negatives must be >= 1 or 'all', got {num_negatives}")
        self.mode = mode
        self.group_by, self.exclude_own = MODES[mode]
        self.num_negatives: int | str = ALL if self.use_all else int(num_negatives)
        self.share_across_steps = share_across_steps

    @property
    def needs_speakers(self) -> bool:
        return self.group_by == "speaker"

    @property
    def is_global(self) -> bool:
        return self.mode == "global"

    def check(self, datamodule: Any) -> None:
        """Raise ValueError (one line: key, value, fix) if ``datamodule``'s batches cannot give
        this mode its negatives: speaker ids where the group is the speaker; other sequences in
        every batch where the anchor's own sequence is excluded (for the speaker group, the
        ``speaker_groups`` sampler with ``windows_per_speaker >= 2``)."""
        name = type(datamodule).__name__
        if self.needs_speakers and not datamodule.provides_speakers:
            raise ValueError(
                f"negatives={self.mode} needs speaker ids per sequence, but {name} provides "
                "none: use data=librispeech or data=synthetic_speech, or give data.pattern a "
                "(?P<speaker>...) group"
            )
        if not self.exclude_own:
            return
        if self.group_by == "speaker":
            sampler = getattr(datamodule, "sampler_name", None)  # audio file loaders only
            q = getattr(datamodule, "windows_per_speaker", None)
            if sampler != "speaker_groups" or not _is_int(q) or q < 2:
                got = f"data.sampler={sampler}" + (
                    f" with data.windows_per_speaker={q}" if sampler == "speaker_groups" else ""
                )
                raise ValueError(
                    f"negatives={self.mode} draws each anchor's negatives from the other "
                    f"sequences of its speaker in the batch, but {got} does not put two sequences "
                    "of every speaker in each batch: use data.sampler=speaker_groups "
                    "data.windows_per_speaker=2 (or more), or negatives=same_speaker"
                )
        elif int(datamodule.batch_size) < 2:
            raise ValueError(
                f"negatives={self.mode} draws from the other sequences of the batch, but "
                f"data.batch_size={datamodule.batch_size}: use data.batch_size >= 2"
            )

    def groups(self, num_seqs: int, speaker: torch.Tensor | None, device: torch.device):
        """Group id per candidate sequence ``(C,)`` for this mode."""
        if self.group_by == "batch":
            return torch.zeros(num_seqs, dtype=torch.long, device=device)
        if self.group_by == "sequence":
            return torch.arange(num_seqs, device=device)
        if speaker is None or bool((speaker < 0).any()):
            raise ValueError(
                f"negatives={self.mode} needs a speaker id for every sequence, but the data "
                "provides none; use a dataset with speaker labels (data=librispeech, "
                "data=synthetic_speech, or data=audio_folder with a (?P<speaker>...) group)"
            )
        return speaker.to(device=device, dtype=torch.long)

    @torch.no_grad()
    def candidate_mask(
        self, valid: torch.Tensor, speaker: torch.Tensor | None, anchor_seqs: torch.Tensor
    ) -> torch.Tensor:
        """``num_negatives: all``: ``(A, C * T)`` bool, the candidates of each anchor sequence.

        Every valid (non-padded) frame of the anchor's group, minus its own sequence where the
        mode excludes it; the positive is not removed here (``info_nce_all`` counts it once).
        """
        c, t = valid.shape
        group = self.groups(c, speaker, valid.device)
        same = group[anchor_seqs][:, None] == group[None, :]  # (A, C)
        if self.exclude_own:
            same &= anchor_seqs[:, None] != torch.arange(c, device=valid.device)[None, :]
        mask = (same[:, :, None] & valid[None]).reshape(anchor_seqs.numel(), c * t)
        if not bool(mask.any(1).all()):
            raise ValueError(
                f"negatives={self.mode}, num_negatives=all: some anchor has no candidate frame "
                "(its group holds no other valid frame)"
            )
        return mask

    @torch.no_grad()
    def sample(
        self,
        valid: torch.Tensor,
        speaker: torch.Tensor | None,
        anchor_seqs: torch.Tensor,
        num_anchor_steps: int,
        num_steps: int,
    ) -> torch.Tensor:
        """Negative indices ``(S, A * Ta, N)`` into the flattened candidates.

        Args:
            valid: ``(C, T)`` bool, frames that may be drawn (padding is False).
            speaker: ``(C,)`` speaker id per candidate sequence, or None.
            anchor_seqs: ``(A,)`` candidate-sequence index of each anchor sequence.
            num_anchor_steps: ``Ta``, anchors are steps ``0..Ta-1`` of each anchor sequence.
            num_steps: K; ``S = 1`` if shared across steps else K.
        """
        if self.use_all:
            raise ValueError("num_negatives=all draws nothing: use candidate_mask")
        group = self.groups(valid.shape[0], speaker, valid.device)
        draws = 1 if self.share_across_steps else num_steps
        return sample_grouped(
            valid,
            group,
            anchor_seqs,
            (draws, num_anchor_steps, self.num_negatives),
            self.exclude_own,
            self.mode,
        ).reshape(draws, -1, self.num_negatives)


def sample_grouped(
    valid: torch.Tensor,
    group: torch.Tensor,
    anchor_seqs: torch.Tensor,
    shape: tuple[int, int, int],
    exclude_own: bool,
    mode: str = "",
) -> torch.Tensor:
    """Uniform draws from the valid frames of each anchor sequence's group.

    Returns ``(S, A, Ta, N)`` flat candidate indices for ``shape = (S, Ta, N)``.
    """
    c, t = valid.shape
    device = valid.device
    order = torch.argsort(group * c + torch.arange(c, device=device))  # sort by (group, seq)
    rank_of = torch.empty_like(order)
    rank_of[order] = torch.arange(c, device=device)
    valid_sorted = valid[order]
    seq_count = valid_sorted.sum(1)  # (C,) valid frames per sorted sequence
    seq_start = torch.cumsum(seq_count, 0) - seq_count
    rows, cols = valid_sorted.nonzero(as_tuple=True)
    flat = order[rows] * t + cols  # the valid frames, ordered by (group, seq, t)
    g_sorted = group[order]
    _, g_inv = torch.unique_consecutive(g_sorted, return_inverse=True)
    g_count = torch.zeros(int(g_inv.max()) + 1, dtype=torch.long, device=device)
    g_count.index_add_(0, g_inv, seq_count)
    g_start = torch.cumsum(g_count, 0) - g_count

    r_a = rank_of[anchor_seqs]
    gs, gc = g_start[g_inv[r_a]], g_count[g_inv[r_a]]
    ss, sc = seq_start[r_a], seq_count[r_a]
    avail = gc - sc if exclude_own else gc
    if bool((avail <= 0).any()):
        raise ValueError(
            f"negatives={mode or 'this mode'}: some anchor has no candidate frame (its "
            + (
                "speaker has no other sequence in the batch; use data.sampler=speaker_groups "
                "with data.windows_per_speaker >= 2"
                if exclude_own
                else "group is empty"
            )
            + ")"
        )
    s, ta, n = shape
    a = anchor_seqs.numel()
    u = torch.rand(s, a, ta, n, device=device)
    view = (1, a, 1, 1)
    r = (u * avail.view(view)).long().clamp_max(avail.view(view) - 1)
    if exclude_own:
        r = r + sc.view(view) * (r >= (ss - gs).view(view))
    return flat[gs.view(view) + r]
