"""Web AltText for world images (seed 002 Sec. 3-4, Fig. 7): short, noisy and often about what no
pixel shows.

Real AltText names places, people, venues and dates, states encyclopedia facts, mentions things the
image does not contain, and is sometimes a file name or nothing at all. The world's AltText does all
of that from a vocabulary of procedurally named entities large enough (and drawn with a heavy tail)
that AltText carries more unique entities than any synthetic caption, as the paper's Fig. 7 shows for
real data. Every random choice comes from the rng it is given.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from mmkd.world import encyclopedia
from mmkd.world.language import object_phrase
from mmkd.world.scene import KINDS, Scene

ENTITY_VOCABULARY = 20000  # distinct entities the web mentions; drawn log-uniformly (a heavy tail)
JUNK_SHARE = 0.08  # a file name or a placeholder instead of a description: the web's empty AltText
WRONG_SHARE = 0.12  # about an object the image does not show
_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
_PLACES = ("Lake", "Mount", "Port", "Cape", "Fort", "Glen")
_VENUES = ("Museum", "Market", "Fair", "Gallery", "Park", "Festival")
_JUNK = ("IMG_{n}.jpg", "DSC{n}", "untitled", "image", "photo {n}", "thumbnail")
# Proper names as the AltText writes them: a place, a venue, or a person's name after "by".
ENTITY = re.compile(
    rf"\b(?:(?:{'|'.join(_PLACES)}) [A-Z][a-z]+|[A-Z][a-z]+ (?:{'|'.join(_VENUES)})"
    r"|(?<=by )[A-Z][a-z]+ [A-Z][a-z]+)"
)
YEAR = re.compile(r"\b(?:19[89]\d|20[0-2]\d)\b")


@dataclass(frozen=True)
class AltText:
    text: str
    entities: tuple[str, ...]  # the proper names it mentions (ground truth for Fig. 7's count)


def _name(rng: random.Random) -> str:
    return (rng.choice(_SYLLABLES) + rng.choice(_SYLLABLES)).capitalize()


def entity(index: int) -> tuple[str, str]:
    """Entity `index` of the vocabulary as (type, name): the same index is always the same entity."""
    rng = random.Random(f"alttext-entity/{index}")
    kind = ("place", "venue", "person")[index % 3]
    if kind == "place":
        return kind, f"{rng.choice(_PLACES)} {_name(rng)}"
    if kind == "venue":
        return kind, f"{_name(rng)} {rng.choice(_VENUES)}"
    return kind, f"{_name(rng)} {_name(rng)}"


def _draw(rng: random.Random, want: str) -> str:
    """An entity of type `want`, log-uniform over the vocabulary: a few are everywhere, most are rare."""
    while True:
        typ, name = entity(int(ENTITY_VOCABULARY ** rng.random()) - 1)
        if typ == want:
            return name


def alt_text(scene: Scene, rng: random.Random) -> AltText:
    """One AltText for `scene`: junk, wrong, or a partial description wrapped in web context."""
    u = rng.random()
    if u < JUNK_SHARE:
        return AltText(rng.choice(_JUNK).format(n=rng.randint(1000, 99999)), ())
    year = str(rng.randint(1985, 2024))
    place, venue, person = _draw(rng, "place"), _draw(rng, "venue"), _draw(rng, "person")
    if scene.layout == "sign":
        subject = rng.choice([f"{scene.word} sign", "a sign", f"the {scene.word} sign"])
    elif scene.layout == "chart":
        subject = rng.choice(["chart", "a bar chart", "graph"])
    else:
        absent = [k for k in KINDS if k not in scene.kinds()]
        if u < JUNK_SHARE + WRONG_SHARE and absent:
            subject = f"a {rng.choice(absent)}"
        else:
            o = rng.choice(scene.objects)
            subject = object_phrase(o, False, rng.random() < 0.5, False)
    templates = [
        (f"{subject} at {place}", (place,)),
        (f"{subject} - {place}, {year}", (place,)),
        (f"{subject} by {person}", (person,)),
        (f"{place} {year}", (place,)),
        (f"{subject} for sale at {venue}", (venue,)),
        (f"{venue} {year} by {person}", (venue, person)),
        (f"{subject} in a {scene.theme} near {place}", (place,)),
    ]
    if scene.layout == "objects":
        kind = rng.choice(sorted(scene.kinds()))
        fact = encyclopedia.statement(rng, kind, rng.choice(encyclopedia.ATTRIBUTES))
        templates.append((f"{subject} at {venue}. {fact}", (venue,)))
    text, entities = rng.choice(templates)
    return AltText(text[0].upper() + text[1:] if rng.random() < 0.5 else text, entities)
