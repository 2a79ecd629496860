"""Image-caption scorers that rank and filter synthesized captions (seed 003 F.4: CLIP similarity).

`build.caption_scorer=world` scores a caption by the share of what it claims about a world image that
its scene graph makes true (exact, and 0 for a caption that claims nothing); `clip:<directory>` is the
cosine similarity of a CLIP model's image and text embeddings, loaded from a local Hugging Face
directory (transformers is imported only then). The paper keeps captions scoring >= 0.25 with CLIP.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from mmkd.config import ConfigError
from mmkd.schema import Sample
from mmkd.world import claims as claims_lib
from mmkd.world.scene import Scene

Scorer = Callable[[Sample, list[str]], list[float]]


def world_score(sample: Sample, captions: list[str]) -> list[float]:
    scene = sample.metadata.get("scene")
    if scene is None:
        raise ConfigError(
            f"build.caption_scorer=world scores knowledge-world images, but sample {sample.id!r} has no "
            "scene graph; use build.caption_scorer=clip:<CLIP directory> for real images"
        )
    scenes = [Scene.from_json(scene)]
    out = []
    for caption in captions:
        verdicts = [v for c in claims_lib.read(caption) if (v := claims_lib.holds(c, scenes)) is not None]
        out.append(sum(verdicts) / len(verdicts) if verdicts else 0.0)
    return out


class ClipScorer:
    """Cosine similarity of CLIP embeddings (a local transformers CLIPModel directory)."""

    def __init__(self, directory: str):
        if not (Path(directory) / "config.json").is_file():
            raise ConfigError(
                f"build.caption_scorer=clip:{directory}: not a model directory (no config.json)"
            )
        import torch
        from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

        from mmkd.world_clip import check_version

        check_version(Path(directory))
        self.torch = torch
        self.model = CLIPModel.from_pretrained(directory).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(directory)
        self.images = CLIPImageProcessor.from_pretrained(directory)

    def __call__(self, sample: Sample, captions: list[str]) -> list[float]:
        torch = self.torch
        with torch.no_grad():
            pixels = self.images(images=[sample.images[0].convert("RGB")], return_tensors="pt")
            text = self.tokenizer(captions, padding=True, truncation=True, return_tensors="pt")
            out = self.model(**text, **pixels)  # image_embeds and text_embeds come normalised
            sims = out.text_embeds @ out.image_embeds[0]
        return [float(s) for s in sims]


@functools.lru_cache(maxsize=4)  # a CLIP model loads once per process, not once per build unit
def make_scorer(spec: str) -> Scorer:
    if spec == "world":
        return world_score
    if spec.startswith("clip:") and spec[5:]:
        return ClipScorer(spec[5:])
    raise ConfigError(f"build.caption_scorer={spec!r}: must be world or clip:<CLIP model directory>")
