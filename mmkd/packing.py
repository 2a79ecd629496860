"""Sequence packing: several encoded samples (text + image tokens) in one row of `max_len` tokens.

Rows are filled one at a time: each new row starts with the longest sample left, then takes the set
of other samples whose lengths sum closest to the room left (an exact subset sum over the lengths,
as a bitset; samples of one length are one item with a count). Best-fit decreasing, which this
replaces, left 6% of 4096-token rows empty at dense_3b's 729 image tokens, where image samples of
750-950 tokens fit four or five to a row and the mixture's short text cannot fill every gap; the
subset sum finds the combinations of image samples that do fit (bench/packing.py, bench/RESULTS.md).
Samples are not reordered across more than one pool (the mixture's order is kept at the pool's
scale). Each row carries `segments` (1, 2, ... per sample, 0 on padding;
`mmkd.loader.collate_rows`): the decoder then lets a sample attend only within itself and restarts
its RoPE positions (`mmkd.model.decoder.Decoder.forward`). Labels need no change: a sample starts
with BOS, which is never a target, so no loss crosses a boundary.

The trainer packs with `train.packing=true` (`mmkd.loader.MixtureDataset`); `bench/packing.py`
measures the non-pad fraction on a recipe's mixture.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from mmkd.templates import Encoded


@dataclass
class Row:
    samples: list[Encoded] = field(default_factory=list)
    keys: list[Any] = field(default_factory=list)  # what identifies each sample (an id, the loader's meta)

    def __len__(self) -> int:
        return sum(len(s) for s in self.samples)


def pack(items: list[tuple[Any, Encoded]], max_len: int, rows: list[Row] | None = None) -> list[Row]:
    """Rows of at most `max_len` tokens holding every (key, sample) once: the partly filled `rows`
    given are topped up first (they come first in the result), then new rows, each started with the
    longest sample left and filled as close to `max_len` as the other samples' lengths allow."""
    left = _ByLength()
    for key, enc in items:
        if len(enc) > max_len:
            raise ValueError(f"sample {key!r} has {len(enc)} tokens > max_len={max_len}")
        left.add(key, enc)
    out = list(rows or [])
    for row in out:
        left.fill(row, max_len)
    while left:
        row = Row()
        left.move(row, left.longest(), 1)
        left.fill(row, max_len)
        out.append(row)
    return out


class _ByLength:
    """The samples not yet in a row, by length, each length first in first out (deterministic)."""

    def __init__(self) -> None:
        self.items: dict[int, list[tuple[Any, Encoded]]] = {}

    def __bool__(self) -> bool:
        return bool(self.items)

    def add(self, key: Any, enc: Encoded) -> None:
        self.items.setdefault(len(enc), []).append((key, enc))

    def longest(self) -> int:
        return max(self.items)

    def move(self, row: Row, length: int, count: int) -> None:
        taken, self.items[length] = self.items[length][:count], self.items[length][count:]
        if not self.items[length]:
            del self.items[length]
        for key, enc in taken:
            row.samples.append(enc)
            row.keys.append(key)

    def fill(self, row: Row, max_len: int) -> None:
        """Add to `row` the samples whose lengths sum closest to its room (at most it)."""
        room = max_len - len(row)
        # Each length's samples as items of 1, 2, 4, ... samples (any count is a sum of them).
        parts = []
        # Longest first: the walk back below then keeps short samples for the rows still to fill.
        for length in sorted((n for n in self.items if n <= room), reverse=True):
            count, step = len(self.items[length]), 1
            while count:
                parts.append((length, min(step, count)))
                count, step = count - parts[-1][1], step * 2
        mask = (1 << (room + 1)) - 1
        reach = [1]  # reach[j]: bit t set if some of the first j parts sum to t tokens
        for length, count in parts:
            reach.append((reach[-1] | reach[-1] << length * count) & mask)
        best, take = reach[-1].bit_length() - 1, Counter()
        for j in range(
            len(parts), 0, -1
        ):  # walk back: part j-1 is needed where best is not reachable without it
            if not reach[j - 1] >> best & 1:
                length, count = parts[j - 1]
                take[length] += count
                best -= length * count
        for length in sorted(take, reverse=True):
            self.move(row, length, take[length])


def efficiency(rows: list[Row], max_len: int) -> float:
    """Fraction of the rows' tokens that are real (non-pad) tokens."""
    return sum(len(r) for r in rows) / (len(rows) * max_len) if rows else 0.0
