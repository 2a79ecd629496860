"""Sequence packing: several encoded samples (text + image tokens) in one row of `max_len` tokens.

Best-fit decreasing over a buffer of samples: the longest sample goes first into the fullest row that
still has room, so rows fill to ~100% without reordering samples across more than one buffer (the
mixture's order is kept at the buffer's scale). Each row carries `segments` (1, 2, ... per sample,
0 on padding): the decoder then lets a sample attend only within itself and restarts its RoPE
positions (`mmkd.model.decoder.Decoder.forward`). Labels need no change: a sample starts with BOS,
which is never a target, so no loss crosses a boundary. The images of a row are stored in sequence
order, as the model's `<image>` slots expect.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mmkd.loader import image_tensor
from mmkd.templates import IGNORE, Encoded


@dataclass
class Row:
    samples: list[Encoded] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(len(s) for s in self.samples)


def pack(items: list[tuple[str, Encoded]], max_len: int) -> list[Row]:
    """Rows of at most `max_len` tokens holding every item once (longest first, best fit)."""
    rows: list[Row] = []
    for sample_id, enc in sorted(items, key=lambda it: -len(it[1])):
        if len(enc) > max_len:
            raise ValueError(f"sample {sample_id!r} has {len(enc)} tokens > max_len={max_len}")
        fits = [r for r in rows if len(r) + len(enc) <= max_len]
        row = max(fits, key=len) if fits else None
        if row is None:
            row = Row()
            rows.append(row)
        row.samples.append(enc)
        row.ids.append(sample_id)
    return rows


def collate_rows(rows: list[Row], max_len: int, pad_id: int, image_size: int) -> dict:
    """A batch of packed rows: input_ids, labels, segments [B, max_len] and pixels in sequence order."""
    ids = torch.full((len(rows), max_len), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), max_len), IGNORE, dtype=torch.long)
    segments = torch.zeros((len(rows), max_len), dtype=torch.long)
    images = []
    for b, row in enumerate(rows):
        at = 0
        for k, enc in enumerate(row.samples, 1):
            n = len(enc)
            ids[b, at : at + n] = torch.tensor(enc.input_ids)
            labels[b, at : at + n] = torch.tensor(enc.labels)
            segments[b, at : at + n] = k
            images += [image_tensor(im, image_size) for im in enc.images]
            at += n
    pixels = torch.stack(images) if images else None
    return {"input_ids": ids, "labels": labels, "segments": segments, "pixels": pixels}


def efficiency(rows: list[Row], max_len: int) -> float:
    """Fraction of the rows' tokens that are real (non-pad) tokens."""
    return sum(len(r) for r in rows) / (len(rows) * max_len) if rows else 0.0
