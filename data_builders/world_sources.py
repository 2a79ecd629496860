"""Build the knowledge world's sources as datasets: Caption0, VQA0, pure text, other, detection.

Each builder is a pure function of the world config, so a rebuild gives identical shards (same
content hash). `python launch/build.py` builds all of them; training builds what a recipe needs.

  caption0   short, partial AltText-like captions (seed 000 "Caption0")
  vqa0       template Q/A turns on the scene graph (seed 000 "VQA0"); chart scenes included
  text       encyclopedia passages, quiz sheets, text-only scene stories and theme prose
  other      OCR on signs and grounding (boxes in pixels) (seed 000 "Other": OCR, grounding)
  instruct   the common instruction stage's data: every world benchmark's question format on images
             of its own split, the dense captions captioning is scored against, and the knowledge
             questions of the facts the benchmarks do not ask (built when a recipe reads it)
  detection  COCO-instances JSON with VG-style attributes and relations, COCO captions JSON and PNGs
             (the MMGIC builder's input, read through the real detection adapter)
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from tqdm import tqdm

from mmkd.data_builders import scale_pool as pool
from mmkd.schema import Sample, Turn
from mmkd.shards import ShardWriter, write_json_atomic
from mmkd.world import alttext as world_alttext
from mmkd.world import encyclopedia, language
from mmkd.world.render import render
from mmkd.world.scene import KINDS, WorldConfig, sample_scene, scene_rng

BUILDER_VERSION = 3  # 3: quiz sheets among the text documents


def _objects_or_chart(cfg: WorldConfig, split: str, i: int):
    """VQA0 images: object scenes and charts (signs belong to the OCR part of 'other')."""
    scene = sample_scene(cfg, split, i)
    return sample_scene(cfg, split, i, layout="objects") if scene.layout == "sign" else scene


def caption0(cfg: WorldConfig, n: int, writer: ShardWriter, turns: int) -> None:
    captions: Counter = Counter()
    for i in _progress(n, "caption0"):
        scene = sample_scene(cfg, "caption0", i)
        text = language.alt_text(scene, scene_rng(cfg, "caption0-text", i))
        captions[text] += 1
        writer.write(_caption_sample("caption0", "Caption0", i, scene, text, cfg.image_size))
    writer.extra["most_common_caption"] = captions.most_common(1)[0][0]


def alttext(cfg: WorldConfig, n: int, writer: ShardWriter, turns: int) -> None:
    """Web-like AltText (seed 002; mmkd/world/alttext.py), the input of the caption-format builders."""
    entities: Counter = Counter()
    for i in _progress(n, "alttext"):
        scene = sample_scene(cfg, "alttext", i)
        alt = world_alttext.alt_text(scene, scene_rng(cfg, "alttext-text", i))
        entities.update(alt.entities)
        sample = _caption_sample("alttext", "AltText", i, scene, alt.text, cfg.image_size)
        sample.metadata["entities"] = list(alt.entities)
        writer.write(sample)
    writer.extra["unique_entities"] = len(entities)


def scale_pool(cfg: WorldConfig, n: int, writer: ShardWriter, turns: int) -> None:
    """SCALE's instruction-tuning pool with planted defects (data_builders/scale_pool.py)."""
    defects: Counter = Counter()
    for i in _progress(n, "scale_pool"):
        sample = pool.pool_sample(cfg, i)
        defects[sample.metadata["defect"]["kind"]] += 1
        writer.write(sample)
    writer.extra["defects"] = dict(sorted(defects.items()))


def _caption_sample(source: str, tag: str, i: int, scene, text: str, image_size: int) -> Sample:
    return Sample(
        id=f"{source}-{i:07d}",
        kind="caption",
        source=source,
        caption_tag=tag,
        images=[render(scene, image_size)],
        text=text,
        metadata={"scene": scene.to_json()},
    )


def vqa0(cfg: WorldConfig, n: int, writer: ShardWriter, turns: int) -> None:
    prior: dict[str, Counter] = {}
    for i in _progress(n, "vqa0"):
        scene = _objects_or_chart(cfg, "vqa0", i)
        rng = scene_rng(cfg, "vqa0-qa", i)
        gens = language.CHART_QUESTIONS if scene.layout == "chart" else language.OBJECT_QUESTIONS
        qas = language.ask_many(scene, rng, gens, turns)
        writer.write(_qa_sample("vqa", "vqa0", i, scene, qas, cfg.image_size, prior))
    writer.extra["answer_prior"] = {q: dict(c) for q, c in sorted(prior.items())}


