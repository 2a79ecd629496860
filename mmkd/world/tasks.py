"""The world's question types in seed 004's task taxonomy (Table 6), read back from a question's text,
and the oracle's text-quality rubric: what SCALE's text-only annotators answer for world questions
(task prediction exactly, since every world question is written from one template).
"""

from __future__ import annotations

import re

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


def qtype_of(question: str) -> str | None:
    """The world question type a question is written in, or None for any other question."""
    return next((qtype for pattern, qtype in _PATTERNS if pattern.search(question.strip())), None)


def text_quality(question: str, answer: str) -> dict[str, int]:
    """The oracle's rubric for seed 004's text criteria, read from the text alone (as a text-only
    judge reads it): completeness falls when a world question has lost what it asks about,
    informativeness grows with what the answer carries, complexity with the question's length."""
    qtype = qtype_of(question)
    if qtype is None:
        complete = 3
    else:
        complete = (
            2
            if re.search(
                r"\b(?:the|an?) ?[?.]$|\bin the box\?$|\bthe (?:left|right|above|below)\b|\ban? in\b",
                question,
            )
            else 5
        )
    short = answer.strip().lower()
    informative = 2 if short in ("yes", "no") else 4 if len(short.split()) > 1 else 3
    complexity = min(5, max(1, (len(question.split()) - 1) // 2))
    return {"informativeness": informative, "complexity": complexity, "completeness": complete}
