"""What the world's labels mean: the label descriptions an ideal annotator writes (seed 003 F.5).

Object labels (the kinds) are described by their silhouette and by their encyclopedia facts, attribute
labels (colours, sizes) and relationship labels (grid relations) by how they look in a render. A label
the world does not know is invalid, as the paper's prompts let a model say of a noisy label. With
annotator noise, a sentence is left out with probability `omission` and a fact is swapped for another
kind's with probability `hallucination`, so descriptions can be as imperfect as a served model's.
"""

from __future__ import annotations

import random

from mmkd.world.encyclopedia import ATTRIBUTES, FACTS, STATEMENTS, plural
from mmkd.world.scene import COLOURS, KINDS, RELATIONS, SIZES, THEMES

SILHOUETTES = {
    "ball": "a filled round disc",
    "box": "a filled square",
    "tent": "a filled triangle standing on its base",
    "star": "a filled five-pointed star",
    "kite": "a filled diamond, taller than a square turned on its corner",
    "ring": "a thick circular outline with an empty centre",
}
SIZE_TEXT = {
    "small": "A small object fills about half of the width of its grid cell, leaving wide margins around it.",
    "large": "A large object fills most of its grid cell, nearly touching the cell's edges.",
}
RELATION_TEXT = {
    "left of": "the subject stands in a grid column further to the left than the object's column",
    "right of": "the subject stands in a grid column further to the right than the object's column",
    "above": "the subject stands in a grid row higher up than the object's row",
    "below": "the subject stands in a grid row lower down than the object's row",
}


def describe(label_type: str, label: str, rng: random.Random, omission: float, hallucination: float) -> str:
    """The description of `label` ("object", "attribute" or "relation"), or "Invalid. <why>"."""
    if label_type == "object" and label in KINDS:
        sentences = _object(label, rng, hallucination)
    elif label_type == "attribute" and label in COLOURS:
        sentences = [
            f"{label.capitalize()} is one of the six colours objects are painted in.",
            f"A {label} object is filled (or, for a ring, outlined) in plain {label}, with no pattern.",
            "Colour tells objects of the same kind apart.",
        ]
    elif label_type == "attribute" and label in SIZES:
        sentences = [f"{label.capitalize()} is one of the two sizes of objects.", SIZE_TEXT[label]]
    elif label_type == "relation" and label in RELATIONS:
        sentences = [
            f'The relationship "{label}" is spatial: {RELATION_TEXT[label]}.',
            "Objects stand on a three by three grid, so the relation compares grid cells, not pixels.",
        ]
    else:
        return f"Invalid. {label!r} is not an {label_type} label of this world."
    kept = [s for i, s in enumerate(sentences) if i == 0 or rng.random() >= omission]
    return " ".join(kept)


def _object(label: str, rng: random.Random, hallucination: float) -> list[str]:
    facts = []
    for attribute in ATTRIBUTES:
        source = label
        if rng.random() < hallucination:
            source = rng.choice([k for k in KINDS if FACTS[k][attribute] != FACTS[label][attribute]])
        template = rng.choice(STATEMENTS[attribute])
        facts.append(template.format(kind=label, plural=plural(label), value=FACTS[source][attribute]))
    homes = [t for t, (_, pool) in THEMES.items() if label in pool]
    return [
        f"A {label} is drawn as {SILHOUETTES[label]}.",
        *facts,
        f"{plural(label).capitalize()} are most often found in a {' or a '.join(homes)}.",
    ]
