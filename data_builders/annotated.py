"""Builders that make recipe data with an annotator (seed 000 Sec. 3.2, 4.2; prompts of A.1).

  caption           Caption1: one caption per image (A.1.1)
  vqa_from_caption  VQA1: 5-15 Q/A per caption, from the caption text only (A.1.2)
  semantic          the hierarchical semantic JSON per image (A.1.3); annotation records, not samples
  pair_caption      pairing by coarse alignment + fine contrast, the LLM filter, pair captions (A.1.4);
                    unpaired and filtered-out images get single captions (Figure 3)
  interleaved       groups of >= 3 related images -> one description with the images in place (A.3)

Each runs through `engine.run`, so it is shard-parallel, skips finished units and resumes after a
kill. Every failed request is a reject with its reason; a unit that rejects more than
`build.max_reject_share` of its records stops the build (`engine.BuildFailed`).
`mmkd.data_builders.sources` decides what to build where; the knowledge builder is in `knowledge.py`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmkd.annotators import Annotator, Request, Response
from mmkd.build_config import BuildConfig
from mmkd.data_builders import engine
from mmkd.data_builders.pairing import group_images, pair_images
from mmkd.data_builders.prompts import (
    PROMPTS,
    parse_caption,
    parse_filter,
    parse_interleaved,
    parse_semantic,
    parse_vqa,
)
from mmkd.data_builders.rejects import RejectLog
from mmkd.schema import Sample, Turn
from mmkd.shards import Dataset, iter_shard

BUILDER_VERSION = 1


@dataclass
class Job:
    """What every builder needs: the annotator, the build settings and the input dataset."""

    annotator: Annotator
    build: BuildConfig
    source: Dataset

    @property
    def shard(self) -> tuple[int, int]:
        return self.build.shard_index()

    def provenance(self, builder: str, prompts: list[str], **more: Any) -> dict[str, Any]:
        return {
            "builder": builder,
            "version": BUILDER_VERSION,
            "prompts": {p: PROMPTS[p].id for p in prompts},
            "prompt_sources": {p: PROMPTS[p].source for p in prompts},
            "annotator": self.annotator.identity(prompts),
            "input": {"path": str(self.source.root), "content_hash": self.source.manifest["content_hash"]},
            **more,
        }

    def run(self, out: Path, units: list, work: engine.Work, records: bool = False) -> None:
        engine.run(
            out,
            units,
            work,
            records=records,
            shard=self.shard,
            image_size=self.source.manifest.get("image_size"),
            counters=lambda: dict(self.annotator.stats),
            max_reject_share=self.build.max_reject_share,
        )

    def finish(self, out: Path, name: str, provenance: dict, extra: dict | None = None) -> dict | None:
        m = self.source.manifest
        return engine.finish_samples(
            out, name, provenance, m.get("image_size"), m.get("tokens_per_image"), extra
        )


def input_ids(ds: Dataset, limit: int = 0) -> list[str]:
    ids = [s.id for s in ds.iter(images=False)]
    return ids[:limit] if limit else ids


def chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def load_samples(ds: Dataset, ids: list[str], rejects: RejectLog, images: bool = True) -> dict[str, Sample]:
    """The samples with these ids; only the shards that hold them are read. A sample whose image does
    not decode is rejected ("image_decode") and left out."""
    index = _index(ds)
    by_shard: dict[int, set[int]] = defaultdict(set)
    for i in set(ids):
        shard, pos = index[i]
        by_shard[shard].add(pos)
    found: dict[str, Sample] = {}

    def bad(key: str, error: str) -> None:
        rejects.add(f"{ds.root}: {key}", "image_decode", error)

    for shard, positions in sorted(by_shard.items()):
        for s in iter_shard(ds.shard_paths[shard], images, positions.__contains__, on_bad=bad):
            found[s.id] = s
    return found


_INDEX: dict[tuple[str, str], dict[str, tuple[int, int]]] = {}


def single_image_samples(ds: Dataset, ids: list[str], rejects: RejectLog) -> dict[str, Sample]:
    """The samples with these ids that hold one image, in id order; the others are rejects."""
    got = load_samples(ds, ids, rejects)
    out = {}
    for i in ids:
        if (s := got.get(i)) is None:
            continue
        if len(s.images) != 1:
            rejects.add(f"{ds.root}: {s.id}", "not_single_image", f"{len(s.images)} images")
            continue
        out[i] = s
    return out


def _index(ds: Dataset) -> dict[str, tuple[int, int]]:
    """Sample id -> (shard, position), computed once per dataset version."""
    key = (str(ds.root), ds.manifest["content_hash"])
    if key not in _INDEX:
        _INDEX[key] = {
            s.id: (k, pos)
            for k, path in enumerate(ds.shard_paths)
            for pos, s in enumerate(iter_shard(path, images=False))
        }
    return _INDEX[key]


def scenes(samples: list[Sample]) -> dict[str, Any]:
    """The oracle's context: the scene graphs of world images (empty for real data)."""
    graphs = [s.metadata.get("scene") for s in samples]
    return {"scenes": graphs} if all(graphs) else {}