def text(cfg: WorldConfig, n: int, writer: ShardWriter, turns: int) -> None:
    for i in _progress(n, "text"):
        body, genre = language.text_document(cfg, "text", i)
        writer.write(
            Sample(id=f"text-{i:07d}", kind="text", source="text", text=body, metadata={"genre": genre})
        )


def other(cfg: WorldConfig, n: int, writer: ShardWriter, turns: int) -> None:
    prior: dict[str, Counter] = {}
    ground = language.q_ground(cfg.image_size)
    for i in _progress(n, "other"):
        rng = scene_rng(cfg, "other-qa", i)
        if i % 2 == 0:
            scene = sample_scene(cfg, "other", i, layout="sign")
            qas = [language.q_ocr(scene, rng)]
        else:
            scene = sample_scene(cfg, "other", i, layout="objects")
            qas = [qa for qa in (ground(scene, rng), ground(scene, rng)) if qa is not None]
            qas = list({qa.question: qa for qa in qas}.values())
            if not qas:
                continue  # no uniquely nameable object to ground
        writer.write(_qa_sample("other", "other", i, scene, qas, cfg.image_size, prior))
    writer.extra["answer_prior"] = {q: dict(c) for q, c in sorted(prior.items())}


def _qa_sample(kind: str, source: str, i: int, scene, qas: list, image_size: int, prior: dict) -> Sample:
    """A Q/A sample of one rendered scene (or of none: a text-only conversation); counts each answer
    into `prior` (qtype -> answer -> n)."""
    for qa in qas:
        prior.setdefault(qa.qtype, Counter())[qa.answer] += 1
    return Sample(
        id=f"{source}-{i:07d}",
        kind=kind,
        source=source,
        images=[] if scene is None else [render(scene, image_size)],
        turns=[Turn(qa.question, qa.answer) for qa in qas],
        metadata={"qtypes": [qa.qtype for qa in qas]} | ({} if scene is None else {"scene": scene.to_json()}),
    )


# The instruction data's cycle of 20 samples, so every prefix of the source holds each part in proportion.
INSTRUCT_CYCLE = (
    ("objects",) * 7 + ("chart",) * 2 + ("sign",) * 2 + ("knowledge",) * 3 + ("knowledge_in_image",) * 2
) + ("caption",) * 4
INSTRUCTION_FACTS = tuple(
    (kind, attribute)
    for kind in KINDS
    for attribute in encyclopedia.ATTRIBUTES
    if not encyclopedia.benchmark_fact(kind, attribute)
)


def instruct(cfg: WorldConfig, n: int, writer: ShardWriter, turns: int) -> None:
    """The common instruction stage's data (the instrument protocol, docs/protocol.md): the formats
    the benchmarks ask in, on training compositions of its own split, never a benchmark item.
    Object scenes hold 1..max_objects objects evenly, as the counting benchmark's answers are even;
    knowledge is asked only for INSTRUCTION_FACTS, the half of the facts the benchmarks never ask."""
    prior: dict[str, Counter] = {}
    parts: Counter = Counter()
    for i in _progress(n, "instruct"):
        part = INSTRUCT_CYCLE[i % len(INSTRUCT_CYCLE)]
        parts[part] += 1
        rng = scene_rng(cfg, "instruct-qa", i)
        if part == "knowledge":
            facts = rng.sample(INSTRUCTION_FACTS, rng.randint(1, min(4, turns)))
            qas = [_fact_qa(kind, attribute, image=False) for kind, attribute in facts]
            writer.write(_qa_sample("vqa", "instruct", i, None, qas, cfg.image_size, prior))
            continue
        if part == "knowledge_in_image":  # every kind has two facts the benchmarks do not ask
            scene = sample_scene(cfg, "instruct", i, layout="objects", n_objects=1)
            kind = scene.objects[0].kind
            attribute = rng.choice([a for k, a in INSTRUCTION_FACTS if k == kind])
            qas = [_fact_qa(kind, attribute, image=True)]
            writer.write(_qa_sample("vqa", "instruct", i, scene, qas, cfg.image_size, prior))
            continue
        layout = "objects" if part == "caption" else part
        n_objects = 1 + i // len(INSTRUCT_CYCLE) % cfg.max_objects if layout == "objects" else None
        scene = sample_scene(cfg, "instruct", i, layout=layout, n_objects=n_objects)
        if part == "caption":
            text = language.dense_caption(scene, rng)
            writer.write(_caption_sample("instruct", "dense", i, scene, text, cfg.image_size))
            continue
        gens = {"objects": language.OBJECT_QUESTIONS, "chart": language.CHART_QUESTIONS}
        qas = language.ask_many(scene, rng, gens.get(part, (language.q_ocr,)), turns)
        writer.write(_qa_sample("vqa", "instruct", i, scene, qas, cfg.image_size, prior))
    writer.extra["answer_prior"] = {q: dict(c) for q, c in sorted(prior.items())}
    writer.extra["parts"] = dict(sorted(parts.items()))


