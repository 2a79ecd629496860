"""An evaluation item: what every suite (the world benchmarks, custom suites, VLMEvalKit, lm-eval) hands
to inference (`mmkd.eval.inference`), and its JSONL form (one item per line, images as base64 PNG)."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image


@dataclass
class BenchItem:
    id: str
    ability: str
    qtype: str
    question: str  # empty for captioning: the model continues the image with a caption
    answer: str
    options: list[str] | None = None  # None: open answer (generation)
    image: Image.Image | None = None
    references: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    more_images: list[Image.Image] = field(default_factory=list)  # custom suites: images after the first
    shots: list[BenchItem] = field(default_factory=list)  # solved examples before the item (few-shot)

    def shot_images(self) -> list[Image.Image]:
        return [im for shot in self.shots for im in shot.images()]

    def images(self) -> list[Image.Image]:
        """Every image of the prompt in order: the solved examples', then the item's own."""
        return [*self.shot_images(), *([self.image] if self.image is not None else []), *self.more_images]

    def to_json(self) -> dict[str, Any]:
        d = {
            k: getattr(self, k)
            for k in ("id", "ability", "qtype", "question", "answer", "options", "references", "metadata")
        }
        if self.image is not None:
            buf = io.BytesIO()
            self.image.save(buf, format="PNG")
            d["image"] = base64.b64encode(buf.getvalue()).decode()
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BenchItem:
        d = dict(d)
        image = d.pop("image", None)
        if image is not None:
            image = Image.open(io.BytesIO(base64.b64decode(image))).convert("RGB")
        return cls(image=image, **d)


def load_benchmark(path: str | Path) -> list[BenchItem]:
    path = Path(path)
    items = []
    for i, line in enumerate(path.read_text().splitlines()):
        try:
            items.append(BenchItem.from_json(json.loads(line)))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}:{i + 1}: malformed benchmark item ({e})") from e
    return items
