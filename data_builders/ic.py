"""IC: image-caption data selected by noun-phrase frequency and re-captioned like MMGIC (seed 003 G).

  select    LLaVA's rule over every caption's noun phrases (data_builders/noun_phrases.py): phrases
            seen fewer than `build.phrase_min_count` times are skipped; from the rarest remaining
            phrase up, the captions holding it join the selection, at most `build.phrase_cap` of them
            per phrase (a seeded draw). The phrase counts before and after go into the manifest (Fig. 13).
  caption   caption synthesis (F.4) for each selected image: the annotator writes candidate captions,
            a scorer you can swap (data_builders/caption_scorers.py) ranks them, those of 5-25 words
            scoring >= `build.caption_min_score` qualify and the best one is taken; with none, another
            attempt, up to `build.caption_attempts`; then the best-scoring candidate of all.

  fuse      G.3's "Detailed caption": the annotator merges each image's web caption (`caption_origin`)
            with its synthesized one (CapsFusion; prompt `capsfusion`, `build.detailed_captions`).

IC samples are caption-only documents in G.3's template ("Image: [IMG] Caption: ... Detailed caption:
..."). `ic_part` (Table 2's IC-PART) is a seeded subset of IC with as many images as MMGIC has documents.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from mmkd import mmgic_template
from mmkd.annotators import Request
from mmkd.data_builders.annotated import Job, chunks, load_samples, scenes
from mmkd.data_builders.caption_scorers import make_scorer
from mmkd.data_builders.noun_phrases import extractor
from mmkd.data_builders.prompts import PROMPTS, parse_candidates, parse_caption
from mmkd.data_builders.rejects import RejectLog
from mmkd.schema import IMAGE_MARKER, Sample


def select(
    phrases: dict[str, list[str]], min_count: int, cap: int, seed: int | str
) -> tuple[list[str], dict[str, Any]]:
    """The ids LLaVA's rule keeps, in input order, and the phrase statistics before and after."""
    holders: dict[str, list[str]] = defaultdict(list)
    for i, ps in phrases.items():
        for p in dict.fromkeys(ps):
            holders[p].append(i)
    frequent = sorted(
        (p for p, ids in holders.items() if len(ids) >= min_count), key=lambda p: (len(holders[p]), p)
    )
    kept: set[str] = set()
    for p in frequent:
        ids = holders[p]
        if len(ids) > cap:
            ids = random.Random(f"{seed}/{p}").sample(ids, cap)
        kept.update(ids)
    order = [i for i in phrases if i in kept]
    after = Counter(p for i in order for p in dict.fromkeys(phrases[i]))
    before = Counter({p: len(ids) for p, ids in holders.items()})
    return order, {"before": _summary(before, len(phrases)), "after": _summary(after, len(order))}


def _summary(counts: Counter, samples: int) -> dict[str, Any]:
    return {
        "samples": samples,
        "unique_phrases": len(counts),
        "phrase_mentions": sum(counts.values()),
        "most_common": counts.most_common(10),
    }


def qualifies(caption: str, score: float, build: Any) -> bool:
    """F.4 step 3: 5-25 words and a similarity of at least the threshold."""
    return build.caption_min_words <= len(caption.split()) <= build.caption_max_words and (
        score >= build.caption_min_score
    )


def synthesize(job: Job, samples: list[Sample], rejects: RejectLog) -> dict[str, tuple[str, float, int]]:
    """id -> (caption, score, attempts) by F.4's loop; a sample whose every attempt failed is rejected."""
    b, score = job.build, make_scorer(job.build.caption_scorer)
    best: dict[str, tuple[float, str]] = {}
    chosen: dict[str, tuple[str, float, int]] = {}
    errors: dict[str, tuple[str, str]] = {}
    pending = list(samples)
    for attempt in range(1, b.caption_attempts + 1):
        fields = {"n": b.caption_candidates, "attempt": attempt}
        requests = [
            Request(
                f"{s.id}#{attempt}",
                PROMPTS["caption_candidates"],
                parse_candidates,
                fields,
                images=s.images[:1],
                context=scenes([s]),
            )
            for s in pending
        ]
        by_id = {s.id: s for s in pending}
        for r in job.annotator.annotate(requests, f"IC captions (attempt {attempt})"):
            sid = r.key.rsplit("#", 1)[0]
            if r.error:
                errors[sid] = (r.error, r.detail)
                continue
            scored = list(zip(score(by_id[sid], r.value), r.value, strict=True))
            best[sid] = max([best[sid], *scored] if sid in best else scored)
            ok = [(sc, c) for sc, c in scored if qualifies(c, sc, b)]
            if ok:
                sc, c = max(ok)
                chosen[sid] = (c, sc, attempt)
        pending = [s for s in pending if s.id not in chosen]
        if not pending:
            break
    for s in pending:
        if s.id in best:  # F.4 step 4: no candidate qualified; the best-scoring one
            chosen[s.id] = (best[s.id][1], best[s.id][0], b.caption_attempts)
        else:
            reason, detail = errors.get(s.id, ("no_candidates", ""))
            rejects.add(f"{job.source.root}: {s.id}", reason, detail)
    return chosen


