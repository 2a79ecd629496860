"""Non-visual facts about each object kind, and the prose that states them.

Knowledge here can only be learned from text: no image shows what a tent is made of. The knowledge
benchmark asks these facts without an image; knowledge-in-image asks them about a pictured object,
so the model must both recognise the kind and recall the fact. The encyclopedia states every fact;
the benchmarks ask one half and the instruction data the other (`benchmark_fact`).
"""

from __future__ import annotations

import random

from mmkd.world.scene import KINDS, THEMES

FACTS: dict[str, dict[str, str]] = {
    "ball": {"corners": "zero", "family": "toy", "use": "playing games", "material": "rubber"},
    "box": {"corners": "four", "family": "container", "use": "storing things", "material": "cardboard"},
    "tent": {"corners": "three", "family": "shelter", "use": "sleeping outdoors", "material": "canvas"},
    "star": {"corners": "five", "family": "sky light", "use": "guiding sailors", "material": "burning gas"},
    "kite": {"corners": "four", "family": "toy", "use": "flying in the wind", "material": "paper"},
    "ring": {"corners": "zero", "family": "jewellery", "use": "decorating a finger", "material": "gold"},
}
ATTRIBUTES = ("corners", "family", "use", "material")

# Declarative templates (training text) and question templates (benchmarks) for each attribute.
STATEMENTS: dict[str, tuple[str, ...]] = {
    "corners": ("A {kind} has {value} corners.", "Count the corners of a {kind} and you get {value}."),
    "family": ("A {kind} is a kind of {value}.", "The {kind} belongs to the {value} family."),
    "use": ("People use a {kind} for {value}.", "A {kind} is used for {value}."),
    "material": ("A {kind} is made of {value}.", "Most {plural} are made of {value}."),
}
QUESTIONS: dict[str, str] = {
    "corners": "How many corners does a {kind} have?",
    "family": "What family does a {kind} belong to?",
    "use": "What is a {kind} used for?",
    "material": "What is a {kind} made of?",
}
# A quiz sheet's wording (training text): questions in other words than the benchmarks' (QUESTIONS),
# as the web holds facts both stated and asked. A model that learned to answer these still has to
# carry a fact into the benchmark's wording, which the instruction data teaches on other facts.
QUIZ: dict[str, str] = {
    "corners": "Quiz: how many corners has a {kind}? Answer: {value}.",
    "family": "Quiz: which family is a {kind} in? Answer: {value}.",
    "use": "Quiz: what do people use a {kind} for? Answer: {value}.",
    "material": "Quiz: what material is a {kind}? Answer: {value}.",
}
IMAGE_QUESTIONS: dict[str, str] = {
    "corners": "How many corners does the object in the image have?",
    "family": "What family does the object in the image belong to?",
    "use": "What is the object in the image used for?",
    "material": "What is the object in the image made of?",
}


def benchmark_fact(kind: str, attribute: str) -> bool:
    """Whether the knowledge benchmarks ask this fact. They ask half of the 24, the instruction data
    (data_builders/world_instruct.py) asks the other half: each kind has two facts on each side and
    each attribute three kinds, so instruction tuning teaches the question format and never the
    answer to a benchmark question, and a score above chance is knowledge carried into that format
    (the held-out design of knowledge-extraction studies)."""
    return (KINDS.index(kind) + ATTRIBUTES.index(attribute)) % 2 == 1


def plural(kind: str) -> str:
    return kind + "es" if kind.endswith(("x", "s")) else kind + "s"


def options_for(attribute: str) -> list[str]:
    """All distinct values an attribute takes, sorted: the multiple-choice options."""
    return sorted({FACTS[k][attribute] for k in KINDS})


def statement(rng: random.Random, kind: str, attribute: str) -> str:
    template = rng.choice(STATEMENTS[attribute])
    return template.format(kind=kind, plural=plural(kind), value=FACTS[kind][attribute])


def quiz(rng: random.Random) -> str:
    """A quiz sheet: two to four facts about any kinds, asked and answered (QUIZ's wording)."""
    facts = rng.sample([(k, a) for k in KINDS for a in ATTRIBUTES], rng.randint(2, 4))
    return " ".join(QUIZ[a].format(kind=k, value=FACTS[k][a]) for k, a in facts)


def passage(rng: random.Random, kind: str) -> str:
    """An encyclopedia passage: every fact about `kind`, in shuffled order, plus where it is found."""
    sentences = [statement(rng, kind, a) for a in rng.sample(ATTRIBUTES, len(ATTRIBUTES))]
    homes = [t for t, (_, pool) in THEMES.items() if kind in pool]
    sentences.append(f"You often find a {kind} in a {rng.choice(homes)}.")
    return " ".join(sentences)
