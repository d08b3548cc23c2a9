"""Item sets: phone tokens in context, ``.item`` files, item generation, seconds to frames."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ITEM_HEADER = "#file onset offset #phone prev-phone next-phone speaker"
_ITEM_FIELDS = ("file", "onset", "offset", "phone", "prev", "next", "speaker")


@dataclass
class ItemSet:
    """Phone tokens in triphone context: one entry per token in every list (item-file order)."""

    file: list[str] = field(default_factory=list)
    onset: list[float] = field(default_factory=list)
    offset: list[float] = field(default_factory=list)
    phone: list[str] = field(default_factory=list)
    prev: list[str] = field(default_factory=list)
    next: list[str] = field(default_factory=list)
    speaker: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.file)

    def append(
        self,
        file: str,
        onset: float,
        offset: float,
        phone: str,
        prev: str,
        next: str,
        speaker: str,
    ) -> None:
        """Add one token."""
        self.file.append(file)
        self.onset.append(float(onset))
        self.offset.append(float(offset))
        self.phone.append(phone)
        self.prev.append(prev)
        self.next.append(next)
        self.speaker.append(speaker)

    def select(self, indices: Iterable[int]) -> ItemSet:
        """The tokens at ``indices``, in that order."""
        idx = [int(i) for i in indices]
        return ItemSet(
            *([getattr(self, name)[i] for i in idx] for name in _ITEM_FIELDS),
        )


def read_items(path: str | Path) -> ItemSet:
    """Read a ``.item`` file (header line, then seven whitespace-separated fields a line).

    A line whose times are not finite numbers with ``0 <= onset < offset`` is refused
    (``ValueError`` naming the file and the line number)."""
    items = ItemSet()
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    first = 2 if lines and lines[0].startswith("#") else 1
    for n, line in enumerate(lines[first - 1 :], start=first):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 7:
            raise ValueError(f"{path}: item line {n} has {len(parts)} fields, expected 7")
        file, onset, offset, phone, prev, nxt, speaker = parts
        on, off = _times(onset, offset, f"{path}: item line {n}")
        items.append(file, on, off, phone, prev, nxt, speaker)
    return items


def _times(onset: str, offset: str, where: str) -> tuple[float, float]:
    """Onset and offset in seconds, refused unless finite with ``0 <= onset < offset``."""
    values = []
    for text in (onset, offset):
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{where}: {text!r} is not a number (seconds)") from None
        if not np.isfinite(value):
            raise ValueError(f"{where}: {text!r} is not a finite number (seconds)")
        values.append(value)
    on, off = values
    if on < 0 or off < 0:
        raise ValueError(f"{where}: negative time ({onset} {offset}); times are seconds >= 0")
    if on > off:
        raise ValueError(f"{where}: onset {on:g} is after its offset {off:g}")
    if on == off:
        raise ValueError(f"{where}: onset {on:g} equals its offset (an empty token)")
    return on, off


def write_items(items: ItemSet, path: str | Path) -> None:
    """Write ``items`` as a ``.item`` file; floats are written so that they read back exactly."""
    rows = [ITEM_HEADER]
    for k in range(len(items)):
        fields = [items.file[k], items.phone[k], items.prev[k], items.next[k], items.speaker[k]]
        if any(not s or any(c.isspace() for c in s) for s in fields):
            raise ValueError(f"item {k}: empty field or whitespace in {fields}")
        f, p, pv, nx, s = fields
        rows.append(f"{f} {float(items.onset[k])!r} {float(items.offset[k])!r} {p} {pv} {nx} {s}")
    Path(path).write_text("\n".join(rows) + "\n", encoding="utf-8")


def limit_items(items: ItemSet, max_per_cell: int | None, seed: int = 0) -> ItemSet:
    """Keep at most ``max_per_cell`` random tokens per (phone, prev, next, speaker), in order."""
    if max_per_cell is None:
        return items
    rng = np.random.default_rng(seed)
    cells: dict[tuple[str, str, str, str], list[int]] = {}
    for k in range(len(items)):
        key = (items.phone[k], items.prev[k], items.next[k], items.speaker[k])
        cells.setdefault(key, []).append(k)
    keep: list[int] = []
    for idx in cells.values():
        if len(idx) > max_per_cell:
            idx = sorted(rng.choice(idx, size=max_per_cell, replace=False).tolist())
        keep.extend(idx)
    return items.select(sorted(keep))


def _add_tokens(
    items: ItemSet,
    file: str,
    speaker: str,
    tokens: Sequence[tuple[float, float, str | None]],
    edge_context: str | None,
) -> None:
    """Append the tokens of one utterance; ``None`` phones are unknown or ignored."""
    n = len(tokens)
    for k, (onset, offset, phone) in enumerate(tokens):
        if phone is None:
            continue
        prev = tokens[k - 1][2] if k > 0 else edge_context
        nxt = tokens[k + 1][2] if k + 1 < n else edge_context
        if prev is None or nxt is None:
            continue
        items.append(file, onset, offset, phone, prev, nxt, speaker)


def items_from_frame_labels(
    labels: Mapping[str, Sequence[int] | np.ndarray],
    speakers: Mapping[str, str],
    frame_rate: float = 100.0,
    phone_names: Sequence[str] | None = None,
    ignore: Iterable[int] = (),
    edge_context: str | None = None,
    max_per_cell: int | None = None,
    seed: int = 0,
) -> ItemSet:
    """Tokens from frame-level phone labels ``labels[file]`` of shape ``(T,)``.

    Each run of one label over frames ``[i0, i1)`` is a token with onset ``i0 / frame_rate``
    and offset ``i1 / frame_rate`` (note the default ``"libri-light"`` mapping of :func:`abx`
    reads it back as frames ``[i0, i1 - 1)``, ``"round"`` as ``[i0, i1)``). Negative labels
    (unknown) and labels in ``ignore`` form no token and give no context: their neighbours are
    dropped, as are tokens at the utterance edges unless ``edge_context`` is given (then it is
    their missing context, e.g. ``"SIL"``). Phones are ``phone_names[label]`` (default
    ``str(label)``). ``max_per_cell``: see :func:`limit_items`.
    """
    ignored = {int(i) for i in ignore}
    items = ItemSet()
    for file, lab in labels.items():
        arr = np.asarray(lab).reshape(-1).astype(np.int64)
        if arr.size == 0:
            continue
        change = np.flatnonzero(arr[1:] != arr[:-1]) + 1
        starts = np.concatenate([[0], change])
        ends = np.concatenate([change, [arr.size]])
        tokens: list[tuple[float, float, str | None]] = []
        for i0, i1 in zip(starts.tolist(), ends.tolist(), strict=True):
            v = int(arr[i0])
            name: str | None = None
            if v >= 0 and v not in ignored:
                name = str(v) if phone_names is None else phone_names[v]
            tokens.append((i0 / frame_rate, i1 / frame_rate, name))
        _add_tokens(items, file, speakers[file], tokens, edge_context)
    return limit_items(items, max_per_cell, seed)


def items_from_segments(
    segments: Mapping[str, Sequence[tuple[float, float, str]]],
    speakers: Mapping[str, str],
    ignore_phones: Iterable[str] = (),
    edge_context: str | None = None,
    max_per_cell: int | None = None,
    seed: int = 0,
) -> ItemSet:
    """Tokens from time-aligned phones ``segments[file] = [(onset s, offset s, phone), ...]``.

    Segments are taken in onset order; a token's context is its neighbouring segments (gaps
    between segments are ignored, as in ``alignment2item``). Tokens that are, or neighbour, a
    phone of ``ignore_phones`` are dropped, and so are edge tokens unless ``edge_context`` is
    given. ``max_per_cell``: see :func:`limit_items`.
    """
    ignored = set(ignore_phones)
    items = ItemSet()
    for file, segs in segments.items():
        ordered = sorted(segs, key=lambda s: float(s[0]))
        tokens = [
            (float(on), float(off), None if ph in ignored else str(ph)) for on, off, ph in ordered
        ]
        _add_tokens(items, file, speakers[file], tokens, edge_context)
    return limit_items(items, max_per_cell, seed)


def item_frames(
    onset: np.ndarray | Sequence[float],
    offset: np.ndarray | Sequence[float],
    frame_rate: float,
    num_frames: int,
    mapping: str = "libri-light",
) -> tuple[np.ndarray, np.ndarray]:
    """Feature frame range ``[start, end)`` of tokens ``(N,)``; ``end <= start`` means skipped.

    ``"libri-light"``: ``start = max(0, ceil(r on - 0.5))``, ``end = min(T, floor(r off - 0.5))``;
    ``"round"``: ``start = round(r on)``, ``end = min(T, round(r off))``.
    """
    on = np.asarray(onset, dtype=np.float64) * float(frame_rate)
    off = np.asarray(offset, dtype=np.float64) * float(frame_rate)
    if mapping == "libri-light":
        start, end = np.ceil(on - 0.5), np.floor(off - 0.5)
    elif mapping == "round":
        start, end = np.rint(on), np.rint(off)
    else:
        raise ValueError(f"unknown frame mapping {mapping!r}: 'libri-light' or 'round'")
    start = np.maximum(start, 0).astype(np.int64)
    end = np.minimum(end, num_frames).astype(np.int64)
    return start, end
