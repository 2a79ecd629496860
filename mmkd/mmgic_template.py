"""MMGIC documents as the models read them (seed 003 F.6-F.7): the templates and the fitting loop.

A document (`Sample.metadata["mmgic"]`, written by `data_builders/mmgic.py`) holds an image's caption,
its object, attribute and relationship labels with their descriptions, and its object regions (the
sample's images after the first) with their locations and labels. Per sample and run seed:

  1. the image-first (Table 23) or text-first (Table 24) template, with probability `image_first_prob`;
  2. the descriptions kept or dropped with probability 0.5, and the regions shuffled;
  3. the fitting loop (F.7 step 4): while the sample is longer than the model's maximum, drop one
     region at a time; with none left, drop the descriptions; what still does not fit is cut at the
     end like any sample (never through an image), where the paper discards it.

A document with `"header": false` is seed 003 G.3's IC template: no title line, just "Image:" and
"Caption:" (IC samples are such documents, so both data share the cue "Image: [IMG] Caption:").
`parts` selects the recipe's view of the same data (Table 1): "c" captions, "cl" + labels, "cld" +
label descriptions, "cldr" + object regions. Pieces are text or an image index (0 = the image,
1 + i = region i); each template encodes images its own way.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from mmkd.schema import CAPTION_MARKER, IMAGE_MARKER

PARTS = ("c", "cl", "cld", "cldr")
DOCUMENT_KINDS = ("mmgic", "ic")  # with and without the title line (`document_prompt`)
HEADER = "# Detailed Analysis of Objects in the Image\n\n"
REGIONS_HEADER = "\n\n## Overview of Selected Object Regions"
DESCRIPTION_DROP = 0.5  # F.7 step 2

Piece = str | int


def _fine_grained(doc: dict[str, Any], descriptions: bool) -> list[str]:
    """The label lines: objects, attributes with their objects, relationships with their pairs."""
    lines = []
    sections = (
        ("Objects", "objects", lambda e: e["label"]),
        ("Attributes of objects", "attributes", lambda e: f"{e['label']} {', '.join(e['objects'])}"),
        (
            "Relationships between objects",
            "relations",
            lambda e: f"{e['label']} {', '.join(f'{s}-{o}' for s, o in e['pairs'])}",
        ),
    )
    for title, key, head in sections:
        entries = doc.get(key) or []
        if not entries:
            continue
        lines.append(f"{title} and their descriptions:" if descriptions else f"{title}:")
        lines += [f"- {head(e)}: {e['description']}" if descriptions else f"- {head(e)}" for e in entries]
    return lines


def _captions(doc: dict[str, Any]) -> list[str]:
    lines = [f"Caption: {doc['caption']}"]
    if doc.get("detailed_caption"):  # IC's CapsFusion caption (seed 003 G.3)
        lines.append(f"Detailed caption: {doc['detailed_caption']}")
    if doc.get("narrative"):
        lines.append(f"Localized narrative caption: {doc['narrative']}")
    return lines


def render(
    doc: dict[str, Any], image_first: bool, descriptions: bool, regions: list[int], parts: str
) -> list[Piece]:
    """The document's pieces for one template; `regions` are the region indices to place, in order."""
    labels, descriptions = "l" in parts, descriptions and "d" in parts
    fine = _fine_grained(doc, descriptions) if labels else []
    regions = regions if "r" in parts else []
    header = HEADER if doc.get("header", True) else ""
    if image_first:
        text = "\n".join([*_captions(doc), *fine])
        pieces: list[Piece] = [header + "Image: ", 0, "\n" + text]
    else:
        text = "\n".join([*fine, *_captions(doc)])
        pieces = [header + text + "\nImage: ", 0]
    if regions:
        pieces.append(REGIONS_HEADER)
    for r in regions:
        region = doc["regions"][r]
        where = "\n".join(
            [f"Location of the selected region in the image: {region['location']}", "Objects:"]
            + [f"- {label}" for label in region["labels"]]
        )
        if image_first:
            pieces += ["\n\n### Overview of a Selected Object Region\nRegion: ", 1 + r, "\n" + where]
        else:
            pieces += ["\n\n### Overview of a Selected Object Region\n" + where + "\nRegion: ", 1 + r]
    return pieces


def document_prompt(kind: str) -> str:
    """What a text-first document of `kind` reads before its image, with CAPTION_MARKER for its
    caption and IMAGE_MARKER for the image: "mmgic" (a C document: title, caption, "Image:") or "ic"
    (seed 003 G.3: no title). Rendered by the template itself, so a prompt cannot drift from the
    documents the model read."""
    if kind not in DOCUMENT_KINDS:
        raise ValueError(f"document kind {kind!r}: one of {list(DOCUMENT_KINDS)}")
    doc = {"caption": CAPTION_MARKER, "header": kind == "mmgic"}
    return "".join(p if isinstance(p, str) else IMAGE_MARKER for p in render(doc, False, False, [], "c"))


def text_to_image_prompt(eval_prompt: str, recipe_prompt: str) -> str:
    """The template a run's generation reads: eval.image_prompt, else recipe.image_prompt, a document
    kind rendered as its documents read ("" is <bos> text [IMG])."""
    p = eval_prompt or recipe_prompt
    return document_prompt(p) if p in DOCUMENT_KINDS else p


def full_text(doc: dict[str, Any], marker: str) -> str:
    """The whole document, image-first with descriptions and every region, images as `marker`: what
    a document sample's `text` shows."""
    pieces = render(doc, True, True, list(range(len(doc.get("regions") or []))), "cldr")
    return "".join(p if isinstance(p, str) else marker for p in pieces)


def draw(doc: dict[str, Any], rng: random.Random) -> tuple[bool, list[int]]:
    """F.7 step 2's draws: whether descriptions are kept, and the order the regions are tried in."""
    descriptions = rng.random() >= DESCRIPTION_DROP
    order = list(range(len(doc.get("regions") or [])))
    rng.shuffle(order)
    return descriptions, order


def fit(
    doc: dict[str, Any],
    image_first: bool,
    descriptions: bool,
    order: list[int],
    parts: str,
    length: Callable[[list[Piece]], int],
    max_len: int,
) -> list[Piece]:
    """The pieces of the first variant that fits in `max_len` (F.7 step 4): every region of `order`,
    then one fewer at a time from its end, then none and no descriptions; else that last variant."""
    order = order if "r" in parts else []
    attempts = [(descriptions, order[:k]) for k in range(len(order), -1, -1)]
    if descriptions and "d" in parts:
        attempts.append((False, []))
    for with_descriptions, regions in attempts:
        pieces = render(doc, image_first, with_descriptions, regions, parts)
        if length(pieces) <= max_len:
            return pieces
    return pieces