def _reject(rejects: RejectLog, ds: Dataset, response: Response) -> None:
    rejects.add(f"{ds.root}: {response.key}", response.error or "unknown", response.detail)


def answered(job: Job, requests: list[Request], desc: str, rejects: RejectLog) -> Iterator[Response]:
    """The annotator's usable answers; each failed request becomes a reject with its reason."""
    for r in job.annotator.annotate(requests, desc):
        if r.error:
            _reject(rejects, job.source, r)
        else:
            yield r


def _caption_requests(ds: Dataset, samples: list[Sample], rejects: RejectLog) -> list[Request]:
    out = []
    for s in samples:
        if len(s.images) != 1:
            rejects.add(f"{ds.root}: {s.id}", "not_single_image", f"{len(s.images)} images")
            continue
        out.append(Request(s.id, PROMPTS["caption"], parse_caption, images=s.images, context=scenes([s])))
    return out


def _caption_sample(name: str, src: Sample, text: str, provenance: dict) -> Sample:
    return Sample(
        id=f"{name}-{src.id}",
        kind="caption",
        source=name,
        caption_tag="Caption1",
        images=src.images,
        text=text,
        provenance={**provenance, "from": [src.id]},
        metadata={k: v for k, v in src.metadata.items() if k == "scene"},
    )


def build_caption(job: Job, out: Path, name: str = "caption1") -> dict | None:
    """Caption1 for every image of the input (seed 000 A.1.1)."""
    prov = job.provenance("caption", ["caption"])

    def work(ids: list[str], rejects: RejectLog) -> list[Sample]:
        got = load_samples(job.source, ids, rejects)
        samples = [got[i] for i in ids if i in got]
        requests = _caption_requests(job.source, samples, rejects)
        return [
            _caption_sample(name, got[r.key], r.value, prov)
            for r in answered(job, requests, f"{name} captions", rejects)
        ]

    job.run(out, chunks(input_ids(job.source, job.build.limit), job.build.unit_size), work)
    return job.finish(out, name, prov)


def build_vqa_from_caption(job: Job, out: Path, name: str = "vqa1") -> dict | None:
    """VQA1: Q/A synthesised from each caption's text alone (seed 000 A.1.2); the image is kept."""
    prov = job.provenance("vqa_from_caption", ["vqa_from_caption"])

    def work(ids: list[str], rejects: RejectLog) -> list[Sample]:
        got = load_samples(job.source, ids, rejects)
        prompt = PROMPTS["vqa_from_caption"]
        requests = [Request(i, prompt, parse_vqa, fields={"cap": got[i].text}) for i in ids if i in got]
        out_samples = []
        for r in answered(job, requests, f"{name} Q/A", rejects):
            src = got[r.key]
            out_samples.append(
                Sample(
                    id=f"{name}-{src.id}",
                    kind="vqa",
                    source=name,
                    images=src.images,
                    turns=[Turn(q, a) for q, a in r.value],
                    provenance={**prov, "from": [src.id]},
                    metadata={"caption": src.text, **{k: v for k, v in src.metadata.items() if k == "scene"}},
                )
            )
        return out_samples

    job.run(out, chunks(input_ids(job.source, job.build.limit), job.build.unit_size), work)
    return job.finish(out, name, prov)


def build_semantic(job: Job, out: Path) -> dict | None:
    """The hierarchical semantic descriptor of every image (A.1.3), as JSON records."""
    prov = job.provenance("semantic", ["semantic"])

    def work(ids: list[str], rejects: RejectLog) -> list[dict]:
        got = load_samples(job.source, ids, rejects)
        requests = [
            Request(i, PROMPTS["semantic"], parse_semantic, images=s.images[:1], context=scenes([s]))
            for i, s in got.items()
        ]
        rows = []
        for r in job.annotator.annotate(requests, "semantic analysis"):
            if r.error:
                _reject(rejects, job.source, r)
            else:
                rows.append({"id": r.key, "semantic": r.value})
        return rows

    job.run(out, chunks(input_ids(job.source, job.build.limit), job.build.unit_size), work, records=True)
    return engine.finish_records(out, "semantic", prov)


