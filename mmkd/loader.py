"""Data loading: per-source streams, the weighted mixture sampler, and padded batches.

Splitting work: every (rank, worker) pair is one *reader*. A source with at least as many shards as
readers is split by shard; otherwise by sample index (sample i goes to reader i % readers), so two
ranks never read the same sample within an epoch. Each reader reshuffles its shard order every epoch
and passes samples through a shuffle buffer.

Determinism and resumption: every random stream is seeded from (seed, rank, worker), so the stream of
batches is a pure function of the config; a run resumed at step s has the loader skip the batches it
already trained on (`skip`: drawn in the workers, not collated) and continues exactly as the
uninterrupted run would.

Bad images: images decode when a batch is collated. A sample whose image does not decode is left out
of its batch and listed in the batch's `bad` (source, shard, id, error); the trainer logs each one and
stops once a rank has met more than `data.max_bad_samples` of them.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mmkd.errors import DataError
from mmkd.packing import Row, pack
from mmkd.schema import Sample
from mmkd.shards import iter_shard, open_dataset
from mmkd.templates import IGNORE, Encoded, Templates


class MixtureSampler:
    """Draws source names with probability equal to their weight (weights are sample fractions)."""

    def __init__(self, weights: dict[str, float], seed: int | str):
        self.names = sorted(weights)
        total = sum(weights[n] for n in self.names)
        self.cum = np.cumsum([weights[n] / total for n in self.names])
        self.rng = random.Random(seed)

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        i = int(np.searchsorted(self.cum, self.rng.random(), side="right"))
        return self.names[min(i, len(self.names) - 1)]


def source_stream(
    root: Path, reader: int, readers: int, seed: str, buffer: int = 512
) -> Iterator[tuple[str, Sample]]:
    """An endless, shuffled stream of this reader's share of one dataset: (shard file name, sample)."""
    ds = open_dataset(root)
    shards = ds.shard_paths
    starts = np.cumsum([0] + [s["num_samples"] for s in ds.manifest["shards"]])  # global index of shard[0]
    by_shard = len(shards) >= readers
    mine = list(range(len(shards)))[reader::readers] if by_shard else list(range(len(shards)))
    rng = random.Random(seed)
    pool: list[tuple[str, Sample]] = []
    while True:
        rng.shuffle(mine)
        seen = 0
        for k in mine:
            select = None if by_shard else (lambda i, o=int(starts[k]): (o + i) % readers == reader)
            for sample in iter_shard(shards[k], select=select, lazy=True):  # decoded when collated
                seen += 1
                pool.append((shards[k].name, sample))
                if len(pool) >= buffer:
                    yield pool.pop(rng.randrange(len(pool)))
        if not seen:
            raise ValueError(
                f"{root}: reader {reader} of {readers} gets no samples ({len(ds)} in the dataset)"
            )
        rng.shuffle(pool)
        while len(pool) > buffer // 2:  # drain part of the buffer so epochs mix but memory stays bounded
            yield pool.pop()


class MixtureDataset(IterableDataset):
    """Endless stream of micro-batches following the recipe's mixture, one stream per reader.

    Length bucketing (default): `bucket` micro-batches' worth of samples are sorted by length, cut into
    micro-batches and yielded in random order, so little compute goes to padding while the mixture
    proportions hold over every pool (a step of several micro-batches still mixes lengths and kinds).

    Packing (`pack_len` > 0): micro-batches of `micro_batch` rows of `pack_len` tokens, each row
    holding several samples (`mmkd.packing`). `bucket` micro-batches' worth of tokens are packed at a
    time; the least-filled rows go back into the next pool, so the rows that train stay nearly full.
    """

    def __init__(
        self,
        sources: dict[str, Path],
        weights: dict[str, float],
        templates: Templates,
        seed: int,
        micro_batch: int,
        image_size: int,
        rank: int = 0,
        world_size: int = 1,
        bucket: int = 8,
        pack_len: int = 0,
        skip: int = 0,
    ):
        missing = set(weights) - set(sources)
        if missing:
            raise ValueError(f"mixture names sources without a dataset: {sorted(missing)}")
        self.sources, self.weights, self.templates = sources, weights, templates
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.micro_batch, self.bucket, self.pack_len, self.skip = micro_batch, bucket, pack_len, skip
        self.collate = Collator(templates.tok.pad_id, image_size)

    def samples(self, reader: int, readers: int) -> Iterator[tuple[Encoded, dict]]:
        tag = f"{self.seed}/{reader}/0"  # "/0": streams as seeded before exact resume (README results)
        streams = {
            name: source_stream(self.sources[name], reader, readers, seed=f"{tag}/{name}")
            for name in self.weights
        }
        for name in MixtureSampler(self.weights, seed=f"{tag}/mixture"):
            shard, sample = next(streams[name])
            meta = {"id": sample.id, "source": name, "kind": sample.kind, "shard": shard}
            yield self.templates.encode(sample), meta

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        reader, readers = self.rank * workers + worker, self.world_size * workers
        rng = random.Random(f"{self.seed}/{reader}/0/bucket")
        stream = self.samples(reader, readers)
        # Resume: each worker skips its batches of the whole rounds within the first `skip` (drawn but
        # not collated: no image tensors, no padding); `make_loader` drops the rest of a round.
        mine = self.skip // workers
        for i, batch in enumerate((self._packed if self.pack_len else self._bucketed)(stream, rng)):
            if i >= mine:
                yield self._collate_rows(batch) if self.pack_len else self.collate(batch)

    def _bucketed(self, stream: Iterator[tuple[Encoded, dict]], rng: random.Random) -> Iterator[dict]:
        while True:
            pool = sorted(
                (next(stream) for _ in range(self.micro_batch * self.bucket)), key=lambda x: len(x[0])
            )
            batches = [pool[i : i + self.micro_batch] for i in range(0, len(pool), self.micro_batch)]
            rng.shuffle(batches)
            yield from batches

    def _packed(self, stream: Iterator[tuple[Encoded, dict]], rng: random.Random) -> Iterator[dict]:
        carried: list[Row] = []  # the emptiest rows of the last pool, topped up and trained in this one
        target = self.micro_batch * self.bucket * self.pack_len
        while True:
            items, tokens = [], sum(len(r) for r in carried)
            while tokens < target:
                enc, meta = next(stream)
                items.append((meta, enc))
                tokens += len(enc)
            rows = pack(items, self.pack_len, carried)
            keep = (len(rows) - 1) // self.micro_batch * self.micro_batch  # >= bucket - 1 micro-batches
            # Carried rows always train now, so no sample waits more than one pool.
            fresh = sorted(rows[len(carried) :], key=len, reverse=True)
            kept, carried = rows[: len(carried)] + fresh[: keep - len(carried)], fresh[keep - len(carried) :]
            batches = [kept[i : i + self.micro_batch] for i in range(0, keep, self.micro_batch)]
            rng.shuffle(batches)
            yield from batches

    def _collate_rows(self, rows: list[Row]) -> dict:
        return collate_rows(rows, self.pack_len, self.collate.pad_id, self.collate.image_size)


