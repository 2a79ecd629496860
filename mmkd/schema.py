"""The sample schema: one dataclass for every kind of training sample a recipe can mix.

Every builder writes `Sample`s and every loader reads them, so the rules of each kind live here and
nowhere else. `Sample.validate()` raises `SampleError` naming the sample and the offending field.

Kinds (see SPEC.md "Recipes"):
  caption      one image + a caption; `caption_tag` says which caption source (Caption0, Caption1, SSC...)
  vqa          one image, or none, + one or more question/answer turns (text-only instruction data:
               the world's knowledge questions, LLaVA's text-only conversations)
  text         pure text, no image
  pair         two images + one caption that describes and relates them (seed 000, Sec. 4.2.1)
  interleaved  >= 3 images placed in a text by IMAGE_MARKER (seed 000, Sec. 4.2.2)
  mmgic        an MMGIC document (seed 003 F.6): the image, then its object regions; the structured
               document in metadata["mmgic"], read by mmkd/mmgic_template.py; `text` shows it in full
  other        one image + Q/A turns for OCR / grounding / GUI data
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image

IMAGE_MARKER = "<image>"
CAPTION_MARKER = "<caption>"  # where a text-to-image prompt's text goes (eval.image_prompt)
KINDS = ("caption", "vqa", "text", "pair", "interleaved", "mmgic", "other")
# Number of images each kind takes: (min, max); None = unbounded.
_IMAGE_COUNTS: dict[str, tuple[int, int | None]] = {
    "caption": (1, 1),
    "vqa": (0, 1),
    "text": (0, 0),
    "pair": (2, 2),
    "interleaved": (3, None),
    "mmgic": (1, None),
    "other": (1, 1),
}


# The hierarchical semantic descriptor of an image (seed 000 A.1.3); the first three are required and
# align images coarsely for pairing, the others tell aligned images apart.
SEMANTIC_FIELDS = (
    "type theme",
    "domain direction",
    "semantic subcategory",
    "core objects",
    "core concepts",
    "function or role",
    "distinguishing key information",
    "low value surface information",
)


class SampleError(ValueError):
    """A sample breaks the schema; the message names the sample id and the field."""


@dataclass
class Turn:
    question: str
    answer: str


@dataclass
class Sample:
    id: str
    kind: str
    source: str
    images: list[Image.Image] = field(default_factory=list)
    text: str = ""
    turns: list[Turn] = field(default_factory=list)
    caption_tag: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def _fail(self, name: str, why: str) -> SampleError:
        return SampleError(
            f"sample {self.id!r} (kind={self.kind!r}, source={self.source!r}): field {name!r} {why}"
        )

    def validate(self) -> Sample:
        """Check the kind's rules; return self so builders can write `Sample(...).validate()`."""
        if not self.id or "." in self.id or "/" in self.id:
            raise self._fail("id", "must be non-empty and contain no '.' or '/' (it is a webdataset key)")
        if self.kind not in KINDS:
            raise self._fail("kind", f"must be one of {KINDS}")
        if not self.source:
            raise self._fail("source", "must name the source dataset")
        lo, hi = _IMAGE_COUNTS[self.kind]
        n = len(self.images)
        if n < lo or (hi is not None and n > hi):
            want = f"exactly {lo}" if lo == hi else f"at least {lo}"
            raise self._fail("images", f"has {n} image(s); kind {self.kind!r} needs {want}")
        for i, im in enumerate(self.images):
            if not isinstance(im, Image.Image):
                raise self._fail(f"images[{i}]", f"must be a PIL image, got {type(im).__name__}")
        if self.kind in ("vqa", "other"):
            if not self.turns:
                raise self._fail("turns", "must hold at least one question/answer turn")
            for i, t in enumerate(self.turns):
                if not t.question.strip() or not t.answer.strip():
                    raise self._fail(f"turns[{i}]", "needs a non-empty question and answer")
            if self.text:
                raise self._fail("text", f"must be empty for kind {self.kind!r} (Q/A lives in turns)")
        else:
            if not self.text.strip():
                raise self._fail("text", "must be non-empty")
            if self.turns:
                raise self._fail("turns", f"must be empty for kind {self.kind!r}")
        texts = [("text", self.text)] + [
            (f"turns[{i}]", t.question + t.answer) for i, t in enumerate(self.turns)
        ]
        for name, value in texts:
            if not _is_unicode(value):
                raise self._fail(
                    name, "holds a lone surrogate, not Unicode text (the source's encoding is broken)"
                )
        markers = self.text.count(IMAGE_MARKER)
        if self.kind in ("interleaved", "mmgic") and markers != n:
            raise self._fail("text", f"has {markers} {IMAGE_MARKER} markers for {n} images")
        if self.kind == "mmgic" and not isinstance(self.metadata.get("mmgic"), dict):
            raise self._fail("metadata", "needs the structured document under 'mmgic'")
        if self.kind not in ("interleaved", "mmgic") and markers:
            raise self._fail("text", f"may contain {IMAGE_MARKER} only in interleaved samples")
        if self.kind == "caption" and not self.caption_tag:
            raise self._fail("caption_tag", "must name the caption source (Caption0, Caption1, SSC, ...)")
        return self

    def to_json(self) -> dict[str, Any]:
        """Everything but the pixels (images are stored next to it, see `mmkd.shards`)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "source": self.source,
            "num_images": len(self.images),
            "text": self.text,
            "turns": [[t.question, t.answer] for t in self.turns],
            "caption_tag": self.caption_tag,
            "provenance": self.provenance,
            "metadata": self.metadata,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any], images: list[Image.Image]) -> Sample:
        return cls(
            id=d["id"],
            kind=d["kind"],
            source=d["source"],
            images=images,
            text=d.get("text", ""),
            turns=[Turn(q, a) for q, a in d.get("turns", [])],
            caption_tag=d.get("caption_tag"),
            provenance=d.get("provenance", {}),
            metadata=d.get("metadata", {}),
        )


def _is_unicode(text: str) -> bool:
    """Whether `text` is valid Unicode: JSON's "\\ud800" decodes to a lone surrogate, which no
    tokenizer or UTF-8 writer accepts."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