def _fact_qa(kind: str, attribute: str, image: bool) -> language.QA:
    """A knowledge question as the benchmarks word it, about a named or a pictured object."""
    value = encyclopedia.FACTS[kind][attribute]
    if image:
        return language.QA(f"kii_{attribute}", encyclopedia.IMAGE_QUESTIONS[attribute], value)
    return language.QA(f"knowledge_{attribute}", encyclopedia.QUESTIONS[attribute].format(kind=kind), value)


SOURCES: dict[str, Callable[[WorldConfig, int, ShardWriter, int], None]] = {
    "caption0": caption0,
    "vqa0": vqa0,
    "text": text,
    "other": other,
}
# Built only when something reads them (data_builders/sources.py), never into the tokenizer's corpus.
ON_REQUEST: dict[str, Callable[[WorldConfig, int, ShardWriter, int], None]] = {
    "alttext": alttext,
    "scale_pool": scale_pool,
    "instruct": instruct,
}


def _progress(n: int, name: str) -> Iterator[int]:
    return iter(tqdm(range(n), desc=f"build {name}", unit="sample", leave=False, mininterval=1.0))


def provenance(cfg: WorldConfig, source: str, n: int, turns: int) -> dict:
    return {
        "builder": f"world/{source}",
        "version": BUILDER_VERSION,
        "world": cfg.identity(),
        "n": n,
        "vqa_turns": turns,
    }


def build_source(
    cfg: WorldConfig,
    source: str,
    n: int,
    out_dir: Path,
    samples_per_shard: int,
    turns: int,
    patch_size: int = 8,
) -> dict:
    """Build one world source into `out_dir` (shards + manifest); returns the manifest."""
    with ShardWriter(
        out_dir,
        source,
        provenance(cfg, source, n, turns),
        samples_per_shard=samples_per_shard,
        image_size=cfg.image_size,
        tokens_per_image=(cfg.image_size // patch_size) ** 2,
    ) as w:
        {**SOURCES, **ON_REQUEST}[source](cfg, n, w, turns)
    return json.loads((out_dir / "manifest.json").read_text())


def build_detection(cfg: WorldConfig, n: int, out_dir: Path) -> Path:
    """`n` object scenes as real detection data: COCO instances (`instances.json`, boxes with VG-style
    attribute labels, VG-style relations by annotation id), COCO captions (`captions.json`, one short
    caption per image) and the images; returns the instances file."""
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    categories = [{"id": i + 1, "name": k} for i, k in enumerate(KINDS)]
    cat_id = {c["name"]: c["id"] for c in categories}
    images, annotations, relations, captions = [], [], [], []
    for i in _progress(n, "detection"):
        scene = sample_scene(cfg, "detection", i, layout="objects")
        file_name = f"{scene.id}.png"
        render(scene, cfg.image_size).save(images_dir / file_name)
        image = {"id": i, "file_name": file_name, "width": cfg.image_size, "height": cfg.image_size}
        images.append(image)
        text = language.coco_caption(scene, scene_rng(cfg, "detection-caption", i))
        captions.append({"id": i, "image_id": i, "caption": text})
        first = len(annotations)
        for o in scene.objects:
            x0, y0, x1, y1 = o.box(cfg.image_size)
            annotations.append(
                {
                    "id": len(annotations),
                    "image_id": i,
                    "category_id": cat_id[o.kind],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                    "attributes": [o.colour, o.size],
                }
            )
        for a, rel, b in scene.relations():
            relations.append(
                {"image_id": i, "subject_id": first + a, "predicate": rel, "object_id": first + b}
            )
    info = provenance(cfg, "detection", n, 0)
    write_json_atomic(out_dir / "captions.json", {"info": info, "images": images, "annotations": captions})
    path = out_dir / "instances.json"
    write_json_atomic(
        path,
        {
            "info": info,
            "images": images,
            "annotations": annotations,
            "categories": categories,
            "relations": relations,
        },
    )
    return path


def corpus(root: Path, sources: list[str]) -> Iterator[str]:
    """All text of the given built sources, for training the tokenizer."""
    from mmkd.shards import open_dataset

    for source in sources:
        for s in open_dataset(root / source).iter(images=False):
            yield s.text
            for t in s.turns:
                yield t.question + " " + t.answer
