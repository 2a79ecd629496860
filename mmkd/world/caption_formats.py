"""The caption formats of seed 002 (Sec. 3, Fig. 3, Appendix B) as a captioner writes them from the
scene graph: SSC (one short sentence on the main subject), DSC (a few sentences on the objects and
the background), DSC+ (every object, its shape, size, colour, place, relations, the empty regions and
the setting) and AFC (DSC with the AltText's names, places, dates and facts fused in).

Errors are planted per claim at the rate `error`: each mentioned object is, with that probability,
an invented one of a kind the image does not show, and each colour, size and position given for a
real object is, with that probability, one no object of its kind has. A longer caption makes more
claims and so carries more errors at the same rate (the trade-off of the paper's Table A8). Every
sentence is one `mmkd.world.claims.read` reads, so ANA and CapScore are exact on the world.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

from mmkd.world import alttext, claims, encyclopedia
from mmkd.world.descriptions import relation_sentences
from mmkd.world.language import NUMBER_WORDS, chart_phrase, join_phrases, object_phrase
from mmkd.world.scene import COLOURS, KINDS, POSITIONS, SIZES, THEMES, Scene, SceneObject

FORMATS = ("ssc", "dsc", "dsc_plus", "afc")
SHAPES = {
    "ball": "a filled circle",
    "ring": "a circle outline",
    "box": "a filled square",
    "tent": "a triangle",
    "kite": "a diamond",
    "star": "a five-pointed star",
}
BACKGROUNDS = {"garden": "pale green", "bedroom": "cream", "campsite": "pale lavender", "shop": "pale blue"}
assert set(BACKGROUNDS) == set(THEMES)


def _wrong(values, taken: set[str], rng: random.Random, current: str) -> str:
    """A value no object of the kind has (the claim is then false), or `current` if there is none."""
    free = [v for v in values if v not in taken]
    return rng.choice(free) if free else current


def reported(scene: Scene, error: float, rng: random.Random) -> list[tuple[SceneObject, bool]]:
    """The objects as the captioner reports them, each with whether it was invented (see module doc)."""
    out = []
    absent = [k for k in KINDS if k not in scene.kinds()]
    for o in scene.objects:
        if absent and rng.random() < error:
            kind = rng.choice(absent)
            out.append((SceneObject(kind, rng.choice(sorted(COLOURS)), rng.choice(SIZES), o.cell), True))
            continue
        same = [x for x in scene.objects if x.kind == o.kind]
        colour, size, cell = o.colour, o.size, o.cell
        if rng.random() < error:
            colour = _wrong(sorted(COLOURS), {x.colour for x in same}, rng, colour)
        if rng.random() < error:
            size = _wrong(SIZES, {x.size for x in same}, rng, size)
        if rng.random() < error:
            cell = POSITIONS.index(_wrong(POSITIONS, {x.position for x in same}, rng, o.position))
        out.append((replace(o, colour=colour, size=size, cell=cell), False))
    return out


def _number(n: int) -> str:
    return NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else str(n)


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


def _colour_ref(objects: list[SceneObject], o: SceneObject) -> str | None:
    """'red ball' when no other ball is red (format captions always name the colour)."""
    same = [x for x in objects if x.kind == o.kind]
    return f"{o.colour} {o.kind}" if sum(x.colour == o.colour for x in same) == 1 else None


def _relations(objects: list[SceneObject], k: int, rng: random.Random) -> list[str]:
    return relation_sentences(objects, k, rng, _colour_ref)


def ssc(scene: Scene, objects: list[SceneObject], rng: random.Random) -> str:
    """One sentence on the main subject: the (up to two) largest objects and the setting."""
    if scene.layout == "sign":
        return f"A white sign that says {scene.word} in a {scene.theme}."
    if scene.layout == "chart":
        return f"A bar chart with {_number(len(scene.bars))} coloured bars."
    main = sorted(objects, key=lambda o: (o.size != "large", o.cell))[:2]
    body = join_phrases([object_phrase(o, False, True, False) for o in main])
    return rng.choice([f"{_cap(body)} in a {scene.theme}.", f"A photo of {body} in a {scene.theme}."])


def dsc(scene: Scene, objects: list[SceneObject], rng: random.Random) -> str:
    """A few sentences: the setting, every object with its attributes, one relation, the background."""
    if scene.layout != "objects":
        return _other_layout(scene, dense=False)
    n = len(objects)
    parts = [
        f"A photograph of a {scene.theme} with {_number(n)} {'object' if n == 1 else 'objects'}.",
        f"It shows {join_phrases([object_phrase(o, True, True, True) for o in objects])}.",
        *_relations(objects, 1, rng),
        f"The background is plain {BACKGROUNDS[scene.theme]}.",
    ]
    return " ".join(parts)


def dsc_plus(scene: Scene, objects: list[SceneObject], rng: random.Random) -> str:
    """Everything a dense caption can say: each object in its own sentences, relations, counts, the
    empty regions of the grid and the setting."""
    if scene.layout != "objects":
        return _other_layout(scene, dense=True)
    n = len(objects)
    parts = [f"A wide view of a {scene.theme} with {_number(n)} {'object' if n == 1 else 'objects'}."]
    for o in objects:
        parts.append(f"There is {object_phrase(o, True, True, True)}.")
        extent = "fills most of its part of the picture" if o.size == "large" else "takes up a small area"
        parts.append(f"The {o.kind} is drawn as {SHAPES[o.kind]} in solid {o.colour} and {extent}.")
    counts = Counter(o.kind for o in objects)
    repeated = [f"{_number(c)} {encyclopedia.plural(k)}" for k, c in sorted(counts.items()) if c > 1]
    if repeated:
        parts.append(f"There are {join_phrases(repeated)}.")
    parts += _relations(objects, 3, rng)
    empty = [p for p in POSITIONS if p not in {o.position for o in objects}]
    if empty:
        parts.append(f"The {join_phrases(empty)} of the picture {'is' if len(empty) == 1 else 'are'} empty.")
    parts.append(
        f"The background is a flat {BACKGROUNDS[scene.theme]} colour with no texture, as in a {scene.theme}."
    )
    return " ".join(parts)


def _other_layout(scene: Scene, dense: bool) -> str:
    if scene.layout == "sign":
        text = f"A photograph of a white sign that says {scene.word} in a {scene.theme}."
        more = " The sign is a white rectangle with a dark border across the middle of the picture."
        return text + (more + f" The word {scene.word} is written in black letters." if dense else more)
    top = max(v for _, v in scene.bars)
    winners = [c for c, v in scene.bars if v == top]
    parts = [f"A photograph of {chart_phrase(scene)}."]
    parts += [f"The {winners[0]} bar is the tallest."] if len(winners) == 1 else []
    if dense:
        parts.append(
            "The bars stand on a dark baseline at the bottom of the picture, with no labels or axes."
        )
    return " ".join(parts)


def _fused(alt: str) -> list[str]:
    """What AFC keeps of an AltText: its names, places, dates and encyclopedia facts; object mentions
    are left to the image (the paper's fusion removes the AltText's unneeded or wrong details)."""
    names = [m for m in alttext.ENTITY.findall(alt) if not alt[: alt.find(m)].rstrip().endswith("by")]
    people = [m for m in alttext.ENTITY.findall(alt) if m not in names]
    years = alttext.YEAR.findall(alt)
    out = []
    if names:
        out.append(
            f"The picture is associated with {join_phrases(names)}" + (f" in {years[0]}." if years else ".")
        )
    elif years:
        out.append(f"The picture dates from {years[0]}.")
    if people:
        out.append(f"It was taken by {join_phrases(people)}.")
    for sentence in alt.split(". "):
        s = sentence.strip().rstrip(".")
        if any(c.kind == "fact" for c in claims.read(s + ".")):
            out.append(s + ".")
    return out


def capsfusion(synthetic: str, origin: str) -> str:
    """Seed 003 G.3 as the world's captioner does it: the synthetic caption; then the web caption as
    a sentence of its own where it says something of the image the synthetic caption does not (an
    object, one of its colour, size or place, the setting); then the web caption's names, dates and
    facts fused in as AFC fuses them."""
    said = claims.read(synthetic)

    def covered(c: claims.Claim) -> bool:
        if c.kind == "object":
            return any(
                d.kind == "object"
                and d.args[0] == c.args[0]
                and all(x is None or x == y for x, y in zip(c.args[1:], d.args[1:], strict=True))
                for d in said
            )
        return c.kind != "theme" or any(d.kind == "theme" and d.args == c.args for d in said)

    adds = not all(covered(c) for c in claims.read(origin))
    sentence = origin.strip().rstrip(".")
    sentence = [sentence[:1].upper() + sentence[1:] + "."] if adds and sentence else []
    return " ".join([synthetic.strip(), *sentence, *_fused(origin)])


def write(fmt: str, scene: Scene, alt: str, error: float, rng: random.Random) -> str:
    """Caption `scene` in format `fmt` (one of FORMATS); `alt` is the image's AltText (AFC reads it)."""
    objects = [o for o, _ in reported(scene, error, rng)] if scene.layout == "objects" else []
    if fmt == "ssc":
        return ssc(scene, objects, rng)
    if fmt == "dsc":
        return dsc(scene, objects, rng)
    if fmt == "dsc_plus":
        return dsc_plus(scene, objects, rng)
    if fmt == "afc":
        return " ".join([dsc(scene, objects, rng), *_fused(alt)])
    raise ValueError(f"unknown caption format {fmt!r}; known: {FORMATS}")
