"""Sequence packing: several encoded samples (text + image tokens) in one row of `max_len` tokens.

Best-fit decreasing over a pool of samples: the longest sample goes first into the fullest row that
still has room, so rows fill to ~100% without reordering samples across more than one pool (the
mixture's order is kept at the pool's scale). Each row carries `segments` (1, 2, ... per sample,
0 on padding; `mmkd.loader.collate_rows`): the decoder then lets a sample attend only within itself
and restarts its RoPE positions (`mmkd.model.decoder.Decoder.forward`). Labels need no change: a
sample starts with BOS, which is never a target, so no loss crosses a boundary.

The trainer packs with `train.packing=true` (`mmkd.loader.MixtureDataset`); `bench/packing.py`
measures the non-pad fraction on a recipe's mixture.
"""

from __future__ import annotations

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
    """Rows of at most `max_len` tokens holding every (key, sample) once (longest first, best fit),
    topping up the partly filled `rows` given (they come first in the result)."""
    rows = list(rows or [])
    for key, enc in sorted(items, key=lambda it: -len(it[1])):
        if len(enc) > max_len:
            raise ValueError(f"sample {key!r} has {len(enc)} tokens > max_len={max_len}")
        fits = [r for r in rows if len(r) + len(enc) <= max_len]
        row = max(fits, key=len) if fits else None
        if row is None:
            row = Row()
            rows.append(row)
        row.samples.append(enc)
        row.keys.append(key)
    return rows


def efficiency(rows: list[Row], max_len: int) -> float:
    """Fraction of the rows' tokens that are real (non-pad) tokens."""
    return sum(len(r) for r in rows) / (len(rows) * max_len) if rows else 0.0
