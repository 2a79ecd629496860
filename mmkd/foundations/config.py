"""`foundations.*`: how the world foundation models train. Part of each foundation's content hash, so
changing a key builds a new foundation beside the old one; nothing is silently rebuilt."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RECORD = "foundation.json"  # beside a foundation's model/: what it was built from, its scores
VISUAL_TOKENIZER_STEPS = 1500  # ~4 minutes on 2 CPU cores at the default shape


def is_foundation(directory: str) -> bool:
    """Whether a checkpoint directory is a world foundation's `model/` (a run with model.init=world
    records its foundations as model.init_vision / model.init_decoder)."""
    return bool(directory) and (Path(directory).parent / RECORD).is_file()


@dataclass
class FoundationConfig:
    seed: int = 0  # one foundation per world serves every run and seed, as a download would
    # The vision tower: a SigLIP (sigmoid contrastive loss) on rendered scenes and their dense captions.
    vision_steps: int = 600
    vision_batch: int = 64
    vision_lr: float = 1e-3
    vision_text_layers: int = 2  # its text tower, used only to train the vision tower
    # The language model: a Llama on the world's text (encyclopedia, stories, theme prose).
    text_steps: int = 800
    text_batch: int = 16
    text_lr: float = 2e-3
    warmup_fraction: float = 0.1  # both: linear warmup, then cosine to zero
    # The discrete model's world visual tokenizer (mmkd/visual_tokenizer_training.py), trained once per
    # world and shape; train=smoke takes a few steps, enough to check that a config runs.
    visual_tokenizer_steps: int = VISUAL_TOKENIZER_STEPS
    eval_items: int = 300  # held-out scenes and documents each foundation is scored on

    def validate(self) -> FoundationConfig:
        positive = ("vision_steps", "vision_batch", "vision_text_layers", "text_steps", "text_batch")
        for key in (*positive, "visual_tokenizer_steps"):
            if getattr(self, key) < 1:
                raise ValueError(f"foundations.{key}={getattr(self, key)}: must be >= 1")
        for key in ("vision_lr", "text_lr"):
            if not 0 < getattr(self, key) < 1:
                raise ValueError(f"foundations.{key}={getattr(self, key)}: must be in (0, 1)")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"foundations.warmup_fraction={self.warmup_fraction}: must be in [0, 1)")
        if self.eval_items < 8:
            raise ValueError(f"foundations.eval_items={self.eval_items}: must be >= 8")
        return self