def build_pair_caption(job: Job, semantic_dir: Path, out: Path, name: str = "pair_caption") -> dict | None:
    """Pairs -> LLM filter -> pair captions; unpaired and filtered-out images -> single captions."""
    descriptors = {r["id"]: r["semantic"] for r in engine.read_records(semantic_dir)}
    seed = job.annotator.cfg.seed
    pairs, unpaired = pair_images(descriptors, job.build.pairs_per_image, seed)
    prov = job.provenance(
        "pair_caption",
        ["semantic", "pair_filter", "pair_caption", "caption"],
        pairs_per_image=job.build.pairs_per_image,
    )
    half = max(1, job.build.unit_size // 2)
    units = [{"pairs": p, "singles": []} for p in chunks([list(p) for p in pairs], half)]
    units += [{"pairs": [], "singles": s} for s in chunks(unpaired, job.build.unit_size)]

    def work(unit: dict, rejects: RejectLog) -> list[Sample]:
        ids = [i for p in unit["pairs"] for i in p] + unit["singles"]
        got = load_samples(job.source, ids, rejects)
        pairs = [(a, b) for a, b in unit["pairs"] if a in got and b in got]
        # An image that does not decode is rejected; its partner goes to the single-caption branch.
        singles = [i for i in ids if i in got and i not in {x for p in pairs for x in p}]
        requests = [_pair_request("pair_filter", parse_filter, got[a], got[b]) for a, b in pairs]
        filtered = job.annotator.annotate(requests, "pair filter")
        kept = []
        for (a, b), r in zip(pairs, filtered):
            if r.error:
                _reject(rejects, job.source, r)
            elif r.value[0]:
                kept.append((a, b))
                continue
            else:
                rejects.add(f"pair {r.key}", "pair_filtered", r.value[1])
            singles += [a, b]  # Figure 3: images without a usable pair go to the single-caption branch
        captions = job.annotator.annotate(
            [_pair_request("pair_caption", parse_caption, got[a], got[b]) for a, b in kept],
            "pair captions",
        )
        out_samples = []
        for (a, b), r in zip(kept, captions):
            if r.error:
                _reject(rejects, job.source, r)
                singles += [a, b]
                continue
            out_samples.append(
                _joint_sample(name, "pair", f"{name}-{a}-{b}", [got[a], got[b]], r.value, prov)
            )
        single = [got[i] for i in singles]
        for r in job.annotator.annotate(_caption_requests(job.source, single, rejects), "single captions"):
            if r.error:
                _reject(rejects, job.source, r)
            else:
                out_samples.append(_caption_sample(name, got[r.key], r.value, prov))
        return out_samples

    job.run(out, units, work)
    return job.finish(
        out, name, prov, {"pairing": {"candidate_pairs": len(pairs), "unpaired": len(unpaired)}}
    )


def _joint_sample(name: str, kind: str, id: str, members: list[Sample], text: str, prov: dict) -> Sample:
    """A sample about several input images (a pair, an interleaved group), one image from each."""
    return Sample(
        id=id,
        kind=kind,
        source=name,
        images=[m.images[0] for m in members],
        text=text,
        provenance={**prov, "from": [m.id for m in members]},
        metadata=scenes(members),
    )


def _pair_request(prompt: str, parse, a: Sample, b: Sample) -> Request:
    images = [a.images[0], b.images[0]]
    return Request(f"{a.id}+{b.id}", PROMPTS[prompt], parse, images=images, context=scenes([a, b]))


def build_interleaved(job: Job, semantic_dir: Path, out: Path, name: str = "interleaved") -> dict | None:
    """One long description per group of related images, each image placed in the text (A.3)."""
    descriptors = {r["id"]: r["semantic"] for r in engine.read_records(semantic_dir)}
    b = job.build
    groups, left = group_images(descriptors, b.group_min, b.group_max, job.annotator.cfg.seed)
    prov = job.provenance("interleaved", ["semantic", "interleaved"], group_size=[b.group_min, b.group_max])

    def work(unit: list[list[str]], rejects: RejectLog) -> list[Sample]:
        got = load_samples(job.source, [i for g in unit for i in g], rejects)
        for g in [g for g in unit if not all(i in got for i in g)]:
            rejects.add(f"group {'+'.join(g)}", "group_incomplete", "a member image does not decode")
        unit = [g for g in unit if all(i in got for i in g)]
        requests = [
            Request(
                "+".join(g),
                PROMPTS["interleaved"],
                parse_interleaved(len(g)),
                fields={"n": len(g)},
                images=[got[i].images[0] for i in g],
                context=scenes([got[i] for i in g]),
            )
            for g in unit
        ]
        out_samples = []
        for g, r in zip(unit, job.annotator.annotate(requests, "interleaved")):
            if r.error:
                _reject(rejects, job.source, r)
                continue
            members = [got[i] for i in g]
            out_samples.append(
                _joint_sample(name, "interleaved", f"{name}-{g[0]}-{len(g)}", members, r.value, prov)
            )
        return out_samples

    job.run(out, chunks(groups, max(1, b.unit_size // b.group_max)), work)
    return job.finish(out, name, prov, {"grouping": {"groups": len(groups), "ungrouped": len(left)}})
