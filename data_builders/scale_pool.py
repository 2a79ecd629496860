"""The world's instruction-tuning pool for SCALE (seed 004), with planted defects and recorded truth.

Each sample is one image and one Q/A turn, as an instruction-tuning pool holds them, tagged with its
true task in seed 004's taxonomy (Table 6) and with the defect planted in it, if any:

  blur, noise, dark     the image degraded at a recorded severity (mild ones are still answerable)
  mismatch              the image of another scene: the text does not describe the picture
  incomplete            the question loses its object ("What colour is the ?"): ambiguous
  wrong_answer          the answer replaced by another value of the same question type

so each SCALE stage can be scored against the truth (quality scores by rank correlation with the
severity, task prediction by accuracy, selection by how many planted defects it discards).
`metadata["scene"]` is the scene the image shows (what an MLLM sees); `metadata["text_scene"]` the
one the Q/A is about.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from mmkd.schema import Sample, Turn
from mmkd.world import language
from mmkd.world.render import render
from mmkd.world.scene import COLOURS, KINDS, POSITIONS, SIZES, THEMES, WorldConfig, sample_scene, scene_rng
from mmkd.world.tasks import TASK_OF_QTYPE

# Share of the pool given each defect (the rest is clean), and the severities drawn for each.
DEFECTS: dict[str, float] = {
    "blur": 0.08,
    "noise": 0.08,
    "dark": 0.06,
    "mismatch": 0.08,
    "incomplete": 0.06,
    "wrong_answer": 0.08,
}
SEVERITY = {"blur": (0.6, 1.2, 2.4), "noise": (8.0, 16.0, 32.0), "dark": (0.5, 0.3, 0.15)}
# Wrong answers: another value of the question's type.
_VALUES: dict[str, list[str]] = {
    "theme": sorted(THEMES),
    "exist": ["yes", "no"],
    "colour": sorted(COLOURS),
    "size": list(SIZES),
    "where": list(POSITIONS),
    "what_at": list(KINDS),
    "ground_name": list(KINDS),
    "relation": ["yes", "no"],
    "count": [str(n) for n in range(10)],
    "count_all": [str(n) for n in range(10)],
    "chart_value": [str(n) for n in range(1, 6)],
    "chart_max": sorted(COLOURS),
}


def degrade(image: Image.Image, kind: str, severity: float, rng: random.Random) -> Image.Image:
    if kind == "blur":
        return image.filter(ImageFilter.GaussianBlur(severity))
    if kind == "dark":
        return ImageEnhance.Brightness(image).enhance(severity)
    if kind == "noise":
        x = np.asarray(image, dtype=np.float64)
        noise = np.random.default_rng(rng.randrange(2**32)).normal(0, severity, (*x.shape[:2], 1))
        return Image.fromarray(np.clip(x + noise, 0, 255).round().astype(np.uint8))
    raise ValueError(f"unknown image defect {kind!r}")


_REFERENCE = re.compile(rf"\b(?:(?:{'|'.join(SIZES)}) )?(?:(?:{'|'.join(COLOURS)}) )?(?:{'|'.join(KINDS)})\b")
_POSITION = re.compile(rf"\b(?:{'|'.join(sorted(POSITIONS, key=len, reverse=True))})\b")


def _incomplete(qtype: str, question: str) -> str | None:
    """The question without what it asks about (the object, the place, the box), or None when it
    names nothing to lose: "Where is the red ball?" -> "Where is the ?"."""
    if qtype == "ground_name":
        cut = re.sub(r"\s*\[[^\]]*\]", "", question)
    elif qtype == "ground_box":
        cut = re.sub(r"(of the )[^.?]*", r"\1", question)
    elif qtype == "what_at":
        cut = _POSITION.sub("", question)
    else:
        cut = _REFERENCE.sub("", question)
    cut = " ".join(cut.split())
    return cut if cut != " ".join(question.split()) else None


def _generators(cfg: WorldConfig) -> list[tuple[str, Callable]]:
    ground = language.q_ground(cfg.image_size)
    return [
        *(("objects", g) for g in language.OBJECT_QUESTIONS),
        *(("chart", g) for g in language.CHART_QUESTIONS),
        ("sign", language.q_ocr),
        ("objects", ground),
    ]


def pool_sample(cfg: WorldConfig, i: int) -> Sample:
    """Sample `i` of the pool: a question type drawn uniformly, its scene, maybe a planted defect."""
    rng = scene_rng(cfg, "scale_pool-qa", i)
    layout, generator = rng.choice(_generators(cfg))
    for attempt in range(100):
        scene = sample_scene(cfg, "scale_pool", 100 * i + attempt, layout=layout)
        qa = generator(scene, rng)
        if qa is not None:
            break
    else:
        raise RuntimeError(f"no question for pool sample {i}")  # pragma: no cover (the world always has one)
    image_scene = scene
    question, answer = qa.question, qa.answer
    defect: dict = {"kind": "none"}
    u, edge = rng.random(), 0.0
    for kind, share in DEFECTS.items():
        edge += share
        if u < edge:
            defect = {"kind": kind}
            break
    kind = defect["kind"]
    if kind == "mismatch":
        image_scene = sample_scene(cfg, "scale_pool-other", i, layout=layout)
    elif kind == "incomplete":
        question = _incomplete(qa.qtype, question) or question
        defect["kind"] = "incomplete" if question != qa.question else "none"
    elif kind == "wrong_answer":
        values = [v for v in _VALUES.get(qa.qtype, []) if v != answer]
        if values:
            answer = rng.choice(values)
        else:  # free-form answers (boxes, words): an answer of another sample's kind
            defect["kind"] = "none"
    image = render(image_scene, cfg.image_size)
    if kind in SEVERITY:
        defect["severity"] = rng.choice(SEVERITY[kind])
        image = degrade(image, kind, defect["severity"], rng)
    task, subtask = TASK_OF_QTYPE[qa.qtype]
    return Sample(
        id=f"scale_pool-{i:07d}",
        kind="vqa" if layout != "sign" else "other",
        source="scale_pool",
        images=[image],
        turns=[Turn(question, answer)],
        metadata={
            "scene": image_scene.to_json(),
            "text_scene": scene.to_json(),
            "qtype": qa.qtype,
            "task": task,
            "subtask": subtask,
            "defect": defect,
            "true_answer": qa.answer,
        },
    )
