"""What an ideal annotator writes about world images: Caption1, semantic descriptors, pair captions,
interleaved descriptions. Every sentence is one `mmkd.world.claims.read` can read back.

The structure follows the prompts of seed 000: captions describe every object, its attributes and
spatial relations (A.1.1); pair captions give an overview, describe one material then the other,
then similarities, differences and a conclusion (A.1.4); interleaved descriptions walk through >= 3
images with an `<Image k>` after each part (A.3). Noise knobs drop (omission) or invent
(hallucination) object mentions, for caption-quality studies.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from mmkd.schema import SEMANTIC_FIELDS
from mmkd.world import encyclopedia
from mmkd.world.language import (
    NUMBER_WORDS,
    alt_text,
    chart_phrase,
    coco_caption,
    dense_caption,
    join_phrases,
    object_phrase,
)
from mmkd.world.scene import COLOURS, KINDS, SIZES, Scene, SceneObject, WorldConfig, sample_scene, scene_rng


@dataclass(frozen=True)
class Noise:
    """Annotator imperfection: P(an object is left out), P(an invented object is added) per caption."""

    omission: float = 0.0
    hallucination: float = 0.0

    def validate(self) -> Noise:
        for name in ("omission", "hallucination"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"annotator.noise.{name}={getattr(self, name)}: must be in [0, 1]")
        return self


def _number(n: int) -> str:
    return NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else str(n)


def _seen(scene: Scene, noise: Noise, rng: random.Random) -> list[SceneObject]:
    """The objects an annotator reports: some left out, sometimes one invented in a free cell."""
    kept = [o for o in scene.objects if rng.random() >= noise.omission] or scene.objects[:1]
    free = sorted(set(range(9)) - {o.cell for o in scene.objects})
    if free and rng.random() < noise.hallucination:
        kept = [
            *kept,
            SceneObject(rng.choice(KINDS), rng.choice(sorted(COLOURS)), rng.choice(SIZES), rng.choice(free)),
        ]
    return sorted(kept, key=lambda o: o.cell)


def _unique_ref(objects: list[SceneObject], o: SceneObject) -> str | None:
    same = [x for x in objects if x.kind == o.kind]
    if len(same) == 1:
        return o.kind
    return f"{o.colour} {o.kind}" if sum(x.colour == o.colour for x in same) == 1 else None


def body(scene: Scene, noise: Noise, rng: random.Random, relations: int = 3) -> str:
    """Every (reported) object with its attributes, counts of repeated kinds, up to `relations` relations."""
    if scene.layout == "sign":
        return f"A white sign that says {scene.word} stands in a {scene.theme}."
    if scene.layout == "chart":
        top = max(v for _, v in scene.bars)
        winners = [c for c, v in scene.bars if v == top]
        tallest = f" The {winners[0]} bar is the tallest." if len(winners) == 1 else ""
        return f"{_upper_first(chart_phrase(scene))}.{tallest}"
    objects = _seen(scene, noise, rng)
    n = len(objects)
    mentions = join_phrases([object_phrase(o, True, True, True) for o in objects])
    parts = [f"A {scene.theme} scene with {_number(n)} {'object' if n == 1 else 'objects'}: {mentions}."]
    counts = Counter(o.kind for o in objects)
    if max(counts.values()) > 1:
        parts.append(_there_are(sorted(counts.items())) + ".")
    parts += relation_sentences(objects, relations, rng, _unique_ref)
    return " ".join(parts)


def relation_sentences(
    objects: list[SceneObject],
    k: int,
    rng: random.Random,
    ref: Callable[[list[SceneObject], SceneObject], str | None],
) -> list[str]:
    """Up to `k` grid relations ("The red ball is left of the box.") between objects `ref` names."""
    pairs = [
        (a, b) for i, a in enumerate(objects) for b in objects[i + 1 :] if ref(objects, a) and ref(objects, b)
    ]
    out = []
    for a, b in rng.sample(pairs, min(k, len(pairs))):
        rel = (
            "left of"
            if a.col < b.col
            else "right of"
            if a.col > b.col
            else "above"
            if a.row < b.row
            else "below"
        )
        out.append(f"The {ref(objects, a)} is {rel} the {ref(objects, b)}.")
    return out


def caption(scene: Scene, noise: Noise, rng: random.Random) -> str:
    """Caption1 (seed 000 A.1.1): objective, complete, with spatial relations; no summary at the end."""
    return body(scene, noise, rng)


def semantic(scene: Scene) -> dict:
    """The hierarchical semantic JSON of seed 000 A.1.3, read off the scene graph.

    Type theme is the layout, domain the setting, and the subcategory adds the main kind: images that
    share it are coarsely aligned; colours, counts and positions tell them apart.
    """
    if scene.layout == "sign":
        info = (
            "Text and Signage",
            scene.theme,
            "signs",
            ["sign"],
            ["written word"],
            "shows a word",
            [f"word {scene.word}"],
        )
    elif scene.layout == "chart":
        info = (
            "Chart and Data",
            "statistics",
            "bar charts",
            ["bar chart"],
            ["comparison of values"],
            "compares values",
            [f"{c} bar {v}" for c, v in scene.bars],
        )
    else:
        main = Counter(o.kind for o in scene.objects).most_common(1)[0][0]
        info = (
            "Everyday Scene",
            scene.theme,
            f"{scene.theme} {encyclopedia.plural(main)}",
            sorted(scene.kinds()),
            sorted({encyclopedia.FACTS[k]["family"] for k in scene.kinds()}),
            f"shows {len(scene.objects)} objects in a {scene.theme}",
            [f"{len(scene.objects)} objects", *sorted(f"{o.colour} {o.kind}" for o in scene.objects)],
        )
    out = dict(zip(SEMANTIC_FIELDS, [*info, ["background colour", "exact object offsets"]]))
    return {"hierarchical semantic information": out}


def explainable_to_child(a: Scene, b: Scene) -> tuple[bool, str]:
    """The LLM filter of seed 000 Sec. 4.2.1: a pair passes when it has a shared concept and a contrast."""
    if a.layout != b.layout:
        return False, "the two images show different kinds of content"
    if a.layout == "sign":
        return False, "two signs with different words share no idea a child could follow"
    if a.layout == "chart":
        return True, "both are bar charts, with different bars"
    shared = a.kinds() & b.kinds()
    if not shared:
        return False, "no object is common to both images"
    if a.to_json()["objects"] == b.to_json()["objects"]:
        return False, "the images do not differ"
    return True, f"both show a {sorted(shared)[0]}, in different ways"


def _comparisons(a: Scene, b: Scene) -> list[str]:
    out = []
    if a.theme == b.theme:
        out.append(f"Both materials show a {a.theme}.")
    if a.layout == "chart":
        out.append(
            f"Both materials are bar charts with {_number(len(a.bars))} and {_number(len(b.bars))} bars."
        )
        return out
    for k in sorted(a.kinds() & b.kinds()):
        out.append(f"Both contain a {k}.")
        ca, cb = [o.colour for o in a.objects if o.kind == k], [o.colour for o in b.objects if o.kind == k]
        if len(ca) == len(cb) == 1 and ca != cb:
            out.append(f"The {k} is {ca[0]} in the one material and {cb[0]} in the other.")
    for k in sorted(a.kinds() - b.kinds()):
        out.append(f"A {k} appears only in the one material.")
    for k in sorted(b.kinds() - a.kinds()):
        out.append(f"A {k} appears only in the other material.")
    na, nb = len(a.objects), len(b.objects)
    if na != nb:
        more = "one" if na > nb else "other"
        out.append(
            f"The {more} material has more objects, {_number(max(na, nb))} against {_number(min(na, nb))}."
        )
    return out


def pair_caption(a: Scene, b: Scene, noise: Noise, rng: random.Random) -> str:
    """A joint caption (seed 000 A.1.4): overview, one material, the other, comparison, conclusion."""
    comparisons = _comparisons(a, b)
    parts = [] if a.theme == b.theme else [f"These materials show a {a.theme} and a {b.theme}."]
    parts += comparisons[:1] if a.theme == b.theme else []  # "Both materials show a <theme>."
    # One relation per image keeps a pair caption within the tiny model's 192 tokens.
    parts.append("One of the materials involves " + _lower_first(body(a, noise, rng, relations=1)))
    parts.append("The other material involves " + _lower_first(body(b, noise, rng, relations=1)))
    parts += comparisons[1:] if a.theme == b.theme else comparisons
    shared = sorted(a.kinds() & b.kinds())
    if shared:
        fam = encyclopedia.FACTS[shared[0]]["family"]
        parts.append(f"Together, they show that the same {fam} can look different from one scene to another.")
    else:
        parts.append("Together, they show how the same kind of content can vary.")
    return " ".join(parts)


def interleaved(scenes: list[Scene], noise: Noise, rng: random.Random) -> str:
    """A long description of >= 3 related images with `<Image k>` after the part about image k (A.3)."""
    openers = ["First,", "Next,", "Then,", "After that,", "Finally,"]
    layouts = {s.layout for s in scenes}
    what = {"chart": "bar charts", "sign": "signs"}.get(next(iter(layouts)) if len(layouts) == 1 else "")
    topic = what or f"pictures of a {scenes[0].theme}"
    parts = [f"Here are {_number(len(scenes))} {topic}."]
    for k, s in enumerate(scenes, 1):
        opener = openers[-1] if k == len(scenes) else openers[min(k - 1, len(openers) - 2)]
        parts.append(f"{opener} {_lower_first(body(s, noise, rng))} <Image {k}>")
    totals = Counter(o.kind for s in scenes for o in s.objects)
    for kind, n in sorted(totals.items()):
        parts.append(f"In all, {_lower_first(_there_are([(kind, n)]))} across the pictures.")
    parts.append(f"Overall, each of these {topic} holds its own mix of things.")
    return " ".join(parts)


def _there_are(counts: list[tuple[str, int]]) -> str:
    """'there is one ball and two kites' (the verb agrees with the first count)."""
    phrases = [f"{_number(n)} {k if n == 1 else encyclopedia.plural(k)}" for k, n in counts]
    return ("There is " if counts[0][1] == 1 else "There are ") + join_phrases(phrases)


def _lower_first(s: str) -> str:
    return s[0].lower() + s[1:]


def _upper_first(s: str) -> str:
    return s[0].upper() + s[1:]


def corpus(cfg: WorldConfig, n: int) -> Iterator[str]:
    """Sample annotator language (captions, pair captions, interleaved text) for the shared tokenizer.

    Every recipe trains with one tokenizer; it covers the words annotators use, as a real tokenizer
    would, so annotated sources are not penalised by fragmented tokens.
    """
    for i in range(n):
        rng = scene_rng(cfg, "tokenizer-annotated", i)
        scenes = [sample_scene(cfg, "tokenizer-annotated", 3 * i + k, layout="objects") for k in range(3)]
        yield caption(scenes[0], Noise(), rng)
        yield pair_caption(scenes[0], scenes[1], Noise(), rng)
        if i % 4 == 0:
            yield interleaved(scenes, Noise(), rng)


def caption_candidates(scene: Scene, n: int, noise: Noise, rng: random.Random) -> list[str]:
    """`n` short captions as a captioning model samples them (seed 003 F.4): mostly COCO-style, some as
    short as AltText, each of the objects the annotator reports (so noise makes some of them wrong)."""
    out = []
    for _ in range(n):
        if scene.layout != "objects":
            out.append(dense_caption(scene, rng) if rng.random() < 0.7 else alt_text(scene, rng))
            continue
        seen = Scene(scene.id, scene.theme, scene.layout, _seen(scene, noise, rng))
        out.append(coco_caption(seen, rng) if rng.random() < 0.7 else alt_text(seen, rng))
    return out
