"""The language of the world: captions, question/answer pairs and prose, all read off scene graphs.

Every generator returns text whose facts hold in the scene graph it was given (tests check this).
Question generators return `QA(qtype, question, answer)`; the qtype names the template, which the
benchmarks use for options and the blind baseline uses for answer priors.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from mmkd.world import encyclopedia
from mmkd.world.encyclopedia import plural
from mmkd.world.scene import (
    KINDS,
    RELATIONS,
    THEMES,
    Scene,
    SceneObject,
    WorldConfig,
    sample_scene,
    scene_rng,
)

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass(frozen=True)
class QA:
    qtype: str
    question: str
    answer: str


def object_phrase(obj: SceneObject, size: bool, colour: bool, position: bool) -> str:
    """'a large red ball at the top left' with any of the three attributes left out."""
    words = [w for w, keep in ((obj.size, size), (obj.colour, colour)) if keep] + [obj.kind]
    phrase = "a " + " ".join(words)
    return phrase + (f" at the {obj.position}" if position else "")


def join_phrases(phrases: list[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def chart_phrase(scene: Scene) -> str:
    bars = join_phrases([f"a {c} bar of {v}" for c, v in scene.bars])
    return f"a bar chart with {bars}"


def alt_text(scene: Scene, rng: random.Random) -> str:
    """Caption0: a short, partial, AltText-like caption (mentions some objects, some attributes)."""
    if scene.layout == "sign":
        return rng.choice([f"a sign that says {scene.word}", f"{scene.word} sign", "a sign"])
    if scene.layout == "chart":
        return rng.choice(["a bar chart", f"a bar chart with {len(scene.bars)} bars", chart_phrase(scene)])
    k = rng.randint(1, min(2, len(scene.objects)))
    chosen = rng.sample(scene.objects, k)
    phrases = [object_phrase(o, rng.random() < 0.3, rng.random() < 0.6, rng.random() < 0.3) for o in chosen]
    body = join_phrases(phrases)
    prefix = rng.choice(["", "", "a photo of ", "picture of "])
    suffix = rng.choice(["", f" in a {scene.theme}"])
    return prefix + body + suffix


def dense_caption(scene: Scene, rng: random.Random) -> str:
    """A complete description: every object with size, colour and position (reference captions)."""
    if scene.layout == "sign":
        return f"a white sign that says {scene.word} in a {scene.theme}"
    if scene.layout == "chart":
        return chart_phrase(scene)
    objects = list(scene.objects)
    if rng.random() < 0.5:
        rng.shuffle(objects)
    body = join_phrases([object_phrase(o, True, True, True) for o in objects])
    return rng.choice([f"a {scene.theme} with {body}", f"{body} in a {scene.theme}"])


def coco_caption(scene: Scene, rng: random.Random) -> str:
    """A short COCO-style caption of an object scene (5-25 words, seed 003 F.4): the setting and up to
    three objects by colour and kind; what it leaves out, the detection annotations carry."""
    objects = rng.sample(scene.objects, min(3, len(scene.objects)))
    body = join_phrases([object_phrase(o, False, True, False) for o in objects])
    more = " and other things" if len(objects) < len(scene.objects) else ""
    return rng.choice([f"a {scene.theme} with {body}{more}", f"{body}{more} in a {scene.theme}"])


def _unique_objects(scene: Scene) -> list[tuple[SceneObject, str]]:
    return [(o, ref) for o in scene.objects if (ref := scene.reference(o)) is not None]


def q_exist(scene: Scene, rng: random.Random) -> QA | None:
    present = sorted(scene.kinds())
    absent = [k for k in KINDS if k not in present]
    if rng.random() < 0.5 or not absent:
        return QA("exist", f"Is there a {rng.choice(present)} in the image?", "yes")
    return QA("exist", f"Is there a {rng.choice(absent)} in the image?", "no")


def q_colour(scene: Scene, rng: random.Random) -> QA | None:
    objs = [o for o in scene.objects if scene.count(o.kind) == 1]
    if not objs:
        return None
    o = rng.choice(objs)
    return QA("colour", f"What colour is the {o.kind}?", o.colour)


def q_size(scene: Scene, rng: random.Random) -> QA | None:
    objs = _unique_objects(scene)
    if not objs:
        return None
    o, ref = rng.choice(objs)
    return QA("size", f"What size is the {ref}?", o.size)


def q_count(scene: Scene, rng: random.Random) -> QA | None:
    kind = rng.choice(sorted(scene.kinds())) if rng.random() < 0.8 else rng.choice(KINDS)
    return QA("count", f"How many {plural(kind)} are there?", str(scene.count(kind)))


def q_count_all(scene: Scene, rng: random.Random) -> QA | None:
    return QA("count_all", "How many objects are there?", str(len(scene.objects)))


def q_where(scene: Scene, rng: random.Random) -> QA | None:
    objs = _unique_objects(scene)
    if not objs:
        return None
    o, ref = rng.choice(objs)
    return QA("where", f"Where is the {ref}?", o.position)


def q_what_at(scene: Scene, rng: random.Random) -> QA | None:
    o = rng.choice(scene.objects)
    return QA("what_at", f"What is at the {o.position}?", o.kind)


def q_relation(scene: Scene, rng: random.Random) -> QA | None:
    objs = _unique_objects(scene)
    if len(objs) < 2:
        return None
    (a, ra), (b, rb) = rng.sample(objs, 2)
    want = rng.random() < 0.5
    rels = [r for r in RELATIONS if scene.relation_holds(a, r, b) == want] or list(RELATIONS)
    rel = rng.choice(rels)
    answer = "yes" if scene.relation_holds(a, rel, b) else "no"
    return QA("relation", f"Is the {ra} {rel} the {rb}?", answer)


def q_theme(scene: Scene, rng: random.Random) -> QA | None:
    return QA("theme", "Where was this picture taken?", scene.theme)


def q_chart_value(scene: Scene, rng: random.Random) -> QA | None:
    colour, value = rng.choice(scene.bars)
    return QA("chart_value", f"What is the value of the {colour} bar?", str(value))


def q_chart_max(scene: Scene, rng: random.Random) -> QA | None:
    top = max(v for _, v in scene.bars)
    winners = [c for c, v in scene.bars if v == top]
    if len(winners) != 1:
        return None
    return QA("chart_max", "Which bar is the tallest?", winners[0])


def q_ocr(scene: Scene, rng: random.Random) -> QA | None:
    return QA("ocr", "What word is written on the sign?", str(scene.word))


def box_text(box: tuple[int, int, int, int]) -> str:
    return "[" + ", ".join(str(v) for v in box) + "]"


def q_ground(image_size: int) -> Callable[[Scene, random.Random], QA | None]:
    """Grounding needs pixel coordinates, so it is built for one image size."""

    def ask(scene: Scene, rng: random.Random) -> QA | None:
        objs = _unique_objects(scene)
        if not objs:
            return None
        o, ref = rng.choice(objs)
        if rng.random() < 0.5:
            return QA("ground_box", f"Give the box of the {ref}.", box_text(o.box(image_size)))
        return QA("ground_name", f"What is in the box {box_text(o.box(image_size))}?", o.kind)

    return ask


OBJECT_QUESTIONS = (q_exist, q_colour, q_size, q_count, q_count_all, q_where, q_what_at, q_relation, q_theme)
CHART_QUESTIONS = (q_chart_value, q_chart_max)


def ask_many(scene: Scene, rng: random.Random, generators, n: int) -> list[QA]:
    """Up to `n` Q/A pairs from distinct question types (and never the same question twice)."""
    out: list[QA] = []
    for gen in rng.sample(list(generators), len(generators)):
        qa = gen(scene, rng)
        if qa is not None and all(qa.question != o.question for o in out):
            out.append(qa)
        if len(out) == n:
            break
    return out


def scene_prose(scene: Scene, rng: random.Random) -> str:
    """A text-only story about a scene: relations and counts in words, no image needed."""
    sentences = [
        f"In the {scene.theme} there {'is' if len(scene.objects) == 1 else 'are'} "
        f"{NUMBER_WORDS[len(scene.objects)]} {'object' if len(scene.objects) == 1 else 'objects'}."
    ]
    for o in scene.objects:
        sentences.append(f"The {o.colour} {o.kind} is {o.size} and sits at the {o.position}.")
    rels = scene.relations()
    for i, rel, j in rng.sample(rels, min(2, len(rels))):
        a, b = scene.objects[i], scene.objects[j]
        sentences.append(f"The {a.colour} {a.kind} is {rel} the {b.colour} {b.kind}.")
    return " ".join(sentences)


def theme_prose(theme: str, rng: random.Random) -> str:
    pool = [plural(k) for k in THEMES[theme][1]]
    rng.shuffle(pool)
    return f"A {theme} often has {join_phrases(pool)}. " + rng.choice(
        [f"Many people like to visit a {theme}.", f"Every {theme} looks a little different."]
    )


def text_document(cfg: WorldConfig, split: str, index: int) -> tuple[str, str]:
    """(text, genre) of the pure-text document at `index` of `split`: an encyclopedia passage (30%), a
    quiz sheet (10%), a story about a scene (40%) or prose about a theme (20%): the `text` source's
    documents, and the world text LM's corpus on a split of its own."""
    rng = scene_rng(cfg, split, index)
    u = rng.random()
    if u < 0.3:
        return encyclopedia.passage(rng, rng.choice(KINDS)), "encyclopedia"
    if u < 0.4:
        return encyclopedia.quiz(rng), "quiz"
    if u < 0.8:
        return scene_prose(sample_scene(cfg, split, index, layout="objects"), rng), "story"
    return theme_prose(rng.choice(sorted(THEMES)), rng), "theme"
