"""The world oracle: an ideal annotator for knowledge-world images, answering every builder prompt.

It answers from the scene graphs a request carries in `context["scenes"]`, as a perfect MLLM would
from the pixels, except where the paper's pipeline gives the model text only: caption-to-VQA reads
only the caption (`fields["cap"]`) and knowledge extraction only the text (`fields["text"]`), through
`mmkd.world.claims`. Its answers go through the same parsers as a served model's, so a prompt whose
answer cannot be used (e.g. fewer than 5 Q/A pairs for a bare sign) is rejected like any other.
Optional noise (`annotator.omission`, `annotator.hallucination`) makes it an imperfect captioner;
the caption formats of seed 002 carry per-claim errors at `annotator.claim_error.<format>`.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable
from typing import Any

from mmkd.annotators.base import Annotator, AnnotatorConfig, Request, Usage
from mmkd.world import assertions, caption_formats, descriptions, glossary, tasks
from mmkd.world import claims as claims_lib
from mmkd.world.encyclopedia import plural
from mmkd.world.scene import Scene

MAX_QA = 15  # seed 000 A.1.2: 5-15 pairs per caption
# Bump when what the oracle writes changes (mmkd/world/descriptions.py, claims.py): it is part of the
# annotator identity, hence of every built directory's hash, so stale annotations are never reused.
ORACLE_VERSION = 1


# Label-description prompts (seed 003 F.5) -> the field holding the label; the oracle, like the paper's
# LLM, reads only the label.
LABEL_FIELDS = {
    "label_object": "category_label",
    "label_attribute": "attribute_category_label",
    "label_relation": "relationship_category_label",
}


class WorldOracle(Annotator):
    def __init__(self, cfg: AnnotatorConfig):
        super().__init__(cfg)
        self.noise = descriptions.Noise(cfg.omission, cfg.hallucination).validate()

    def identity(self, prompts: Iterable[str] = ()) -> dict[str, Any]:
        noise = {
            "omission": self.cfg.omission,
            "hallucination": self.cfg.hallucination,
            "claim_error": dict(sorted(self.cfg.claim_error.items())),
        }
        return {**super().identity(prompts), **noise, "oracle_version": ORACLE_VERSION}

    def _answer(self, request: Request, messages: list[dict[str, Any]]) -> tuple[str, Usage]:
        rng = random.Random(f"oracle/{self.cfg.seed}/{request.prompt.id}/{request.key}")
        scenes = [Scene.from_json(s) for s in request.context.get("scenes", [])]
        name = request.prompt.name
        if name == "caption":
            text = descriptions.caption(scenes[0], self.noise, rng)
        elif name == "semantic":
            text = json.dumps(descriptions.semantic(scenes[0]))
        elif name == "pair_filter":
            ok, reason = descriptions.explainable_to_child(scenes[0], scenes[1])
            text = json.dumps({"explainable": ok, "reason": reason})
        elif name == "pair_caption":
            text = descriptions.pair_caption(scenes[0], scenes[1], self.noise, rng)
        elif name == "interleaved":
            text = descriptions.interleaved(scenes, self.noise, rng)
        elif name == "vqa_from_caption":
            text = json.dumps(vqa_from_caption(request.fields["cap"], rng))
        elif name == "knowledge":
            facts, abstract = claims_lib.knowledge(read_any(request.fields["text"]))
            text = json.dumps({"Fact": [{"fact": f, "level": "L1"} for f in facts], "Abstract": abstract})
        elif name == "caption_candidates":
            n = int(request.fields["n"])
            text = json.dumps(descriptions.caption_candidates(scenes[0], n, self.noise, rng))
        elif name == "capsfusion":
            text = caption_formats.capsfusion(request.fields["synthetic"], request.fields["origin"])
        elif name.startswith("caption_") and name[8:] in caption_formats.FORMATS:
            fmt = name[8:]
            alt = request.fields.get("alttext", "")
            text = caption_formats.write(fmt, scenes[0], alt, self.cfg.claim_error[fmt], rng)
        elif name == "caption_assertions":
            text = json.dumps(assertions.extract(request.fields["caption"]))
        elif name == "verify_assertion":
            text = "yes" if assertions.verify(request.fields["assertion"], scenes[0]) else "no"
        elif name == "scale_text_quality":
            text = json.dumps(tasks.text_quality(request.fields["question"], request.fields["answer"]))
        elif name == "scale_image_quality":
            text = json.dumps(tasks.image_quality(scenes[0], request.images[0]))
        elif name == "scale_task":
            qtype = tasks.qtype_of(request.fields["question"])
            task, subtask = tasks.TASK_OF_QTYPE.get(qtype, ("Coarse Perception", "Image Topic"))
            text = json.dumps({"task": task, "subtask": subtask})
        elif name == "scale_caption_general":
            text = descriptions.caption(scenes[0], self.noise, rng)
        elif name == "scale_caption_task":
            text = tasks.task_caption(scenes[0], request.fields["subtask"])
        elif name == "scale_multimodal":  # its captions are exact: it judges against their scene
            text = json.dumps(tasks.judge(request.fields["question"], request.fields["answer"], scenes[0]))
        elif name in LABEL_FIELDS:
            label = request.fields[LABEL_FIELDS[name]]
            kind = name.removeprefix("label_")
            text = glossary.describe(kind, label, rng, self.cfg.omission, self.cfg.hallucination)
        else:
            raise ValueError(f"the world oracle has no answer for prompt {request.prompt.id!r}")
        return text, Usage(0, 0)


def read_any(text: str) -> list[claims_lib.Claim]:
    """Claims of a text given to knowledge extraction: Q/A transcripts turn by turn, prose as prose."""
    turns = re.findall(r"^Question: (.*)\nAnswer: (.*)$", text, re.M)
    if turns:
        return [c for q, a in turns for c in claims_lib.read_qa(q, a)]
    return claims_lib.read(text)


def _question(c: claims_lib.Claim, unique_kinds: set[str]) -> list[tuple[str, str]]:
    """Detail Q/A pairs a claim supports, phrased so that the caption alone answers them."""
    a = c.args
    if c.kind == "object":
        kind, colour, size, position = a
        ref = kind if kind in unique_kinds else (f"{colour} {kind}" if colour else None)
        out = [(f"Is there a {kind} in the image?", "yes")]
        if ref is None:
            return out
        if colour and kind in unique_kinds:
            out.append((f"What colour is the {kind}?", colour))
        if size:
            out.append((f"What size is the {ref}?", size))
        if position:
            out += [(f"Where is the {ref}?", position), (f"What is at the {position}?", kind)]
        return out
    if c.kind == "absent":
        return [(f"Is there a {a[0]} in the image?", "no")]
    if c.kind == "count":
        noun = "objects" if a[0] == "object" else plural(a[0])
        return [(f"How many {noun} are there?", str(a[1]))]
    if c.kind == "relation":
        k1, c1, rel, k2, c2, holds = a
        r1, r2 = (f"{col} {k}" if col else k for k, col in ((k1, c1), (k2, c2)))
        return [(f"Is the {r1} {rel} the {r2}?", "yes" if holds else "no")]
    if c.kind == "theme":
        return [("Where was this picture taken?", a[0])]
    if c.kind == "word":
        return [("What word is written on the sign?", a[0])]
    if c.kind == "bar":
        return [(f"What is the value of the {a[0]} bar?", str(a[1]))]
    if c.kind == "tallest":
        return [("Which bar is the tallest?", a[0])]
    return []


def vqa_from_caption(caption: str, rng: random.Random) -> list[dict[str, str]]:
    """VQA1 (seed 000 A.1.2): one global question, then detail questions on distinct facts."""
    claims = [c for c in claims_lib.read(caption) if c.image == 0]
    mentions = [c.args[0] for c in claims if c.kind == "object"]
    unique = {k for k in mentions if mentions.count(k) == 1}
    details = list(dict.fromkeys(qa for c in claims for qa in _question(c, unique)))
    rng.shuffle(details)
    sentences = re.split(r"(?<=[.!?])\s+", caption.strip())
    overview = " ".join(sentences[:2])
    qas = [("What does this image show as a whole?", overview), *details[: MAX_QA - 1]]
    return [{"question": q, "answer": ans} for q, ans in qas]
