"""Data loading: per-source streams, the weighted mixture sampler, and padded batches.

Splitting work: every (rank, worker) pair is one *reader*. A source with at least as many shards as
readers is split by shard; otherwise by sample index (sample i goes to reader i % readers), so two
ranks never read the same sample within an epoch. Each reader reshuffles its shard order every epoch
and passes samples through a shuffle buffer.

Determinism and resumption: every random stream is seeded from (seed, rank, worker), so the stream of
batches is a pure function of the config; a run resumed at step s has the loader skip the batches it
already trained on (`skip`: drawn in the workers, not collated) and continues exactly as the
uninterrupted run would.

Hand-off: a loader worker sends each batch's tensors in one buffer (`flatten`), so the trainer maps one
shared-memory file per batch (and pins one block on a GPU) instead of one per tensor.

Bad images: images decode when a batch is collated. A sample whose image does not decode is left out
of its batch and listed in the batch's `bad` (source, shard, id, error); the trainer logs each one and
stops once a rank has met more than `data.max_bad_samples` of them.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mmkd.errors import DataError, UserError
from mmkd.packing import Row, pack
from mmkd.schema import Sample
from mmkd.shards import UNDECODABLE, iter_indexed, open_dataset
from mmkd.templates import IGNORE, Encoded, Templates


class MixtureSampler:
    """Draws source names so that each source's share of the stream is its weight.

    `unit="samples"`: a source is drawn with probability equal to its weight. `unit="tokens"`: with
    probability proportional to its weight over its mean sample length so far (`observe` tells the
    lengths; until every source has one, the weights are used as sample shares), so its share of the
    tokens converges to its weight. One random number per draw in both units.
    """

    def __init__(self, weights: dict[str, float], seed: int | str, unit: str = "samples"):
        self.names = sorted(weights)
        total = sum(weights[n] for n in self.names)
        self.weights = [weights[n] / total for n in self.names]
        self.cum = np.cumsum(self.weights)
        self.rng = random.Random(seed)
        self.unit = unit
        self.samples = dict.fromkeys(self.names, 0)  # observed so far (tokens unit)
        self.tokens = dict.fromkeys(self.names, 0)

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        cum = self.cum
        if self.unit == "tokens" and all(self.samples.values()):
            per_token = [
                w * self.samples[n] / self.tokens[n] for w, n in zip(self.weights, self.names, strict=True)
            ]
            cum = np.cumsum(per_token) / sum(per_token)
        i = int(np.searchsorted(cum, self.rng.random(), side="right"))
        return self.names[min(i, len(self.names) - 1)]

    def observe(self, name: str, length: int) -> None:
        self.samples[name] += 1
        self.tokens[name] += length

    def state(self) -> dict:
        return {"rng": _rng_state(self.rng), "samples": self.samples, "tokens": self.tokens}

    def restore(self, state: dict) -> None:
        _set_rng(self.rng, state["rng"])
        self.samples, self.tokens = dict(state["samples"]), dict(state["tokens"])


def _rng_state(rng: random.Random) -> list:
    """A `random.Random` state as JSON (checkpoints hold no pickles)."""
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _set_rng(rng: random.Random, state: list) -> None:
    rng.setstate((state[0], tuple(state[1]), state[2]))


Position = tuple[int, int]  # (shard index in the manifest, sample index in the shard)


class SourceStream:
    """An endless, shuffled stream of this reader's share of one dataset: (position, sample).

    Each epoch shuffles the reader's shards and passes their samples through a shuffle buffer. Its
    `state()` (the RNG, where it reads, the buffer as positions: a few KB) restores it in time that
    does not grow with how far it has read: the buffered samples are read again by position.
    """

    def __init__(self, root: Path, reader: int, readers: int, seed: str, buffer: int = 512):
        ds = open_dataset(root)
        self.root, self.size, self.shards = root, len(ds), ds.shard_paths
        self.starts = np.cumsum([0] + [s["num_samples"] for s in ds.manifest["shards"]])  # global index
        self.reader, self.readers, self.buffer = reader, readers, buffer
        self.by_shard = len(self.shards) >= readers
        everything = list(range(len(self.shards)))
        self.order = everything[reader::readers] if self.by_shard else everything
        self.rng = random.Random(seed)
        self.pool: list[tuple[Position, Sample]] = []
        self.phase = "start"  # start (of an epoch) | read | drain (half the buffer, between epochs)
        self.at, self.after, self.seen = 0, -1, 0  # order index, last sample read there, this epoch's count
        self._open: Iterator[tuple[int, Sample]] | None = None

    def selection(self, k: int, after: int) -> Callable[[int], bool]:
        """Which samples of shard k this reader reads next: its own, past position `after`."""
        if self.by_shard:
            return lambda i: i > after
        offset, reader, readers = int(self.starts[k]), self.reader, self.readers
        return lambda i: i > after and (offset + i) % readers == reader

    def __iter__(self) -> SourceStream:
        return self

    def __next__(self) -> tuple[Position, Sample]:
        while True:
            if self.phase == "drain":  # so epochs mix but memory stays bounded
                if len(self.pool) > self.buffer // 2:
                    return self.pool.pop()
                self.phase = "start"
            if self.phase == "start":
                self.rng.shuffle(self.order)
                self.phase, self.at, self.after, self.seen, self._open = "read", 0, -1, 0, None
            if self.at == len(self.order):
                if not self.seen:
                    raise ValueError(
                        f"{self.root}: reader {self.reader} of {self.readers} gets no samples "
                        f"({self.size} in the dataset)"
                    )
                self.rng.shuffle(self.pool)
                self.phase = "drain"
                continue
            if self._open is None:  # lazy: images decode when collated
                k = self.order[self.at]
                self._open = iter_indexed(self.shards[k], select=self.selection(k, self.after), lazy=True)
            item = next(self._open, None)
            if item is None:
                self._check_complete(self.order[self.at])
                self.at, self.after, self._open = self.at + 1, -1, None
                continue
            self.after, self.seen = item[0], self.seen + 1
            self.pool.append(((self.order[self.at], item[0]), item[1]))
            if len(self.pool) >= self.buffer:
                return self.pool.pop(self.rng.randrange(len(self.pool)))

    def _check_complete(self, k: int) -> None:
        """A shard cut short at a member boundary reads as a shorter one: compare with the manifest."""
        count = int(self.starts[k + 1] - self.starts[k])
        select = self.selection(k, -1)
        last = max((i for i in range(count) if select(i)), default=-1)
        if self.after < last:
            raise DataError(
                f"{self.shards[k]} ended after sample {self.after + 1} of {count} (truncated or changed "
                "since it was verified): verify or rebuild the dataset"
            )

    def state(self) -> dict:
        return {
            "rng": _rng_state(self.rng),
            "order": list(self.order),
            "phase": self.phase,
            "at": self.at,
            "after": self.after,
            "seen": self.seen,
            "pool": [list(pos) for pos, _ in self.pool],
        }

    def restore(self, state: dict) -> None:
        _set_rng(self.rng, state["rng"])
        self.order, self.phase = list(state["order"]), state["phase"]
        self.at, self.after, self.seen, self._open = state["at"], state["after"], state["seen"], None
        positions = [(k, i) for k, i in state["pool"]]
        found = self.read(positions)
        self.pool = [(pos, found[pos]) for pos in positions]

    def read(self, positions: list[Position]) -> dict[Position, Sample]:
        """The samples at these positions, each shard read once."""
        by_shard: dict[int, set[int]] = defaultdict(set)
        for k, i in positions:
            by_shard[k].add(i)
        return {
            (k, i): sample
            for k, wanted in sorted(by_shard.items())
            for i, sample in iter_indexed(self.shards[k], select=wanted.__contains__, lazy=True)
        }


class MixtureStream:
    """The recipe's mixture as one stream of encoded samples with their meta (source, shard, position,
    length); its state is the sampler's (RNG and, for token weights, its counts) and each source's."""

    def __init__(
        self,
        sources: dict[str, Path],
        weights: dict[str, float],
        templates: Templates,
        tag: str,
        reader: int,
        readers: int,
        unit: str = "samples",
    ):
        self.templates = templates
        self.streams = {
            name: SourceStream(sources[name], reader, readers, seed=f"{tag}/{name}") for name in weights
        }
        self.sampler = MixtureSampler(weights, f"{tag}/mixture", unit)

    def __iter__(self) -> MixtureStream:
        return self

    def __next__(self) -> tuple[Encoded, dict]:
        name = next(self.sampler)
        (k, i), sample = next(self.streams[name])
        encoded = self.templates.encode(sample)
        self.sampler.observe(name, len(encoded))
        return encoded, {**self._meta(name, k, i, sample), "tokens": len(encoded)}

    def _meta(self, name: str, k: int, i: int, sample: Sample) -> dict:
        shard = self.streams[name].shards[k].name
        return {"id": sample.id, "source": name, "kind": sample.kind, "shard": shard, "at": [k, i]}

    def state(self) -> dict:
        return {
            "sampler": self.sampler.state(),
            "sources": {name: s.state() for name, s in self.streams.items()},
        }

    def restore(self, state: dict) -> None:
        self.sampler.restore(state["sampler"])
        for name, s in self.streams.items():
            s.restore(state["sources"][name])

    def encode_again(self, metas: list[dict]) -> list[Encoded]:
        """The encoded samples these metas name, read again (a packed pool's carried rows)."""
        found: dict[tuple[str, int, int], Sample] = {}
        for name, s in self.streams.items():
            wanted = [tuple(m["at"]) for m in metas if m["source"] == name]
            found |= {(name, *pos): sample for pos, sample in s.read(wanted).items()}
        return [self.templates.encode(found[(m["source"], *m["at"])]) for m in metas]


class MixtureDataset(IterableDataset):
    """Endless stream of micro-batches following the recipe's mixture, one stream per reader.

    Length bucketing (default): `bucket` micro-batches' worth of samples are sorted by length, cut into
    micro-batches and yielded in random order, so little compute goes to padding while the mixture
    proportions hold over every pool (a step of several micro-batches still mixes lengths and kinds).

    Packing (`pack_len` > 0): micro-batches of `micro_batch` rows of `pack_len` tokens, each row
    holding several samples (`mmkd.packing`). `bucket` micro-batches' worth of tokens are packed at a
    time; the least-filled rows go back into the next pool, so the rows that train stay nearly full.

    Resuming: every batch carries, under "resume", the state that continues its worker's stream right
    after it: a snapshot taken at the start of its pool (the streams, the RNG, the carried rows) and
    how many of the pool's batches are done. `state` (from `Resumable.state()`, saved with each
    checkpoint) restores every worker that way, in time independent of the step; `skip` is the
    fallback for checkpoints without it: it draws (without collating) the batches already trained on.
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
        state: dict | None = None,
        weight_unit: str = "samples",
    ):
        missing = set(weights) - set(sources)
        if missing:
            raise ValueError(f"mixture names sources without a dataset: {sorted(missing)}")
        self.sources, self.weights, self.templates = sources, weights, templates
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.micro_batch, self.bucket, self.pack_len = micro_batch, bucket, pack_len
        self.skip, self.state = (0, state) if state is not None else (skip, None)
        self.weight_unit = weight_unit
        self.collate = Collator(templates.tok.pad_id, image_size)

    def samples(self, reader: int, readers: int) -> MixtureStream:
        # "/0": streams as seeded before exact resume (the README's results)
        tag = f"{self.seed}/{reader}/0"
        return MixtureStream(
            self.sources, self.weights, self.templates, tag, reader, readers, self.weight_unit
        )

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        reader, readers = self.rank * workers + worker, self.world_size * workers
        rng = random.Random(f"{self.seed}/{reader}/0/bucket")
        stream = self.samples(reader, readers)
        saved = self.state["workers"][worker] if self.state is not None else None
        # Fallback resume: each worker skips its batches of the whole rounds within the first `skip`
        # (drawn but not collated: no image tensors, no padding); `Resumable` drops the rest of a round.
        mine = self.skip // workers
        pools = self._packed if self.pack_len else self._bucketed
        for i, (batch, resume) in enumerate(pools(stream, rng, saved)):
            if i >= mine:
                out = self._collate_rows(batch) if self.pack_len else self.collate(batch)
                yield {**(flatten(out) if info else out), "resume": resume}

    def _bucketed(
        self, stream: MixtureStream, rng: random.Random, saved: dict | None
    ) -> Iterator[tuple[list, dict]]:
        done = self._restore(stream, rng, saved)
        while True:
            snapshot = {"stream": stream.state(), "rng": _rng_state(rng)}
            pool = sorted(
                (next(stream) for _ in range(self.micro_batch * self.bucket)), key=lambda x: len(x[0])
            )
            batches = [pool[i : i + self.micro_batch] for i in range(0, len(pool), self.micro_batch)]
            rng.shuffle(batches)
            for j, batch in enumerate(batches[done:], done):
                yield batch, {"pool": snapshot, "done": j + 1}
            done = 0

    def _packed(
        self, stream: MixtureStream, rng: random.Random, saved: dict | None
    ) -> Iterator[tuple[list, dict]]:
        done = self._restore(stream, rng, saved)
        # The emptiest rows of the last pool, topped up and trained in this one.
        carried = (
            []
            if saved is None
            else [Row(stream.encode_again(keys), keys) for keys in saved["pool"]["carried"]]
        )
        target = self.micro_batch * self.bucket * self.pack_len
        while True:
            snapshot = {
                "stream": stream.state(),
                "rng": _rng_state(rng),
                "carried": [list(r.keys) for r in carried],
            }
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
            for j, batch in enumerate(batches[done:], done):
                yield batch, {"pool": snapshot, "done": j + 1}
            done = 0

    @staticmethod
    def _restore(stream: MixtureStream, rng: random.Random, saved: dict | None) -> int:
        """Put the stream and the RNG back at the start of the saved pool; returns its batches done."""
        if saved is None:
            return 0
        stream.restore(saved["pool"]["stream"])
        _set_rng(rng, saved["pool"]["rng"])
        return saved["done"]

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
    except UNDECODABLE as e:  # undecodable, truncated, or over PIL's pixel limit
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


FLAT = "flat"  # a flattened batch's (buffer, layout)
ALIGN = 64  # bytes: each tensor starts aligned for any dtype's view


def flatten(batch: dict) -> dict:
    """The batch with its tensors copied into one uint8 buffer, beside their layout (name, dtype,
    shape, byte offset); other values as they are. `unflatten` gives the tensors back as views."""
    tensors = {k: v for k, v in batch.items() if torch.is_tensor(v)}
    layout, end = [], 0
    for k, v in tensors.items():
        at = -(-end // ALIGN) * ALIGN
        layout.append((k, v.dtype, tuple(v.shape), at))
        end = at + v.numel() * v.element_size()
    # Host memory on purpose: it crosses from the worker in shared memory, is pinned there on a GPU
    # run, and `to_device` moves the views to the training device.
    buffer = torch.empty(end, dtype=torch.uint8, device="cpu")
    for (_, _, _, at), v in zip(layout, tensors.values(), strict=True):
        buffer[at : at + v.numel() * v.element_size()] = v.contiguous().view(-1).view(torch.uint8)
    return {k: v for k, v in batch.items() if k not in tensors} | {FLAT: (buffer, layout)}


def unflatten(batch: dict) -> dict:
    """A flattened batch's tensors again, as views of its buffer (no copy); others pass unchanged."""
    if FLAT not in batch:
        return batch
    buffer, layout = batch.pop(FLAT)
    for k, dtype, shape, at in layout:
        size = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
        batch[k] = buffer[at : at + size].view(dtype).view(shape)
    return batch


def to_device(batch: dict, device: torch.device) -> dict:
    """A batch's tensors on the training device (asynchronously from pinned memory on a GPU)."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


UNKNOWN = object()  # a loader worker's state that a skipping resume cannot name


class Resumable:
    """The loader's batches as the trainer takes them, and the state that resumes the loader right
    after the last one taken (`state()`; None when it cannot be known, then resuming skips).

    The DataLoader takes one batch from each worker in turn, starting at worker 0 every time it
    starts. So a saved state puts each worker just after its batch of the last whole round taken, and
    a resumed loader drops the batches of the round's first workers that the trainer already had.
    """

    def __init__(self, batches: Iterator[dict], workers: int, state: dict | None, skip: int):
        self.batches, self.workers = batches, max(1, workers)
        # Each worker's state after its last batch taken, and before it; None is a worker's start.
        # A skipping resume cannot name the states its workers start from: UNKNOWN until they yield.
        start = list(state["workers"]) if state else [None if skip == 0 else UNKNOWN] * self.workers
        self.last: list[dict | object | None] = start
        self.prev: list[dict | object | None] = [UNKNOWN] * self.workers
        self.taken = 0
        for _ in range(state["drop"] if state else skip % self.workers):
            self._take()

    def _take(self) -> dict:
        try:
            batch = next(self.batches)
        except UserError as e:  # from a worker, torch re-raises it with the worker's traceback as text
            last = str(e).strip().splitlines()[-1]
            prefix = f"{type(e).__module__}.{type(e).__qualname__}: "
            if last.startswith(prefix):
                raise type(e)(last.removeprefix(prefix)) from None  # one line, as the launchers report it
            raise
        w = self.taken % self.workers
        self.prev[w], self.last[w] = self.last[w], batch.pop("resume")
        self.taken += 1
        return unflatten(batch)

    def __iter__(self) -> Resumable:
        return self

    def __next__(self) -> dict:
        return self._take()

    def state(self) -> dict | None:
        drop = self.taken % self.workers
        workers = [self.prev[w] if w < drop else self.last[w] for w in range(self.workers)]
        return None if any(x is UNKNOWN for x in workers) else {"workers": workers, "drop": drop}


def _as_made(batch: dict) -> dict:
    """The DataLoader's collate function: the dataset's batches are made already. (Its default,
    `default_convert`, walked every batch's nested resume state and metadata, element by element.)"""
    return batch


def make_loader(dataset: MixtureDataset, num_workers: int, pin_memory: bool = False) -> Resumable:
    """The dataset's batches, made in `num_workers` processes (0: this one), in stream order; in
    page-locked memory with `pin_memory` (for a GPU: the copy to it can then overlap compute).

    Batches come ready-made from the dataset (bucketed or packed); workers only move the work off the
    trainer.
    """
    loader = DataLoader(
        dataset,
        batch_size=None,
        collate_fn=_as_made,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        prefetch_factor=4 if num_workers > 0 else None,
        pin_memory=pin_memory,
    )
    return Resumable(iter(loader), num_workers, dataset.state, dataset.skip)