def image_tensor(image: Image.Image, size: int) -> torch.Tensor:
    """[3, size, size] float in [-1, 1] (resized when the stored size differs)."""
    image = image.convert("RGB")  # first: a palette image would otherwise resize by nearest neighbour
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    arr = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1)


def decodes(enc: Encoded, meta: Any, bad: list[dict]) -> bool:
    """Decode the sample's images now; False, with the sample named in `bad`, if one does not."""
    try:
        for image in enc.images:
            image.load()
    except OSError as e:  # PIL's undecodable and truncated images
        where = meta if isinstance(meta, dict) else {"id": meta}
        bad.append({**{k: where[k] for k in ("source", "shard", "id") if k in where}, "error": str(e)})
        return False
    return True


@dataclass
class Collator:
    pad_id: int
    image_size: int

    def __call__(self, items: list[tuple[Encoded, dict]]) -> dict:
        bad: list[dict] = []
        items = [(enc, meta) for enc, meta in items if decodes(enc, meta, bad)]
        if not items:
            raise DataError(f"no sample of a batch decodes: {bad}")
        length = max(len(enc) for enc, _ in items)
        ids = torch.full((len(items), length), self.pad_id, dtype=torch.long)
        labels = torch.full((len(items), length), IGNORE, dtype=torch.long)
        images = []
        for b, (enc, _) in enumerate(items):
            ids[b, : len(enc)] = torch.tensor(enc.input_ids)
            labels[b, : len(enc)] = torch.tensor(enc.labels)
            images += [image_tensor(im, self.image_size) for im in enc.images]
        pixels = torch.stack(images) if images else None  # [N_images, 3, H, W], in sequence order
        meta = [m for _, m in items]
        return {"input_ids": ids, "labels": labels, "pixels": pixels, "meta": meta, "bad": bad}


def _decoded(row: Row, bad: list[dict]) -> Row:
    """The row without its samples whose images do not decode (those are listed in `bad`)."""
    kept = Row()
    for enc, key in zip(row.samples, row.keys, strict=True):
        if decodes(enc, key, bad):
            kept.samples.append(enc)
            kept.keys.append(key)
    return kept


def collate_rows(rows: list[Row], max_len: int, pad_id: int, image_size: int) -> dict:
    """A batch of packed rows: input_ids, labels, segments [B, max_len], pixels in sequence order.

    `segments` numbers each row's samples 1, 2, ... (0 on padding); `meta` is the row keys in order.
    A sample whose image does not decode leaves its row (listed in `bad`).
    """
    bad: list[dict] = []
    rows = [_decoded(row, bad) for row in rows]
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
    pixels = torch.stack(images) if images else None  # [N_images, 3, H, W]
    meta = [key for row in rows for key in row.keys]
    return {
        "input_ids": ids,
        "labels": labels,
        "segments": segments,
        "pixels": pixels,
        "meta": meta,
        "bad": bad,
    }


def to_device(batch: dict, device: torch.device) -> dict:
    """A batch's tensors on the training device (asynchronously from pinned memory on a GPU)."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def make_loader(dataset: MixtureDataset, num_workers: int, pin_memory: bool = False) -> Iterator[dict]:
    """The dataset's batches, made in `num_workers` processes (0: this one), in stream order; in
    page-locked memory with `pin_memory` (for a GPU: the copy to it can then overlap compute).

    Batches come ready-made from the dataset (bucketed or packed); workers only move the work off the
    trainer. The DataLoader takes one batch from each worker in turn, starting at worker 0, so a
    resumed stream skips whole rounds inside the workers and the rest of a round here.
    """
    loader = DataLoader(
        dataset,
        batch_size=None,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        prefetch_factor=4 if num_workers > 0 else None,
        pin_memory=pin_memory,
    )
    batches = iter(loader)
    for _ in range(dataset.skip % max(1, num_workers)):
        next(batches)
    return batches
