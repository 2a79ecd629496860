"""Atomic assertions of a caption about its image, and their truth (seed 002 Appendix B: ANA, CapScore).

The paper has an LLM break a caption into assertions and a VQA model check each against the image.
On the world both steps are exact: `mmkd.world.claims.read` reads the caption, every object claim is
split into one assertion per attribute it states, and the scene graph decides each. Only claims
about the image count (encyclopedia facts and summaries are not things a VQA model can see). Each
assertion is written as a sentence the same reader reads back, so an annotator's list of assertions
goes through the same check.
"""

from __future__ import annotations

from mmkd.world import claims as claims_lib
from mmkd.world.claims import Claim
from mmkd.world.encyclopedia import plural
from mmkd.world.language import NUMBER_WORDS
from mmkd.world.scene import Scene

VISUAL = ("object", "absent", "count", "relation", "theme", "word", "bar", "tallest", "empty")


def _atoms(c: Claim) -> list[Claim]:
    if c.kind != "object":
        return [c]
    kind, colour, size, position = c.args
    out = [Claim("object", c.image, (kind, None, None, None))]
    out += [Claim("object", c.image, (kind, colour, None, None))] if colour else []
    out += [Claim("object", c.image, (kind, None, size, None))] if size else []
    out += [Claim("object", c.image, (kind, None, None, position))] if position else []
    return out


def _number(n: int) -> str:
    return NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else str(n)


def sentence(c: Claim) -> str:
    """An assertion as a plain sentence that `claims.read` reads back to `c`."""
    a = c.args
    if c.kind == "object":
        kind, colour, size, position = a
        words = " ".join(w for w in (size, colour, kind) if w)
        return f"There is a {words}" + (f" at the {position}." if position else ".")
    if c.kind == "absent":
        return f"There is no {a[0]}."
    if c.kind == "count":
        kind, n = a
        if kind == "object":
            return f"A picture with {_number(n)} {'object' if n == 1 else 'objects'}."
        return f"There {'is' if n == 1 else 'are'} {_number(n)} {kind if n == 1 else plural(kind)}."
    if c.kind == "relation":
        k1, c1, rel, k2, c2, holds = a
        ref = lambda k, col: f"{col} {k}" if col else k  # noqa: E731
        return f"The {ref(k1, c1)} is {'' if holds else 'not '}{rel} the {ref(k2, c2)}."
    if c.kind == "theme":
        return f"The picture shows a {a[0]}."
    if c.kind == "empty":
        return f"The {a[0]} of the picture is empty."
    if c.kind == "word":
        return f"A sign that says {a[0]}."
    if c.kind == "bar":
        return f"A {a[0]} bar of {a[1]}."
    if c.kind == "tallest":
        return f"The {a[0]} bar is the tallest."
    raise ValueError(f"claim kind {c.kind!r} is not a visual assertion")


def extract(caption: str) -> list[str]:
    """The caption's visual assertions, atomic and without repeats, as sentences."""
    atoms = (a for c in claims_lib.read(caption) if c.kind in VISUAL for a in _atoms(c))
    return list(dict.fromkeys(sentence(a) for a in atoms))


def verify(assertion: str, scene: Scene) -> bool:
    """Whether an assertion holds in the scene; one the reader cannot read, or reads as several
    claims, is not supported (a VQA model would not confirm it either)."""
    read = [c for c in claims_lib.read(assertion) if c.kind in VISUAL]
    return len(read) == 1 and claims_lib.holds(read[0], [scene]) is True