def fuse(job: Job, samples: list[Sample], captions: dict[str, str], rejects: RejectLog) -> dict[str, str]:
    """id -> G.3's detailed caption: the sample's web caption and its synthesized caption merged by
    the annotator; a sample whose merge failed is rejected with the reason."""
    requests = [
        Request(
            s.id,
            PROMPTS["capsfusion"],
            parse_caption,
            {"origin": s.text, "synthetic": captions[s.id]},
            context=scenes([s]),
        )
        for s in samples
    ]
    fused = {}
    for r in job.annotator.annotate(requests, "IC detailed captions"):
        if r.error:
            rejects.add(f"{job.source.root}: {r.key}", r.error, r.detail)
        else:
            fused[r.key] = r.value
    return fused


def build_ic(job: Job, out: Path, name: str = "ic") -> dict | None:
    """Select by noun phrases, then re-caption every selected image."""
    b = job.build
    texts = {s.id: s.text for s in job.source.iter(images=False) if s.kind == "caption"}
    if b.limit:
        texts = dict(list(texts.items())[: b.limit])
    phrases = dict(zip(texts, extractor(b.noun_phrases)(texts.values()), strict=True))
    ids, report = select(phrases, b.phrase_min_count, b.phrase_cap, job.annotator.cfg.seed)
    prov = job.provenance("ic", prompts(b), selection=settings(b), detailed_captions=b.detailed_captions)

    def work(unit: list[str], rejects: RejectLog) -> list[Sample]:
        got = load_samples(job.source, unit, rejects)
        samples = [got[i] for i in unit if i in got]
        captions = synthesize(job, samples, rejects)
        samples = [s for s in samples if s.id in captions]
        detailed = {}
        if b.detailed_captions:
            detailed = fuse(job, samples, {i: c[0] for i, c in captions.items()}, rejects)
            samples = [s for s in samples if s.id in detailed]
        return [_ic_sample(name, s, captions[s.id], detailed.get(s.id), prov) for s in samples]

    job.run(out, chunks(ids, b.unit_size), work)
    return job.finish(out, name, prov, {"noun_phrases": report})


def _ic_sample(
    name: str, src: Sample, caption: tuple[str, float, int], detailed: str | None, prov: dict[str, Any]
) -> Sample:
    """A caption-only document in G.3's template, with where its caption came from."""
    doc = {"caption": caption[0], "header": False} | ({"detailed_caption": detailed} if detailed else {})
    return Sample(
        id=f"{name}-{src.id}",
        kind="mmgic",
        source=name,
        images=src.images[:1],
        text=mmgic_template.full_text(doc, IMAGE_MARKER),
        provenance={**prov, "from": [src.id]},
        metadata={
            "mmgic": doc,
            "caption_origin": src.text,
            "caption_score": round(caption[1], 4),
            "caption_attempts": caption[2],
            **{k: v for k, v in src.metadata.items() if k == "scene"},
        },
    )


IC_VERSION = 2  # 2: caption-only documents in G.3's template (1: plain captions)


def prompts(b: Any) -> list[str]:
    """The prompts an IC build sends: candidates, and the merge when it writes detailed captions."""
    return ["caption_candidates", *(["capsfusion"] if b.detailed_captions else [])]


def settings(b: Any) -> dict[str, Any]:
    """The build settings IC's content depends on (part of its directory's hash and provenance)."""
    keys = ("noun_phrases", "phrase_min_count", "phrase_cap", "caption_scorer", "caption_candidates")
    keys += ("caption_attempts", "caption_min_score", "caption_min_words", "caption_max_words")
    return {"version": IC_VERSION, **{k: getattr(b, k) for k in keys}}


def build_subset(job: Job, out: Path, n: int, name: str) -> dict | None:
    """`n` samples of the input, drawn by a seeded hash of their ids (IC-PART)."""
    seed = job.annotator.cfg.seed
    ids = [s.id for s in job.source.iter(images=False)]
    rank = sorted(ids, key=lambda i: hashlib.sha256(f"{seed}/{i}".encode()).hexdigest())
    keep = set(rank[:n])
    prov = {"builder": "subset", "of": str(job.source.root), "n": n, "seed": seed}

    def work(unit: list[str], rejects: RejectLog) -> list[Sample]:
        got = load_samples(job.source, unit, rejects)
        return [
            Sample(
                id=f"{name}-{s.id}",
                kind=s.kind,
                source=name,
                caption_tag=s.caption_tag,
                images=s.images,
                text=s.text,
                provenance={**s.provenance, "subset": prov},
                metadata=s.metadata,
            )
            for i in unit
            if (s := got.get(i)) is not None
        ]

    job.run(out, chunks([i for i in ids if i in keep], job.build.unit_size), work)
    return job.finish(out, name, prov)
