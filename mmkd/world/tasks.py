"""The world's question types in seed 004's task taxonomy (Table 6), read back from a question's text,
and the oracle's text-quality rubric: what SCALE's text-only annotators answer for world questions
(task prediction exactly, since every world question is written from one template).
"""

from __future__ import annotations

import math
import re

import numpy as np
from PIL import Image

from mmkd.world import claims as claims_lib
from mmkd.world.language import chart_phrase
from mmkd.world.render import render
from mmkd.world.scene import Scene

# Seed 004 Table 6: task -> sub-tasks.
TAXONOMY: dict[str, tuple[str, ...]] = {
    "Coarse Perception": ("Image Style", "Image Scene", "Image Topic"),
    "Fine-grained Perception (single-instance)": (
        "Object Localization",
        "Attribute Recognition",
        "Celebrity Recognition",
        "OCR",
    ),
    "Fine-grained Perception (cross-instance)": ("Attribute Comparison", "Action Recognition"),
    "Attribute Reasoning": ("Physical Property", "Function Reasoning"),
    "Relation Reasoning": ("Social Relation", "Physical Relation"),
    "Logic Reasoning": ("Structured Image-Text", "Future Prediction"),
}
# The world's question types in that taxonomy (counting has no sub-task of its own in Table 6: it
# compares instances, the nearest is Attribute Comparison).
TASK_OF_QTYPE: dict[str, tuple[str, str]] = {
    "theme": ("Coarse Perception", "Image Scene"),
    "exist": ("Coarse Perception", "Image Topic"),
    "colour": ("Fine-grained Perception (single-instance)", "Attribute Recognition"),
    "size": ("Fine-grained Perception (single-instance)", "Attribute Recognition"),
    "where": ("Fine-grained Perception (single-instance)", "Object Localization"),
    "what_at": ("Fine-grained Perception (single-instance)", "Object Localization"),
    "ground_box": ("Fine-grained Perception (single-instance)", "Object Localization"),
    "ground_name": ("Fine-grained Perception (single-instance)", "Object Localization"),
    "ocr": ("Fine-grained Perception (single-instance)", "OCR"),
    "count": ("Fine-grained Perception (cross-instance)", "Attribute Comparison"),
    "count_all": ("Fine-grained Perception (cross-instance)", "Attribute Comparison"),
    "relation": ("Relation Reasoning", "Physical Relation"),
    "chart_value": ("Logic Reasoning", "Structured Image-Text"),
    "chart_max": ("Logic Reasoning", "Structured Image-Text"),
}
assert all(sub in TAXONOMY[task] for task, sub in TASK_OF_QTYPE.values())

# A question's type from its wording, in order; the patterns need no object words, so a question that
# lost them (SCALE's planted "incomplete" defect) still reads as its type.
_PATTERNS: list[tuple[re.Pattern, str]] = [
    (re.compile(p, re.I), qtype)
    for p, qtype in (
        (r"^where was this picture taken", "theme"),
        (r"^is there an? ", "exist"),
        (r"^what colou?r is", "colour"),
        (r"^what size is", "size"),
        (r"^how many objects", "count_all"),
        (r"^how many ", "count"),
        (r"^where is", "where"),
        (r"^what is at", "what_at"),
        (r"^is the .*\b(left of|right of|above|below)\b", "relation"),
        (r"^what word is written", "ocr"),
        (r"^what is the value of", "chart_value"),
        (r"^which bar is the tallest", "chart_max"),
        (r"^give the box", "ground_box"),
        (r"^what is in the box", "ground_name"),
    )
]


_LOST = r"\b(?:the|an?) ?[?.]$|\bin the box\?$|\bthe (?:left|right|above|below)\b|\ban? in\b"


def qtype_of(question: str) -> str | None:
    """The world question type a question is written in, or None for any other question."""
    return next((qtype for pattern, qtype in _PATTERNS if pattern.search(question.strip())), None)


def incomplete(question: str) -> bool:
    """Whether a world question has lost what it asks about ("What colour is the ?")."""
    return bool(re.search(_LOST, question))


def text_quality(question: str, answer: str) -> dict[str, int]:
    """The oracle's rubric for seed 004's text criteria, read from the text alone (as a text-only
    judge reads it): completeness falls when a world question has lost what it asks about,
    informativeness grows with what the answer carries, complexity with the question's length."""
    complete = 3 if qtype_of(question) is None else 2 if incomplete(question) else 5
    short = answer.strip().lower()
    informative = 2 if short in ("yes", "no") else 4 if len(short.split()) > 1 else 3
    complexity = min(5, max(1, (len(question.split()) - 1) // 2))
    return {"informativeness": informative, "complexity": complexity, "completeness": complete}


def task_caption(scene: Scene, subtask: str) -> str:
    """What a captioner aimed at `subtask` says about a world image (seed 004 Sec. 3.2.3)."""
    if scene.layout == "sign":
        return f"A sign that says {scene.word}."
    if scene.layout == "chart":
        return f"A picture of {chart_phrase(scene)}."
    if subtask in ("Object Localization", "Physical Relation"):
        return " ".join(f"There is a {o.colour} {o.kind} at the {o.position}." for o in scene.objects)
    if subtask in ("Attribute Recognition", "Attribute Comparison"):
        return " ".join(f"There is a {o.size} {o.colour} {o.kind}." for o in scene.objects)
    kinds = sorted(scene.kinds())
    return f"A picture of a {scene.theme} with {', '.join(f'a {k}' for k in kinds)}."


def judge(question: str, answer: str, scene: Scene) -> dict[str, int]:
    """The oracle's multimodal judgement (clarity, relevance) of a Q/A against the image its captions
    describe: an answer the image contradicts is irrelevant (1), one it confirms relevant (5), one it
    cannot decide neither (3); a question that lost its object is unclear (2)."""
    verdicts = [
        v for c in claims_lib.read_qa(question, answer) if (v := claims_lib.holds(c, [scene])) is not None
    ]
    relevance = 1 if False in verdicts else 5 if verdicts else 3
    return {"clarity": 2 if incomplete(question) else 5, "relevance": relevance}


# PSNR (dB) of an image against the exact render of its scene, lowest first, for ratings 2..5.
QUALITY_BANDS = (16.0, 22.0, 28.0, 40.0)


def image_quality(scene: Scene, image: Image.Image) -> dict[str, int]:
    """The world's image-quality rating, full-reference where a served model has none: the image
    against the exact render of the scene it shows (PSNR), in five bands; the clean render rates 5."""
    reference = np.asarray(render(scene, image.size[0]).convert("RGB"), dtype=np.float64)
    seen = np.asarray(image.convert("RGB"), dtype=np.float64)
    mse = float(((reference - seen) ** 2).mean())
    psnr = math.inf if mse == 0 else 10 * math.log10(255**2 / mse)
    return {"quality": 1 + sum(psnr >= band for band in QUALITY_BANDS)}
